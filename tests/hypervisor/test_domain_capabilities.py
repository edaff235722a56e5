"""Host passthrough facts: the `<hostdev>` of domain capabilities, the host's `<iommu>`, host
interfaces, parsed field by field; and how a sync turns them into yes/no/unknown. No database.

The XML shapes are written by hand after libvirt's domain capabilities documentation and what a
real libvirtd 9.0 answered on a machine without IOMMU or VFIO (empty pciBackend). VFIO hardware
does not exist here, so the "yes" shapes are fed through a stand-in connection."""

import libvirt
import pytest

from networks.hypervisor import client, inventory, xml
from networks.hypervisor.types import HostInterfaceInfo, NodeDeviceInfo

DOMCAPS_WITH_VFIO = """
<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path>
  <domain>kvm</domain>
  <devices>
    <hostdev supported='yes'>
      <enum name='mode'><value>subsystem</value></enum>
      <enum name='startupPolicy'><value>default</value><value>mandatory</value></enum>
      <enum name='subsysType'><value>usb</value><value>pci</value><value>scsi</value></enum>
      <enum name='capsType'/>
      <enum name='pciBackend'><value>default</value><value>vfio</value></enum>
    </hostdev>
  </devices>
</domainCapabilities>
"""
# What libvirtd 9.0 answered here: host devices in general, but no PCI backend at all.
DOMCAPS_WITHOUT_BACKEND = DOMCAPS_WITH_VFIO.replace(
    "<enum name='pciBackend'><value>default</value><value>vfio</value></enum>", "<enum name='pciBackend'/>"
)
DOMCAPS_UNSUPPORTED = "<domainCapabilities><devices><hostdev supported='no'/></devices></domainCapabilities>"
DOMCAPS_SILENT = "<domainCapabilities><devices><disk supported='yes'/></devices></domainCapabilities>"
CAPS_IOMMU = "<capabilities><host><iommu support='{}'/></host></capabilities>"


def test_the_hostdev_capabilities_are_read_field_by_field():
    found = xml.parse_hostdev_capabilities(DOMCAPS_WITH_VFIO)
    assert found.supported is True
    assert found.modes == ("subsystem",)
    assert found.subsystem_types == ("usb", "pci", "scsi")
    assert found.pci_backends == ("default", "vfio")


def test_an_empty_pci_backend_list_and_a_refusal_are_read_as_such():
    assert xml.parse_hostdev_capabilities(DOMCAPS_WITHOUT_BACKEND).pci_backends == ()
    refused = xml.parse_hostdev_capabilities(DOMCAPS_UNSUPPORTED)
    assert refused.supported is False and refused.subsystem_types == ()
    assert xml.parse_hostdev_capabilities(DOMCAPS_SILENT).supported is None


def test_the_hosts_iommu_flag_is_read():
    assert xml.parse_host_iommu(CAPS_IOMMU.format("yes")) is True
    assert xml.parse_host_iommu(CAPS_IOMMU.format("no")) is False
    assert xml.parse_host_iommu("<capabilities><host/></capabilities>") is None


def test_a_host_interface_gives_its_addresses_and_members():
    bridge = xml.parse_host_interface(
        "<interface type='bridge' name='br0'><protocol family='ipv4'><ip address='192.0.2.5' prefix='24'/>"
        "</protocol><protocol family='ipv6'><ip address='2001:db8::5' prefix='64'/></protocol>"
        "<bridge stp='off'><interface type='ethernet' name='eno1'/><interface type='ethernet' name='eno2'/></bridge>"
        "</interface>"
    )
    assert bridge == HostInterfaceInfo(
        name="br0", type="bridge", addresses=("192.0.2.5/24", "2001:db8::5/64"), members=("eno1", "eno2")
    )
    vlan = xml.parse_host_interface(
        "<interface type='vlan' name='eno1.42'><vlan tag='42'><interface name='eno1'/></vlan></interface>"
    )
    assert vlan.members == ("eno1",) and vlan.addresses == ()


def test_a_node_devices_class_and_link_state_are_read():
    pci = "<device><name>pci_0000_03_00_0</name><capability type='pci'><class>0x010802</class></capability></device>"
    assert xml.node_device_pci_class(pci) == "0x010802"
    assert xml.node_device_pci_class("<device><capability type='pci'/></device>") == ""
    net = "<device><capability type='net'><interface>eth0</interface><link state='up'/></capability></device>"
    assert xml.node_device_link_state(net) == "up"


def _error(code: int, message: str) -> libvirt.libvirtError:
    error = libvirt.libvirtError(message)
    error.err = (code, 0, message, 2, None, None, None, 0, 0)  # what libvirt's last error carries
    return error


class StandIn:
    """Answers the two capability calls like a host would; anything else is not asked. A value
    of None answers "not supported", as the test driver does."""

    def __init__(self, domcaps: str | None, caps: str | None, kvm: bool = True):
        self.domcaps, self.caps, self.kvm = domcaps, caps, kvm
        self.asked: list[tuple] = []

    def getDomainCapabilities(self, *args):
        self.asked.append(args)
        if not self.kvm and not args:
            raise _error(libvirt.VIR_ERR_CONFIG_UNSUPPORTED, "unsupported configuration: KVM is not supported")
        return self._answer(self.domcaps)

    def getCapabilities(self):
        return self._answer(self.caps)

    def _answer(self, value):
        if value is None:
            raise _error(libvirt.VIR_ERR_NO_SUPPORT, "this function is not supported by the connection driver")
        return value


