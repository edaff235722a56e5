"""Parsing and building XML. No database, no libvirt."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from networks.hypervisor import xml
from networks.hypervisor.errors import InvalidXml
from networks.hypervisor.types import DhcpHost, DhcpRange, IpConfig
from networks.services.drift import xml_differs


def test_an_isolated_network_has_no_forward_mode_and_a_bare_forward_means_nat():
    isolated = xml.parse_network("<network><name>iso</name></network>")
    bare = xml.parse_network("<network><name>n</name><forward/></network>")
    assert isolated.forward_mode == ""
    assert bare.forward_mode == "nat"


def test_a_netmask_becomes_a_prefix():
    net = xml.parse_network("<network><name>n</name><ip address='10.0.0.1' netmask='255.255.252.0'/></network>")
    assert net.ips[0].prefix == 22 and net.ips[0].family == "ipv4"


def test_macs_are_read_lowercase():
    net = xml.parse_network(
        "<network><name>n</name><ip address='10.0.0.1' prefix='24'><dhcp>"
        "<host mac='52:54:00:AA:BB:CC' ip='10.0.0.5'/></dhcp></ip></network>"
    )
    assert net.ips[0].dhcp_hosts[0].mac == "52:54:00:aa:bb:cc"


def test_built_xml_keeps_hostile_names_literal():
    hostile = "bob'/><host mac='52:54:00:00:00:09' ip='10.0.0.9"
    built = xml.build_network_xml(
        name="n",
        ips=(
            IpConfig(
                "10.0.0.1",
                24,
                "ipv4",
                (DhcpRange("10.0.0.100", "10.0.0.200"),),
                (DhcpHost("10.0.0.5", "52:54:00:00:00:01", hostile),),
            ),
        ),
    )
    hosts = etree.fromstring(built.encode()).findall("ip/dhcp/host")
    assert len(hosts) == 1
    assert hosts[0].get("name") == hostile


def test_malformed_xml_is_a_clear_error():
    with pytest.raises(InvalidXml, match="Malformed XML"):
        xml.parse("<network><name>")


def test_runtime_only_attributes_are_not_drift():
    persistent = "<network><name>n</name><forward mode='hostdev'><pf dev='eth3'/></forward></network>"
    live = (
        "<network connections='2'><name>n</name><forward mode='hostdev'><pf dev='eth3'/>"
        "<address type='pci' domain='0x0000' bus='0x02' slot='0x10' function='0x1'/></forward></network>"
    )
    assert not xml_differs(live, persistent)
    assert xml_differs(live.replace("eth3", "eth4"), persistent)


def test_the_nat_port_range_libvirt_adds_when_running_is_not_drift():
    persistent = "<network><name>n</name><forward mode='nat'/></network>"
    live = "<network><name>n</name><forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward></network>"
    assert not xml_differs(live, persistent)
    assert xml_differs(live.replace("1024", "2000"), persistent)


printable = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)


@given(name=printable, hostname=printable)
def test_any_name_survives_a_round_trip_through_built_xml(name, hostname):
    ip = IpConfig("10.0.0.1", 24, "ipv4", (), (DhcpHost("10.0.0.5", "52:54:00:00:00:01", hostname),))
    parsed = xml.parse_network(xml.build_network_xml(name=name, ips=(ip,)))
    assert parsed.name == name
    assert parsed.ips[0].dhcp_hosts == ip.dhcp_hosts


def test_a_live_interface_on_a_bridge_mode_network_still_names_its_network():
    dom = xml.parse_domain(
        "<domain><name>g</name><devices><interface type='bridge'><mac address='52:54:00:00:00:0A'/>"
        "<source network='lan' portid='x' bridge='br0'/></interface></devices></domain>",
        "running",
    )
    iface = dom.interfaces[0]
    assert (iface.type, iface.network, iface.mac) == ("bridge", "lan", "52:54:00:00:00:0a")
