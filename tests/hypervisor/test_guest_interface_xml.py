"""Reading a guest's <interface> elements and its agent channel. No database, no libvirt.

The XML shapes are those of libvirt's domain format documentation (formatdomain, "Network
interfaces" and "Channel"), as a live or persistent domain XML carries them.
"""

from networks.hypervisor import xml
from networks.hypervisor.types import BandwidthLimit


def _interfaces(devices: str):
    return xml.parse_domain(f"<domain><name>g</name><devices>{devices}</devices></domain>", "running").interfaces


def _one(interface: str):
    (iface,) = _interfaces(interface)
    return iface


NETWORK_NIC = """
<interface type='network'>
  <mac address='52:54:00:6D:90:01'/>
  <source network='default' portgroup='engineering'/>
  <target dev='vnet7'/>
  <model type='virtio'/>
  <link state='down'/>
  <bandwidth>
    <inbound average='1000' peak='5000' floor='200' burst='1024'/>
    <outbound average='128' peak='256' burst='256'/>
  </bandwidth>
  <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>
</interface>
"""


def test_a_network_nic_is_read_field_by_field():
    iface = _one(NETWORK_NIC)
    assert iface.type == "network"
    assert iface.mac == "52:54:00:6d:90:01"
    assert (iface.source, iface.network, iface.portgroup) == ("default", "default", "engineering")
    assert iface.target_dev == "vnet7"
    assert iface.model == "virtio"
    assert iface.link_state == "down"
    assert iface.inbound == BandwidthLimit(average=1000, peak=5000, burst=1024, floor=200)
    assert iface.outbound == BandwidthLimit(average=128, peak=256, burst=256)
    assert iface.pci_address == "0000:00:07.0"
    assert iface.source_mode == "" and iface.vlan_tags == ()


def test_a_nic_without_link_bandwidth_or_address_reads_as_empty():
    iface = _one("<interface type='network'><mac address='52:54:00:00:00:01'/><source network='n'/></interface>")
    assert (iface.link_state, iface.inbound, iface.outbound, iface.pci_address) == ("", None, None, "")
    assert iface.agent_addresses == ()


def test_an_explicit_link_up_is_kept_as_up():
    assert _one("<interface type='network'><source network='n'/><link state='up'/></interface>").link_state == "up"


def test_one_direction_of_bandwidth_leaves_the_other_unset():
    iface = _one(
        "<interface type='network'><source network='n'/><bandwidth><outbound average='128'/></bandwidth></interface>"
    )
    assert iface.inbound is None
    assert iface.outbound == BandwidthLimit(average=128)


def test_bandwidth_figures_are_decimal_even_with_a_leading_zero():
    iface = _one(
        "<interface type='network'><source network='n'/><bandwidth><inbound average='010'/></bandwidth></interface>"
    )
    assert iface.inbound.average == 10


def test_a_macvtap_nic_carries_its_host_device_and_mode():
    iface = _one(
        "<interface type='direct'><mac address='52:54:00:00:00:02'/><source dev='eth0' mode='vepa'/>"
        "<model type='e1000e'/></interface>"
    )
    assert (iface.type, iface.source, iface.source_mode, iface.model) == ("direct", "eth0", "vepa", "e1000e")


def test_a_live_nic_of_a_macvtap_network_names_its_network_device_and_mode():
    iface = _one("<interface type='direct'><source network='mvtap' dev='eth1' mode='bridge'/></interface>")
    assert (iface.network, iface.source, iface.source_mode) == ("mvtap", "mvtap", "bridge")


def test_a_vhostuser_socket_mode_is_not_a_macvtap_mode():
    iface = _one(
        "<interface type='vhostuser'><mac address='52:54:00:3b:83:1a'/>"
        "<source type='unix' path='/tmp/vhost1.sock' mode='server'/><model type='virtio'/></interface>"
    )
    assert iface.source_mode == ""


def test_vlan_tags_of_a_trunk_are_read_in_order():
    iface = _one(
        "<interface type='bridge'><source bridge='ovsbr0'/><virtualport type='openvswitch'/>"
        "<vlan trunk='yes'><tag id='42'/><tag id='123' nativeMode='untagged'/></vlan></interface>"
    )
    assert (iface.source, iface.vlan_tags) == ("ovsbr0", (42, 123))


def test_a_hostdev_nic_keeps_the_host_vf_as_source_and_its_own_guest_address():
    iface = _one(
        "<interface type='hostdev' managed='yes'><driver name='vfio'/>"
        "<source><address type='pci' domain='0x0000' bus='0x02' slot='0x10' function='0x1'/></source>"
        "<mac address='52:54:00:6d:90:02'/><vlan><tag id='42'/></vlan>"
        "<address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/></interface>"
    )
    assert iface.source == "0000:02:10.1"
    assert iface.pci_address == "0000:00:05.0"
    assert iface.vlan_tags == (42,)


def test_a_non_pci_guest_address_is_no_pci_address():
    iface = _one(
        "<interface type='network'><source network='n'/>"
        "<address type='ccw' cssid='0xfe' ssid='0x0' devno='0x0001'/></interface>"
    )
    assert iface.pci_address == ""


def test_a_pci_address_on_another_bus_and_domain_is_formatted_in_full():
    iface = _one(
        "<interface type='network'><source network='n'/>"
        "<address type='pci' domain='0x0001' bus='0x1a' slot='0x1f' function='0x7'/></interface>"
    )
    assert iface.pci_address == "0001:1a:1f.7"


def test_interfaces_keep_their_order():
    macs = [
        iface.mac
        for iface in _interfaces(
            "<interface type='network'><mac address='52:54:00:00:00:0b'/><source network='n'/></interface>"
            "<interface type='bridge'><mac address='52:54:00:00:00:0a'/><source bridge='br0'/></interface>"
        )
    ]
    assert macs == ["52:54:00:00:00:0b", "52:54:00:00:00:0a"]


# ---------------------------------------------------------------- the guest agent's channel


def _agent_channel(devices: str):
    return xml.parse_domain(f"<domain><name>g</name><devices>{devices}</devices></domain>", "running").agent_channel


def test_a_connected_agent_channel_is_seen():
    channel = (
        "<channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/f16x86_64.agent'/>"
        "<target type='virtio' name='org.qemu.guest_agent.0' state='connected'/></channel>"
    )
    assert _agent_channel(channel) == "connected"


def test_an_agent_channel_nobody_opened_in_the_guest_is_disconnected():
    channel = (
        "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' state='disconnected'/></channel>"
    )
    assert _agent_channel(channel) == "disconnected"


def test_an_agent_channel_without_state_is_there_but_unknown():
    assert _agent_channel("<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>") == ""


def test_other_channels_are_no_agent_channel():
    other = (
        "<channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>"
        "<channel type='pty'><target type='guestfwd' address='10.0.2.1' port='4600'/></channel>"
    )
    assert _agent_channel(other) is None
    assert _agent_channel("") is None
