"""Parsing and building XML. No database, no libvirt."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from networks.hypervisor import xml
from networks.hypervisor.errors import InvalidXml
from networks.hypervisor.types import DhcpHost, DhcpRange, DnsRecord, IpConfig
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


# ---------------------------------------------------------------- the parser never reads files or expands entities


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ("<!DOCTYPE n [<!ENTITY x SYSTEM 'file:///etc/hostname'>]><network><name>&x;</name></network>", "DOCTYPE"),
        ("<!DOCTYPE n [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]><network><name>&b;</name></network>", "DOCTYPE"),
        ("<!DOCTYPE network SYSTEM 'file:///etc/passwd'><network/>", "DOCTYPE"),
        ("<!DOCTYPE network><network/>", "DOCTYPE"),
        ("<?xml-stylesheet href='x'?><network/>", "processing instructions"),
        ("<network><name>n</name><?pi data?></network>", "processing instructions"),
        ("<network/><?pi data?>", "processing instructions"),
        ("<network><name>&undeclared;</name></network>", "Malformed XML"),
        ("<network><name>\ud800</name></network>", "not Unicode text"),
    ],
)
def test_doctypes_entities_and_processing_instructions_are_refused(document, says):
    with pytest.raises(InvalidXml, match=says):
        xml.parse(document)


def test_comments_cdata_and_the_five_xml_entities_are_fine():
    root = xml.parse("<?xml version='1.0'?><!-- note --><network><name><![CDATA[a]]>&lt;&amp;</name></network>")
    assert root.findtext("name") == "a<&"


# ---------------------------------------------------------------- built XML has exactly the elements intended

any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


def _shape(fragment: str) -> list[tuple[str, dict]]:
    """Every element of the fragment with its attributes, in document order."""
    return [(e.tag, dict(e.attrib)) for e in etree.fromstring(fragment.encode()).iter()]


def _built_or_refused(build):
    """lxml refuses text XML cannot hold (control characters); anything else must be built."""
    try:
        return build()
    except ValueError as error:
        assert "XML compatible" in str(error) or "NULL bytes" in str(error)
        return None


@given(mac=any_text, ip=any_text, name=any_text, host_id=any_text)
def test_a_reservation_of_any_values_is_one_host_element_with_those_attributes(mac, ip, name, host_id):
    fragment = _built_or_refused(lambda: xml.dhcp_host_fragment(DhcpHost(ip, mac, name, host_id)))
    if fragment is not None:
        wanted = {"mac": mac, "id": host_id, "name": name}
        assert _shape(fragment) == [("host", {**{k: v for k, v in wanted.items() if v}, "ip": ip})]


@given(name=any_text, value=any_text)
def test_a_txt_record_of_any_values_is_one_txt_element(name, value):
    fragment = _built_or_refused(lambda: xml.dns_txt_fragment(DnsRecord("txt", name, value)))
    if fragment is not None:
        assert _shape(fragment) == [("txt", {k: v for k, v in (("name", name), ("value", value)) if v})]


@given(service=any_text, protocol=any_text, domain=any_text, target=any_text, port=st.integers(1, 65535))
def test_an_srv_record_of_any_values_is_one_srv_element(service, protocol, domain, target, port):
    record = DnsRecord("srv", service, target, protocol=protocol, domain=domain, port=port)
    fragment = _built_or_refused(lambda: xml.dns_srv_fragment(record))
    if fragment is not None:
        values = {"service": service, "protocol": protocol, "domain": domain, "target": target, "port": str(port)}
        assert _shape(fragment) == [("srv", {k: v for k, v in values.items() if v})]


@given(ip=any_text, names=st.lists(any_text, max_size=3))
def test_a_dns_host_of_any_names_has_one_hostname_element_per_name(ip, names):
    fragment = _built_or_refused(lambda: xml.dns_host_fragment(ip, tuple(names)))
    if fragment is not None:
        assert _shape(fragment) == [("host", {"ip": ip})] + [("hostname", {})] * len(names)
        assert [h.text or "" for h in etree.fromstring(fragment.encode())] == names


@given(mac=any_text, ip=any_text, name=any_text)
def test_a_network_with_a_reservation_of_any_values_has_exactly_the_intended_elements(mac, ip, name):
    config = IpConfig("10.0.0.1", 24, "ipv4", (DhcpRange("10.0.0.100", "10.0.0.200"),), (DhcpHost(ip, mac, name),))
    built = _built_or_refused(lambda: xml.build_network_xml(name="n", ips=(config,)))
    if built is not None:
        tags = [e.tag for e in etree.fromstring(built.encode()).iter()]
        assert tags == ["network", "name", "forward", "bridge", "ip", "dhcp", "range", "host"]
        host = etree.fromstring(built.encode()).find("ip/dhcp/host")
        assert dict(host.attrib) == {**{k: v for k, v in (("mac", mac), ("name", name)) if v}, "ip": ip}
