"""Property tests of the net-update validators, with generated hostile values.

Two promises: whatever a user sends, a section's plan() builds XML with exactly the elements
and attributes that section intends, holding the values as checked (or refuses it); and a
refused value leaves the hypervisor's XML byte-identical, while an accepted one, once run,
adds exactly its fragment. The oracles here (what a MAC or a port may look like) are written
out independently of the code under test.
"""

import ipaddress
import os
import re

import pytest
from django.core.exceptions import ValidationError
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from lxml import etree

from networks.choices import AuditSource
from networks.hypervisor import client, xml
from networks.hypervisor import networks as hv_networks
from networks.models import Network, Operation
from networks.services.netupdate import SECTIONS, network_request_update
from networks.services.netupdate.common import mac_address, number
from networks.services.operations import operation_run
from tests.conftest import DEMO_URI

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("KVMWEB_FUZZ_EXAMPLES", "60"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize="KVMWEB_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# What breaks XML or dnsmasq's config, or reads as something else: markup, entities, quotes,
# control characters, a lone surrogate, non-characters, Unicode line breaks and digits.
NASTY = ["\x00", "\n", "\r", "\t", "\x0b", "\x1f", "\x7f", "\x85", "\ud800", "\ufffe", "\u2028", "\u200b", "<", ">",
         "&", "'", '"', "/>", "<x/>", "]]>", "&amp;", "&#10;", "%", "١", "５", " ", ",", ":", ".", "-"]  # fmt: skip
nasty_text = st.lists(st.one_of(st.characters(), st.sampled_from(NASTY)), max_size=30).map("".join)
plausible_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
plausible_name = st.lists(plausible_label, min_size=1, max_size=3).map(".".join)
maybe_nasty = st.one_of(plausible_name, nasty_text, st.tuples(plausible_name, nasty_text).map("".join))


def mostly(valid, hostile=nasty_text):
    """Valid values most of the time, so that the accepted branch of each property runs too."""
    return st.one_of(valid, valid, valid, hostile)


# The elements and attributes each section's fragment may have: (tag, attributes, allowed children).
INTENDED = {
    "ip-dhcp-host": ("host", {"mac", "ip", "name", "id"}, set()),
    "ip-dhcp-range": ("range", {"start", "end"}, set()),
    "dns-host": ("host", {"ip"}, {"hostname"}),
    "dns-txt": ("txt", {"name", "value"}, set()),
    "dns-srv": ("srv", {"service", "protocol", "domain", "target", "port", "priority", "weight"}, set()),
    "portgroup": ("portgroup", {"name", "default"}, {"vlan", "tag", "bandwidth", "inbound", "outbound"}),
    "forward-interface": ("interface", {"dev"}, set()),
}
XML_CHAR = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


@pytest.fixture(scope="module")
def demo_networks():
    """The demo fleet's networks as the test driver gives them (no database needed)."""
    client.disconnect(DEMO_URI)
    conn = client.connect(DEMO_URI)
    infos = {
        name: xml.parse_network(hv_networks.get_network(conn, name).live_xml)
        for name in ("default", "dualstack", "sriov-pool", "routed")
    }
    client.disconnect(DEMO_URI)
    return infos


def _plan_or_refusal(section, values, info):
    try:
        plan = SECTIONS[section].plan("add-last", values, info)
    except ValidationError as error:
        event("refused")
        assert all(len(m) < 300 for msgs in error.message_dict.values() for m in msgs)
        return None
    event("accepted")
    return plan


def _assert_shape(section, fragment: str):
    """The fragment is well-formed XML of the section's element, with nothing added."""
    tag, attributes, children = INTENDED[section]
    root = etree.fromstring(fragment)
    assert root.tag == tag
    assert set(root.attrib) <= attributes
    assert {e.tag for e in root.iterdescendants()} <= children
    for element in root.iter():
        text = "" if len(element) else element.text or ""  # a parent's text is the builder's indentation
        for value in [*element.attrib.values(), text]:
            assert value.isprintable() and XML_CHAR.fullmatch(value), repr(value)
    return root


@PROPERTY
@given(name=maybe_nasty, value=maybe_nasty)
@example(name="fleet2", value="a\ndhcp-script=/bin/sh")
@example(name="x'/><host ip='1.2.3.4", value="v")
@example(name="ok", value="\ud800")
def test_a_txt_record_holds_exactly_the_name_and_value_given(demo_networks, name, value):
    plan = _plan_or_refusal("dns-txt", {"name": name, "value": value}, demo_networks["default"])
    if plan is not None:
        root = _assert_shape("dns-txt", plan.fragment)
        assert (root.get("name"), root.get("value")) == (name.strip(" \t"), value.strip(" \t"))


@PROPERTY
@given(
    service=mostly(plausible_label, maybe_nasty),
    protocol=mostly(st.sampled_from(["tcp", "udp", "TCP"])),
    target=mostly(plausible_name, maybe_nasty),
    domain=st.one_of(st.just(""), maybe_nasty),
    port=mostly(
        st.integers(1, 65535), st.one_of(st.integers(-5, 70000), nasty_text, st.sampled_from(["١٢", "+5", "5_0"]))
    ),
)
def test_an_srv_record_has_only_srv_attributes(demo_networks, service, protocol, target, domain, port):
    values = {"service": service, "protocol": protocol, "target": target, "domain": domain, "port": port}
    plan = _plan_or_refusal("dns-srv", values, demo_networks["default"])
    if plan is not None:
        root = _assert_shape("dns-srv", plan.fragment)
        assert root.get("target", "") == target.strip(" \t") and root.get("service") == service.strip(" \t")
        assert root.get("port") is None or re.fullmatch(r"[0-9]+", root.get("port"))


@PROPERTY
@given(ip=st.one_of(st.ip_addresses(v=4, network="192.168.122.0/24").map(str), nasty_text), names=maybe_nasty)
@example(ip="192.168.122.77", names="a b c")
@example(ip="192.168.122.77", names="a<hostname>b</hostname>")
def test_a_dns_host_has_one_hostname_element_per_name(demo_networks, ip, names):
    plan = _plan_or_refusal("dns-host", {"ip": ip, "hostnames": names}, demo_networks["default"])
    if plan is not None:
        root = _assert_shape("dns-host", plan.fragment)
        given_names = names.replace(",", " ").split()
        assert [h.text for h in root] == [n.lower() for n in given_names]
        assert root.get("ip") == ip.strip(" \t")


six_octets = st.binary(min_size=6, max_size=6)
mac_text = st.one_of(
    st.tuples(six_octets, st.sampled_from([":", "-"]), st.booleans()).map(
        lambda t: t[1].join(f"{b:02x}" for b in t[0]).upper() if t[2] else t[1].join(f"{b:02x}" for b in t[0])
    ),
    six_octets.map(lambda b: ".".join(b.hex()[i : i + 4] for i in (0, 4, 8))),
    nasty_text,
    st.sampled_from(["0", "+1", "1", "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "525400aabbcc", "52:54:00-aa:bb:cc"]),
)


def _mac_oracle(raw: str) -> str | None:
    """libvirt's form of `raw` if it is six octets of a unicast, non-zero MAC, else None."""
    raw = raw.strip(" \t")
    if re.fullmatch(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}", raw):
        digits = re.sub(r"[:-]", "", raw).lower()
    elif re.fullmatch(r"[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}", raw):
        digits = raw.replace(".", "").lower()
    else:
        return None
    if int(digits, 16) == 0 or int(digits[:2], 16) & 1:
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


@PROPERTY
@given(raw=mac_text)
def test_a_mac_is_taken_exactly_when_it_is_six_unicast_octets(raw):
    try:
        taken = mac_address({"mac": raw})
    except ValidationError:
        taken = None
    assert taken == _mac_oracle(raw)


@PROPERTY
@given(raw=st.one_of(st.integers(-10, 10**12), nasty_text, st.from_regex(r"[ \t]?[0-9]{1,12}[ \t]?", fullmatch=True)))
@example(raw="١٢")
@example(raw="+5")
@example(raw="5_000")
@example(raw=True)
def test_a_number_is_taken_exactly_when_it_is_ascii_digits_in_range(raw):
    try:
        taken = number({"port": raw}, "port", low=1, high=65535)
    except ValidationError:
        taken = "refused"
    if isinstance(raw, bool) or (isinstance(raw, str) and not re.fullmatch(r"[ \t]*[0-9]{1,10}[ \t]*", raw)):
        expected = None if isinstance(raw, str) and raw.strip(" \t") == "" else "refused"
    else:
        value = int(raw)
        expected = value if 1 <= value <= 65535 else "refused"
    assert taken == expected


@PROPERTY
@given(
    mac=mostly(mac_text.filter(_mac_oracle), mac_text),
    ip=mostly(st.ip_addresses(v=4, network="192.168.122.0/24").map(str)),
    name=mostly(plausible_label, maybe_nasty),
)
@example(mac="52:54:00:00:00:77", ip="192.168.122.77", name="x' ip='192.168.122.78")
def test_a_reservation_has_only_host_attributes(demo_networks, mac, ip, name):
    plan = _plan_or_refusal("ip-dhcp-host", {"mac": mac, "ip": ip, "name": name}, demo_networks["default"])
    if plan is not None:
        root = _assert_shape("ip-dhcp-host", plan.fragment)
        assert root.get("mac") == _mac_oracle(mac)
        assert ipaddress.ip_address(root.get("ip")) == ipaddress.ip_address(ip.strip(" \t"))


@PROPERTY
@given(
    ip=st.one_of(st.ip_addresses(v=6, network="fd00:30::/64").map(str), nasty_text),
    suffix=st.sampled_from(["", "%eth0", "%1", "%25eth0"]),
    host_id=st.one_of(st.just(""), st.from_regex(r"0:[0-9a-f]:0:1(:[0-9a-f]{1,2}){3}", fullmatch=True), nasty_text),
    name=maybe_nasty,
)
def test_an_ipv6_reservation_never_takes_a_zone(demo_networks, ip, suffix, host_id, name):
    values = {"ip": ip + suffix, "host_id": host_id, "name": name}
    plan = _plan_or_refusal("ip-dhcp-host", values, demo_networks["dualstack"])
    if plan is not None:
        assert suffix == ""
        root = _assert_shape("ip-dhcp-host", plan.fragment)
        assert "%" not in root.get("ip")


@PROPERTY
@given(
    name=mostly(plausible_label, maybe_nasty),
    is_default=mostly(st.sampled_from(["yes", "no", "", "on", "1", True, False])),
    vlan_tags=mostly(st.one_of(st.just(""), st.lists(st.integers(0, 5000).map(str), max_size=4).map(" ".join))),
    inbound=mostly(st.one_of(st.just(""), st.integers(-1, 2**33).map(str))),
)
def test_a_portgroup_has_only_portgroup_elements(demo_networks, name, is_default, vlan_tags, inbound):
    values = {"name": name, "is_default": is_default, "vlan_tags": vlan_tags, "inbound_average": inbound}
    plan = _plan_or_refusal("portgroup", values, demo_networks["sriov-pool"])
    if plan is not None:
        root = _assert_shape("portgroup", plan.fragment)
        assert root.get("name") == name.strip(" \t")
        assert [int(t.get("id")) for t in root.iter("tag")] == [int(t) for t in vlan_tags.split()]


@PROPERTY
@given(dev=maybe_nasty)
@example(dev="eth9'/><interface dev='eth0")
def test_a_forward_interface_has_only_its_dev(demo_networks, dev):
    plan = _plan_or_refusal("forward-interface", {"dev": dev}, demo_networks["routed"])
    if plan is not None:
        root = _assert_shape("forward-interface", plan.fragment)
        assert root.get("dev") == dev.strip(" \t")


# An entry each section takes on the demo network named, to spoil one field at a time.
VALID_ENTRIES = {
    "ip-dhcp-host": ("default", {"mac": "52:54:00:00:77:01", "ip": "192.168.122.77", "name": "a", "host_id": ""}),
    "ip-dhcp-range": ("dualstack", {"start": "10.30.0.200", "end": "10.30.0.210"}),
    "dns-host": ("default", {"ip": "192.168.122.77", "hostnames": "a b"}),
    "dns-txt": ("default", {"name": "a", "value": "b"}),
    "dns-srv": ("default", {"service": "ldap", "protocol": "tcp", "domain": "demo.lan", "target": "a", "port": "389",
                            "priority": "1", "weight": "2"}),
    "portgroup": ("sriov-pool", {"name": "c", "is_default": "no", "vlan_tags": "7", "inbound_average": "1",
                                 "outbound_average": "2"}),
    "forward-interface": ("routed", {"dev": "eth7"}),
}  # fmt: skip


@pytest.mark.parametrize("section", sorted(SECTIONS))
@pytest.mark.parametrize("value", [["x"], {"a": "b"}, 1.5, []])
def test_a_value_that_is_not_text_or_a_whole_number_is_refused(demo_networks, section, value):
    """Never written into the XML as "['x']": a page or the worker may hand plan() anything JSON holds."""
    network, entry = VALID_ENTRIES[section]
    SECTIONS[section].plan("add-last", entry, demo_networks[network])  # the entry itself is fine
    for field in SECTIONS[section].fields:
        if field == "host_id":
            continue  # an IPv4 reservation refuses any host_id
        with pytest.raises(ValidationError) as refused:
            SECTIONS[section].plan("add-last", {**entry, field: value}, demo_networks[network])
        assert field in refused.value.message_dict


# ---------------------------------------------------------------- through the request service, on the test driver


def _live_xml(name: str) -> str:
    return client.connect(DEMO_URI).networkLookupByName(name).XMLDesc(0)


def _elements(network_xml: str) -> list[str]:
    return [etree.tostring(e, method="c14n").decode() for e in etree.fromstring(network_xml).iter("txt", "host", "srv")]


@pytest.fixture
def default_network(demo_host):
    return Network.objects.get(host=demo_host, name="default")


@PROPERTY
@given(section_values=st.one_of(
    st.tuples(st.just("dns-txt"), st.fixed_dictionaries({"name": maybe_nasty, "value": maybe_nasty})),
    st.tuples(st.just("dns-srv"), st.fixed_dictionaries({"service": mostly(plausible_label, maybe_nasty),
        "protocol": st.just("tcp"), "target": mostly(plausible_name, maybe_nasty), "port": mostly(st.integers(1, 9))})),
    st.tuples(st.just("ip-dhcp-host"), st.fixed_dictionaries({"mac": mostly(mac_text.filter(_mac_oracle), mac_text),
        "ip": mostly(st.ip_addresses(v=4, network="192.168.122.0/24").map(str)), "name": maybe_nasty})),
))  # fmt: skip
def test_a_refused_value_leaves_the_hypervisor_as_it_was_and_an_accepted_one_adds_only_itself(
    default_network, admin, section_values
):
    section, values = section_values
    before = _live_xml("default")
    operations = Operation.objects.count()
    try:
        operation = network_request_update(
            network=default_network, section=section, command="add-last", values=values, actor=admin,
            source=AuditSource.API,
        )  # fmt: skip
    except ValidationError:
        event(f"{section} refused")
        assert Operation.objects.count() == operations
        assert _live_xml("default") == before
        return
    event(f"{section} accepted")
    finished = operation_run(operation.pk)
    assume(finished.status == "succeeded")  # the driver's own refusals (a duplicate name) are not the point
    added = [e for e in _elements(_live_xml("default")) if e not in _elements(before)]
    assert len(added) == 1 and len(_elements(_live_xml("default"))) == len(_elements(before)) + 1
    default_network.refresh_from_db()
