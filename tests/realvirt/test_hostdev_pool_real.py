"""A VF pool whose PF is not SR-IOV, created through kvmweb on a real libvirtd: libvirt defines
it but cannot start it, and kvmweb reports libvirt's reason in a FAILED operation, keeping the
definition (inactive) in the host and in the mirror.

This machine has no SR-IOV hardware (no PCI_IOV, no VFIO), so the "PF" is a veth the test
creates in the daemon's private network namespace. kvmweb refuses a pool on anything the last
sync did not see as an SR-IOV PF of the host, so the test records the veth in kvmweb's mirror
as one (a PCI device with a VF maximum and its net device), which is exactly the state of a
real host whose PF lost its VFs after the last sync (sriov_numvfs reset by a reboot): kvmweb
lets the request through and libvirt has the last word. Only the start's failure is real here;
a start that succeeds (libvirt listing real VFs) is not exercised.
"""

import pytest

from networks.choices import AuditSource, OperationStatus
from networks.models import AuditEvent, Network, NodeDevice
from networks.services import create
from networks.services.operations import operation_run

from .kvmweb_setup import registered_host

pytestmark = pytest.mark.realvirt

PF = "kvpf1"


@pytest.fixture
def veth_pf(private_libvirtd):
    """A veth named like a PF inside the daemon's namespace; removed afterwards."""
    private_libvirtd.exec_in_ns(["ip", "link", "add", PF, "type", "veth", "peer", "name", f"{PF}p"])
    try:
        yield PF
    finally:
        private_libvirtd.run_in_netns(["ip", "link", "del", PF])


def _record_as_sriov_pf(host, name: str) -> None:
    """What a sync of a host with this PF would have mirrored: its PCI device (SR-IOV capable,
    8 VFs at most, none enabled) and its net device under it."""
    NodeDevice.objects.create(host=host, name="pci_0000_7f_00_0", capability="pci", pci_address="0000:7f:00.0",
                              vf_max=8, vf_addresses=[], product="test stand-in for an SR-IOV PF")  # fmt: skip
    NodeDevice.objects.create(host=host, name=f"net_{name}", parent="pci_0000_7f_00_0", capability="net",
                              net_interface=name)  # fmt: skip


def test_a_pool_on_a_pf_without_vfs_defines_but_fails_to_start_with_libvirts_reason(
    db, private_libvirtd, private_conn, veth_pf
):
    with registered_host(private_libvirtd, "kvm-pool", "pool-admin") as (host, admin):
        _record_as_sriov_pf(host, veth_pf)
        operation = create.network_request_create(
            host=host, actor=admin, source=AuditSource.API, name="kvpool", mode="hostdev", pf=veth_pf, start=True
        )
        finished = operation_run(operation.pk)

        assert finished.status == OperationStatus.FAILED
        assert f"No usable Vf's present on SRIOV PF {veth_pf}" in finished.error
        failed = AuditEvent.objects.get(operation=finished, action="network.create.failed")
        assert f"No usable Vf's present on SRIOV PF {veth_pf}" in failed.detail

        # The host keeps the definition, inactive: enabling VFs and starting it is all that is left.
        network = private_conn.networkLookupByName("kvpool")
        assert (network.isActive(), network.isPersistent()) == (0, 1)
        assert f"<pf dev='{veth_pf}'/>" in network.XMLDesc(0)

        mirrored = Network.objects.get(host=host, name="kvpool")
        assert (mirrored.active, mirrored.forward_mode) == (False, "hostdev")
        assert list(mirrored.forward_interfaces.values_list("kind", "dev")) == [("pf", veth_pf)]
