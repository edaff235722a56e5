"""The XML kvmweb builds to give a guest a PCI device, and reads back. No database, no libvirt.

Expected shapes are those of libvirt's domain format documentation (formatdomain, "Host
device assignment" and "PCI Passthrough" of "Network interfaces"), written out by hand.
"""

import pytest
from lxml import etree

from networks.hypervisor import hostdevs
from networks.hypervisor.errors import InvalidXml, NotFound
from networks.hypervisor.hostdevs import HostdevSettings


def _parsed(text: str) -> etree._Element:
    return etree.fromstring(text.encode())


def test_a_hostdev_has_the_documented_subsystem_shape():
    built = _parsed(hostdevs.build_hostdev(HostdevSettings("hostdev", "0000:41:00.0")))
    assert built.tag == "hostdev"
    assert dict(built.attrib) == {"mode": "subsystem", "type": "pci", "managed": "yes"}
    (source,) = built
    assert source.tag == "source"
    (address,) = source
    assert address.tag == "address"
    assert dict(address.attrib) == {"domain": "0x0000", "bus": "0x41", "slot": "0x00", "function": "0x0"}


def test_an_unmanaged_hostdev_says_managed_no():
    built = _parsed(hostdevs.build_hostdev(HostdevSettings("hostdev", "0000:03:00.0", managed=False)))
    assert built.get("managed") == "no"


def test_a_vf_interface_carries_mac_source_address_vlan_and_port_profile():
    settings = HostdevSettings("interface", "0000:01:10.2", mac="52:54:00:6d:90:02", vlan=42, profileid="finance")
    built = _parsed(hostdevs.build_hostdev_interface(settings))
    assert built.tag == "interface"
    assert dict(built.attrib) == {"type": "hostdev", "managed": "yes"}
    assert [child.tag for child in built] == ["mac", "source", "vlan", "virtualport"]
    assert built.find("mac").attrib == {"address": "52:54:00:6d:90:02"}
    address = built.find("source/address")
    assert dict(address.attrib) == {"type": "pci", "domain": "0x0000", "bus": "0x01", "slot": "0x10", "function": "0x2"}
    assert [dict(tag.attrib) for tag in built.findall("vlan/tag")] == [{"id": "42"}]
    assert built.find("vlan").get("trunk") is None
    assert built.find("virtualport").attrib == {"type": "802.1Qbh"}
    assert built.find("virtualport/parameters").attrib == {"profileid": "finance"}


def test_a_vf_interface_without_vlan_or_profile_has_neither_element():
    built = _parsed(
        hostdevs.build_hostdev_interface(HostdevSettings("interface", "0000:01:10.6", mac="52:54:00:0e:00:99"))
    )
    assert [child.tag for child in built] == ["mac", "source"]


def test_a_vlan_tag_zero_is_written():
    built = _parsed(
        hostdevs.build_device(HostdevSettings("interface", "0000:01:10.6", mac="52:54:00:0e:00:99", vlan=0))
    )
    assert built.find("vlan/tag").get("id") == "0"


def test_build_device_picks_the_element_by_kind():
    assert _parsed(hostdevs.build_device(HostdevSettings("hostdev", "0000:01:10.0"))).tag == "hostdev"
    interface = HostdevSettings("interface", "0000:01:10.0", mac="52:54:00:00:00:01")
    assert _parsed(hostdevs.build_device(interface)).tag == "interface"


@pytest.mark.parametrize("bad", ["01:10.2", "0000:01:20.0", "0000:01:10.8", "0000:1:10.0", "0000:01:10.2 "])
def test_an_address_that_is_not_a_full_pci_address_is_refused(bad):
    with pytest.raises(InvalidXml):
        hostdevs.address_attrs(bad)


GUEST = """
<domain type='kvm'>
  <name>gpu01</name>
  <devices>
    <interface type='network'><mac address='52:54:00:0e:00:52'/><source network='sriov-pool'/></interface>
    <interface type='hostdev' managed='yes'>
      <mac address='52:54:00:0E:00:51'/>
      <source><address type='pci' domain='0x0000' bus='0x01' slot='0x10' function='0x0'/></source>
      <vlan><tag id='42'/></vlan>
      <virtualport type='802.1Qbh'><parameters profileid='gold'/></virtualport>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </interface>
    <hostdev mode='subsystem' type='pci' managed='no'>
      <source><address domain='0x0000' bus='0x41' slot='0x00' function='0x0'/></source>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x06' function='0x0'/>
    </hostdev>
    <interface type='hostdev' managed='yes'>
      <mac address='52:54:00:0e:00:53'/>
      <source network='sriov-pool'/>
      <source><address type='pci' domain='0x0000' bus='0x01' slot='0x10' function='0x6'/></source>
    </interface>
    <hostdev mode='subsystem' type='usb'><source><vendor id='0x1234'/><product id='0xbeef'/></source></hostdev>
  </devices>
</domain>
"""


def test_a_guests_pci_devices_are_read_by_their_host_address_not_the_guest_slot():
    vf, gpu = hostdevs.assigned_devices(GUEST)
    assert (vf.kind, vf.pci_address, vf.managed, vf.mac, vf.vlan) == ("interface", "0000:01:10.0", True,
                                                                      "52:54:00:0e:00:51", 42)  # fmt: skip
    assert (vf.virtualport, vf.profileid) == ("802.1Qbh", "gold")
    assert (gpu.kind, gpu.pci_address, gpu.managed, gpu.mac, gpu.vlan) == ("hostdev", "0000:41:00.0", False, "", None)


def test_a_vf_a_pool_network_gave_the_guest_is_not_one_of_its_own_devices():
    assert hostdevs.find_device(GUEST, "0000:01:10.6") is None


def test_a_device_is_found_by_host_address():
    assert hostdevs.find_device(GUEST, "0000:41:00.0").kind == "hostdev"
    assert hostdevs.find_device(GUEST, "0000:00:06.0") is None  # the guest-side slot is not the device
    assert hostdevs.find_device("", "0000:41:00.0") is None


def test_a_device_added_then_removed_leaves_the_rest_of_the_guest():
    device = hostdevs.build_hostdev(HostdevSettings("hostdev", "0000:03:00.0"))
    added = hostdevs.with_device_added(GUEST, device)
    assert [d.pci_address for d in hostdevs.assigned_devices(added)] == ["0000:01:10.0", "0000:41:00.0", "0000:03:00.0"]
    removed = hostdevs.with_device_removed(added, "0000:01:10.0")
    assert [d.pci_address for d in hostdevs.assigned_devices(removed)] == ["0000:41:00.0", "0000:03:00.0"]
    root = _parsed(removed)
    assert root.find("devices/interface[@type='network']") is not None
    assert root.find("devices/hostdev[@type='usb']") is not None


def test_removing_a_device_the_guest_does_not_hold_is_an_error():
    with pytest.raises(NotFound):
        hostdevs.with_device_removed(GUEST, "0000:01:10.4")
