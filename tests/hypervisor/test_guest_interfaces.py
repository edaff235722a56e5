"""Guest interface XML built by kvmweb and parsed back field by field, and the changes the
test driver can make (a stopped guest's config, by redefinition). No database."""

import pytest

from networks.hypervisor import client, xml
from networks.hypervisor import guests as hv
from networks.hypervisor.errors import NotFound, Unsupported
from networks.hypervisor.guests import InterfaceSettings
from networks.hypervisor.types import BandwidthLimit

MAC = "52:54:00:12:34:56"
LIVE_WEB01_NIC = """
<interface type='network'>
  <mac address='52:54:00:0a:00:11'/>
  <source network='default' portid='3d4c1b2a-0000-4000-8000-000000000001' bridge='virbr0' portgroup='prod'/>
  <target dev='vnet3'/>
  <model type='virtio'/>
  <driver name='vhost' queues='2'/>
  <alias name='net0'/>
  <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
</interface>
"""
OVS_NIC = """
<interface type='bridge'>
  <mac address='52:54:00:0d:00:61'/>
  <source bridge='br0'/>
  <virtualport type='openvswitch'><parameters interfaceid='0d0d0d0d-0000-4000-8000-000000000061'/></virtualport>
  <vlan><tag id='20'/></vlan>
</interface>
"""


def _round_trip(wanted: InterfaceSettings, base: str = "") -> InterfaceSettings:
    return hv.interface_settings(xml.parse(hv.build_interface(wanted, base)))


@pytest.mark.parametrize(
    "wanted",
    [
        InterfaceSettings("network", "default", MAC, "virtio", portgroup="dev"),
        InterfaceSettings("network", "lan-bridge", MAC, "e1000e", vlan_tags=(10,)),
        InterfaceSettings("network", "sriov-pool", MAC, "virtio", vlan_tags=(10, 20, 30)),
        InterfaceSettings("bridge", "br0", MAC, "e1000", link="down"),
        InterfaceSettings("direct", "eth1", MAC, "rtl8139", mode="passthrough"),
        InterfaceSettings(
            "network", "default", MAC, "virtio", link="up",
            inbound=BandwidthLimit(1000, 2000, 512), outbound=BandwidthLimit(average=300),
        ),
    ],
)  # fmt: skip
def test_every_setting_survives_a_round_trip(wanted):
    assert _round_trip(wanted) == wanted


def test_the_xml_is_what_libvirt_documents():
    built = hv.build_interface(
        InterfaceSettings("direct", "eth1", MAC, "virtio", mode="vepa", vlan_tags=(7, 8), inbound=BandwidthLimit(100))
    )
    root = xml.parse(built)
    assert root.get("type") == "direct"
    assert dict(root.find("source").attrib) == {"dev": "eth1", "mode": "vepa"}
    assert root.find("mac").get("address") == MAC and root[0].tag == "mac"
    assert root.find("vlan").get("trunk") == "yes" and [t.get("id") for t in root.findall("vlan/tag")] == ["7", "8"]
    assert dict(root.find("bandwidth/inbound").attrib) == {"average": "100"}
    assert root.find("bandwidth/outbound") is None and root.find("link") is None


def test_a_single_vlan_is_not_a_trunk():
    root = xml.parse(hv.build_interface(InterfaceSettings("network", "lan-bridge", MAC, vlan_tags=(5,))))
    assert root.find("vlan").get("trunk") is None


def test_a_change_keeps_what_kvmweb_does_not_set_and_drops_the_old_port():
    moved = InterfaceSettings("network", "isolated", "52:54:00:0a:00:11", "virtio", link="down")
    root = xml.parse(hv.build_interface(moved, LIVE_WEB01_NIC))
    assert dict(root.find("source").attrib) == {"network": "isolated"}  # no portid, bridge or old portgroup
    assert xml.pci_address(root.find("address")) == "0000:00:03.0"
    assert root.find("target").get("dev") == "vnet3" and root.find("driver").get("queues") == "2"
    assert root.find("link").get("state") == "down"
    assert len(root.findall("source")) == 1 and len(root.findall("mac")) == 1


