"""What a sync learns about PCI passthrough from a real libvirtd on a machine without IOMMU or
VFIO (this one): both "no", with the reason, and the PCI classes the node devices carry.
Plain pytest, no Django. A host WITH an IOMMU and vfio-pci is not exercised here."""

from __future__ import annotations

import pytest

from networks.hypervisor import inventory, xml

pytestmark = pytest.mark.realvirt


def test_a_host_without_iommu_or_vfio_reads_no_for_both(private_conn):
    found = inventory.read_host(private_conn)
    assert (found.facts.iommu_support, found.facts.vfio_support) == ("no", "no")
    assert "libvirt reports no IOMMU on this host" in found.facts.passthrough_note
    assert "libvirt offers no VFIO backend" in found.facts.passthrough_note
    assert not any("capabilities" in warning for warning in found.warnings)


def test_the_real_daemons_pci_node_devices_carry_their_class(private_conn):
    pci = [d for d in inventory.read_host(private_conn).devices if d.capability == "pci"]
    assert pci, "the daemon lists this machine's PCI devices"
    assert all(xml.node_device_pci_class(d.xml).startswith("0x") for d in pci)
    assert all(d.iommu_group is None for d in pci)  # no IOMMU: no groups