GROUPED = (NodeDeviceInfo(name="pci_0000_01_00_0", capability="pci", pci_address="0000:01:00.0", iommu_group=14),)
UNGROUPED = (NodeDeviceInfo(name="pci_0000_00_00_0", capability="pci", pci_address="0000:00:00.0"),)


def test_iommu_groups_and_a_vfio_backend_make_both_yes():
    warnings = []
    iommu, vfio, note = inventory.passthrough_facts(StandIn(DOMCAPS_WITH_VFIO, None), warnings, GROUPED)
    assert (iommu, vfio) == ("yes", "yes") and warnings == []
    assert note == (
        "IOMMU yes: the node devices list IOMMU groups. VFIO yes: libvirt offers the VFIO backend for PCI host devices."
    )


def test_a_host_without_iommu_groups_or_backend_says_no_to_both():
    # the shape a real libvirtd 9.0 gave on this machine
    iommu, vfio, note = inventory.passthrough_facts(
        StandIn(DOMCAPS_WITHOUT_BACKEND, CAPS_IOMMU.format("no")), [], UNGROUPED
    )
    assert (iommu, vfio) == ("no", "no")
    assert "libvirt reports no IOMMU on this host" in note and "intel_iommu=on" in note
    assert "libvirt offers no VFIO backend (load the vfio-pci module" in note


def test_host_capabilities_decide_the_iommu_when_no_device_has_a_group():
    assert inventory.passthrough_facts(StandIn(DOMCAPS_WITH_VFIO, CAPS_IOMMU.format("yes")), [], ())[0] == "yes"
    assert inventory.passthrough_facts(StandIn(DOMCAPS_WITH_VFIO, None), [], ())[0] == "unknown"


def test_hostdevs_refused_by_libvirt_mean_no_vfio():
    assert inventory.passthrough_facts(StandIn(DOMCAPS_UNSUPPORTED, None), [], GROUPED)[1] == "no"


def test_a_driver_without_domain_capabilities_is_unknown_with_a_warning_not_a_failure():
    warnings = []
    iommu, vfio, note = inventory.passthrough_facts(StandIn(None, None), warnings, GROUPED)
    assert (iommu, vfio) == ("yes", "unknown")
    assert "VFIO unknown: this driver cannot report its domain capabilities." in note
    assert warnings == [
        "domain capabilities (PCI passthrough): this function is not supported by the connection driver"
    ]
    assert inventory.passthrough_facts(StandIn(DOMCAPS_SILENT, None), [], GROUPED)[1] == "unknown"


def test_the_demo_host_reads_iommu_yes_and_vfio_unknown(demo_uri):
    found = inventory.read_host(client.connect(demo_uri))
    assert (found.facts.iommu_support, found.facts.vfio_support) == ("yes", "unknown")
    assert any(w.startswith("domain capabilities (PCI passthrough):") for w in found.warnings)
    assert dict(found.facts.nic_uses) == {"eth0": "with address 198.51.100.10/24"}


def test_a_host_without_kvm_is_asked_for_plain_qemus_capabilities():
    host = StandIn(DOMCAPS_WITH_VFIO, None, kvm=False)
    assert inventory.passthrough_facts(host, [], GROUPED)[1] == "yes"
    assert host.asked == [(), (None, None, None, "qemu")]


NIC_UP = NodeDeviceInfo(
    name="net_eno1", capability="net", net_interface="eno1",
    xml="<device><capability type='net'><interface>eno1</interface><link state='up'/></capability></device>",
)  # fmt: skip
NIC_DOWN = NodeDeviceInfo(
    name="net_eno2", capability="net", net_interface="eno2",
    xml="<device><capability type='net'><interface>eno2</interface><link state='down'/></capability></device>",
)  # fmt: skip


def test_nics_with_addresses_and_bridge_members_are_the_hosts():
    interfaces = (
        HostInterfaceInfo(name="br0", type="bridge", addresses=("192.0.2.5/24",), members=("eno2",)),
        HostInterfaceInfo(name="eno1", type="ethernet"),
    )
    assert dict(inventory.host_nic_uses(interfaces, (NIC_UP, NIC_DOWN))) == {
        "br0": "with address 192.0.2.5/24",
        "eno2": "member of bridge br0",
    }


@pytest.mark.parametrize("interfaces", [(), (HostInterfaceInfo(name="eno1", type="ethernet"),)])
def test_without_any_address_reported_every_nic_that_is_up_counts_as_the_hosts(interfaces):
    # libvirt's udev interface backend reports no addresses at all: kvmweb cannot tell, so it is careful
    uses = dict(inventory.host_nic_uses(interfaces, (NIC_UP, NIC_DOWN)))
    assert list(uses) == ["eno1"]
    assert uses["eno1"].startswith("with its link up (this host's libvirt reports no interface addresses")
