"""The parsed values of XML whose elements repeat or come in an unusual order: each value is
the one XPath's `string(child/@attribute)` gives (the first element that carries it), and an
interface's or guest's parts are found wherever they sit among their siblings. No database,
no libvirt."""

from networks.hypervisor import xml
from networks.hypervisor.types import BandwidthLimit

REPEATED = """
<domain><name>g</name><uuid>u-1</uuid><devices>
  <channel type='unix'><target type='xen' name='org.qemu.guest_agent.0' state='connected'/></channel>
  <interface type='network'>
    <address type='drive' controller='0' bus='0' unit='0'/>
    <mac/>
    <mac address='52:54:00:AA:00:02'/>
    <source network='lan' portgroup='eng'/>
    <source network='other'/>
    <model/>
    <model type='e1000'/>
    <vlan><tag id='10'/></vlan>
    <vlan><tag id='20'/><tag id='30'/></vlan>
    <bandwidth><outbound average='5'/></bandwidth>
    <bandwidth><inbound average='7'/><outbound average='9'/></bandwidth>
    <link/>
    <link state='down'/>
    <address type='pci' domain='0x0000' bus='0x00' slot='0x0a' function='0x0'/>
  </interface>
  <hostdev mode='subsystem' type='usb'><source><address bus='1' device='2'/></source></hostdev>
  <hostdev mode='subsystem' type='pci'>
    <source><address domain='0x0000' bus='0x05' slot='0x00' function='0x3'/></source>
  </hostdev>
  <channel type='unix'><target type='virtio' name='other.channel'/></channel>
  <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' state='disconnected'/></channel>
</devices></domain>
"""


def test_repeated_children_give_the_first_that_carries_the_value():
    guest = xml.parse_domain(REPEATED, "running")
    (iface,) = guest.interfaces
    assert (iface.mac, iface.model, iface.link_state) == ("52:54:00:aa:00:02", "e1000", "down")
    assert (iface.source, iface.network, iface.portgroup) == ("lan", "lan", "eng")
    assert iface.vlan_tags == (10, 20, 30)
    assert iface.inbound == BandwidthLimit(average=7)
    assert iface.outbound == BandwidthLimit(average=5)
    assert iface.pci_address == "0000:00:0a.0"  # the pci <address>, not the first one


def test_only_pci_hostdevs_and_the_virtio_agent_channel_count():
    guest = xml.parse_domain(REPEATED, "running")
    assert guest.hostdev_addresses == ("0000:05:00.3",)
    assert guest.agent_channel == "disconnected"  # the xen-typed channel of the same name is not it
    assert xml.agent_channel_state(xml.parse(REPEATED)) == "disconnected"


def test_a_pool_vf_is_found_in_whichever_source_holds_it():
    iface = xml.parse_interface(
        xml.parse(
            "<interface type='hostdev' managed='yes'><mac address='52:54:00:00:00:09'/>"
            "<source network='vfpool'/>"
            "<source><address type='pci' domain='0x0000' bus='0x03' slot='0x10' function='0x2'/></source>"
            "</interface>"
        )
    )
    assert (iface.source, iface.network) == ("0000:03:10.2", "vfpool")


def test_an_interface_with_none_of_the_optional_parts_reads_empty():
    iface = xml.parse_interface(xml.parse("<interface type='user'/>"))
    assert (iface.mac, iface.source, iface.model, iface.target_dev, iface.link_state) == ("", "", "", "", "")
    assert (iface.vlan_tags, iface.inbound, iface.outbound, iface.pci_address) == ((), None, None, "")


def test_attribute_reads_the_first_element_that_has_it():
    root = xml.parse("<network><virtualport/><virtualport type='openvswitch'/></network>")
    assert xml.attribute(root, "virtualport", "type") == "openvswitch"
    assert xml.attribute(root, "virtualport", "missing") == ""
    assert xml.attribute(root, "nothing/here", "type") == ""
    assert xml.parse_network(xml.to_string(root)).virtualport_type == "openvswitch"
