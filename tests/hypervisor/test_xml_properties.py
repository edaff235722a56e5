"""Property tests of the net-update fragment builders (no database, no libvirt).

Whatever strings reach a builder, the fragment is one element of the section's kind with exactly
the attributes it was given, holding the strings exactly: markup, quotes and entities in a
value stay inside that value. A string XML cannot hold (a NUL, a control character, a lone
surrogate, U+FFFE) makes the builder raise ValueError instead of producing anything; the
services refuse such values before they get here.
"""

import os
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lxml import etree

from networks.hypervisor import xml
from networks.hypervisor.types import DhcpHost, DhcpRange, DnsRecord, Portgroup

pytestmark = pytest.mark.fuzz

PROPERTY = settings(
    max_examples=int(os.environ.get("KVMWEB_FUZZ_EXAMPLES", "100")),
    deadline=None,
    database=None,
    derandomize="KVMWEB_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow],
)
XML_CHARACTERS = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")
MARKUP = ["<", ">", "&", "'", '"', "/>", "<host ip='1.2.3.4'/>", "]]>", "&amp;", "&#10;", "<!ENTITY x 'y'>", "\n"]
# Strings that XML can hold, leaning on the characters that mean something in markup.
xml_text = st.lists(
    st.one_of(st.characters(codec="utf-8").filter(lambda c: XML_CHARACTERS.fullmatch(c)), st.sampled_from(MARKUP)),
    min_size=1,
    max_size=20,
).map("".join)
# Strings that XML cannot hold.
not_xml_text = st.tuples(xml_text, st.sampled_from(["\x00", "\x01", "\x08", "\x0b", "\x1f", "\ud800", "\ufffe"])).map(
    "".join
)


def _one_element(fragment: str, tag: str) -> etree._Element:
    root = etree.fromstring(fragment, etree.XMLParser(resolve_entities=False))
    assert root.tag == tag
    return root


@PROPERTY
@given(ip=xml_text, mac=xml_text, name=xml_text)
@example(ip="1", mac="x' ip='2", name="n")
def test_a_dhcp_host_fragment_holds_exactly_its_attributes(ip, mac, name):
    root = _one_element(xml.dhcp_host_fragment(DhcpHost(ip=ip, mac=mac, name=name)), "host")
    assert dict(root.attrib) == {"ip": ip, "mac": mac, "name": name} and len(root) == 0


@PROPERTY
@given(start=xml_text, end=xml_text)
def test_a_dhcp_range_fragment_holds_exactly_start_and_end(start, end):
    root = _one_element(xml.dhcp_range_fragment(DhcpRange(start, end)), "range")
    assert dict(root.attrib) == {"start": start, "end": end} and len(root) == 0


@PROPERTY
@given(ip=xml_text, names=st.lists(xml_text, min_size=1, max_size=4))
@example(ip="1.2.3.4", names=["a</hostname><hostname>b"])
def test_a_dns_host_fragment_has_one_hostname_per_name(ip, names):
    root = _one_element(xml.dns_host_fragment(ip, tuple(names)), "host")
    assert dict(root.attrib) == {"ip": ip}
    assert [(child.tag, child.text, len(child), dict(child.attrib)) for child in root] == [
        ("hostname", name, 0, {}) for name in names
    ]


@PROPERTY
@given(name=xml_text, value=xml_text)
@example(name="fleet", value="a' name='b")
def test_a_txt_fragment_holds_exactly_name_and_value(name, value):
    root = _one_element(xml.dns_txt_fragment(DnsRecord("txt", name, value)), "txt")
    assert dict(root.attrib) == {"name": name, "value": value} and len(root) == 0


@PROPERTY
@given(
    strings=st.tuples(xml_text, xml_text, xml_text, xml_text),
    numbers=st.tuples(*[st.one_of(st.none(), st.integers(0, 65535))] * 3),
)
def test_an_srv_fragment_holds_exactly_the_record(strings, numbers):
    service, protocol, domain, target = strings
    port, priority, weight = numbers
    record = DnsRecord("srv", service, target, protocol, domain, port, priority, weight)
    root = _one_element(xml.dns_srv_fragment(record), "srv")
    given_numbers = {
        k: str(v) for k, v in (("port", port), ("priority", priority), ("weight", weight)) if v is not None
    }
    expected = {"service": service, "protocol": protocol, "domain": domain, "target": target, **given_numbers}
    assert dict(root.attrib) == expected and len(root) == 0


@PROPERTY
@given(
    name=xml_text,
    is_default=st.booleans(),
    tags=st.lists(st.integers(0, 4095), max_size=5),
    inbound=st.one_of(st.none(), st.integers(1, 2**32 - 1)),
    outbound=st.one_of(st.none(), st.integers(1, 2**32 - 1)),
)
def test_a_portgroup_fragment_has_only_its_vlan_and_bandwidth(name, is_default, tags, inbound, outbound):
    portgroup = Portgroup(name, is_default, tuple(tags), inbound, outbound)
    root = _one_element(xml.portgroup_fragment(portgroup), "portgroup")
    assert dict(root.attrib) == ({"name": name, "default": "yes"} if is_default else {"name": name})
    assert [int(tag.get("id")) for tag in root.iter("tag")] == tags
    expected_children = (["vlan"] if tags else []) + (["bandwidth"] if inbound or outbound else [])
    assert [child.tag for child in root] == expected_children
    assert len(list(root.iter())) == 1 + bool(tags) + len(tags) + bool(inbound or outbound) + bool(inbound) + bool(
        outbound
    )


@PROPERTY
@given(dev=xml_text)
def test_a_forward_interface_fragment_holds_exactly_its_dev(dev):
    root = _one_element(xml.forward_interface_fragment(dev), "interface")
    assert dict(root.attrib) == {"dev": dev} and len(root) == 0


@PROPERTY
@given(bad=not_xml_text, good=xml_text)
def test_a_string_xml_cannot_hold_makes_every_builder_raise(bad, good):
    builders = [
        lambda: xml.dhcp_host_fragment(DhcpHost(ip=good, mac=bad)),
        lambda: xml.dhcp_range_fragment(DhcpRange(good, bad)),
        lambda: xml.dns_host_fragment(good, (good, bad)),
        lambda: xml.dns_txt_fragment(DnsRecord("txt", good, bad)),
        lambda: xml.dns_srv_fragment(DnsRecord("srv", good, bad, "tcp")),
        lambda: xml.portgroup_fragment(Portgroup(bad)),
        lambda: xml.forward_interface_fragment(bad),
    ]
    for build in builders:
        with pytest.raises(ValueError):
            build()