def test_the_port_profile_stays_with_its_bridge_only():
    on_ovs = hv.interface_settings(xml.parse(OVS_NIC))
    assert on_ovs == InterfaceSettings("bridge", "br0", "52:54:00:0d:00:61", vlan_tags=(20,))
    retagged = xml.parse(hv.build_interface(InterfaceSettings("bridge", "br0", on_ovs.mac, vlan_tags=(30,)), OVS_NIC))
    assert retagged.find("virtualport").get("type") == "openvswitch"
    moved = xml.parse(hv.build_interface(InterfaceSettings("network", "default", on_ovs.mac), OVS_NIC))
    assert moved.find("virtualport") is None and moved.find("vlan") is None


def test_a_live_interface_on_a_bridge_mode_network_belongs_to_the_network():
    live = "<interface type='bridge'><mac address='52:54:00:00:00:09'/><source network='lan' bridge='br0'/></interface>"
    assert hv.interface_settings(xml.parse(live)).source_type == "network"
    assert hv.interface_settings(xml.parse(live)).source == "lan"


def test_changed_fields_treat_an_unset_link_as_up():
    now = InterfaceSettings("network", "default", MAC, "virtio")
    assert hv.changed_fields(now, InterfaceSettings("network", "default", MAC, "virtio", link="up")) == []
    assert hv.changed_fields(now, InterfaceSettings("network", "other", MAC, "e1000", link="down")) == [
        "source", "model", "link",
    ]  # fmt: skip


def test_interfaces_are_found_added_and_replaced_in_guest_xml():
    domain = f"<domain><name>g</name><devices>{LIVE_WEB01_NIC}</devices></domain>"
    assert hv.find_interface(domain, "52:54:00:0a:00:11") is not None
    assert hv.find_interface(domain, MAC) is None
    added = hv.with_interface_added(domain, hv.build_interface(InterfaceSettings("bridge", "br0", MAC)))
    assert [hv.interface_settings(i).mac for i in xml.parse(added).findall("devices/interface")] == [
        "52:54:00:0a:00:11", MAC,
    ]  # fmt: skip
    removed = hv.with_interface_replaced(added, "52:54:00:0a:00:11", None)
    assert hv.find_interface(removed, "52:54:00:0a:00:11") is None and hv.find_interface(removed, MAC) is not None
    with pytest.raises(NotFound):
        hv.with_interface_replaced(removed, "52:54:00:0a:00:11", None)


# ---------------------------------------------------------------- on the test driver


def test_a_stopped_guest_gets_an_interface_by_redefinition(demo_uri):
    conn = client.connect(demo_uri)
    nic = hv.build_interface(InterfaceSettings("network", "default", MAC, "e1000"))
    assert hv.attach_interface(conn, "build01", nic, "config") == hv.REDEFINE
    assert hv.find_interface(hv.read_definitions(conn, "build01").config_xml, MAC) is not None
    changed = hv.build_interface(InterfaceSettings("network", "isolated", MAC, "e1000", link="down"), nic)
    assert hv.update_config(conn, "build01", changed) == hv.REDEFINE
    now = hv.interface_settings(hv.find_interface(conn.lookupByName("build01").XMLDesc(0), MAC))
    assert (now.source, now.link) == ("isolated", "down")
    assert hv.detach_interface(conn, "build01", MAC, "config") == hv.REDEFINE
    assert hv.find_interface(conn.lookupByName("build01").XMLDesc(0), MAC) is None


def test_a_running_guest_is_never_redefined_behind_its_back(demo_uri):
    conn = client.connect(demo_uri)
    before = conn.lookupByName("web01").XMLDesc(0)
    nic = hv.build_interface(InterfaceSettings("network", "default", MAC))
    for scope in ("config", "live", "both"):
        with pytest.raises(Unsupported, match="not supported by the connection driver: virDomainAttachDeviceFlags"):
            hv.attach_interface(conn, "web01", nic, scope)
    with pytest.raises(Unsupported, match="in-place update refused.*nor unplug it"):
        hv.change_live(conn, "web01", hv.build_interface(InterfaceSettings("network", "isolated", "52:54:00:0a:00:11")),
                       replug=False)  # fmt: skip
    assert conn.lookupByName("web01").XMLDesc(0) == before


def test_a_missing_guest_is_not_found(demo_uri):
    with pytest.raises(NotFound):
        hv.read_definitions(client.connect(demo_uri), "nosuch")
