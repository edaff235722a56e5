"""The whole-document rules of a user's network XML: dnsmasq options, namespaces, DOCTYPEs and
entities, sizes, and every entry through the same checks as the section forms."""

import time

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError
from lxml import etree

from kvmweb.settings import env_option_names
from networks.choices import AuditSource
from networks.models import Network, Operation
from networks.services.create import network_create_plan
from networks.services.netupdate import network_update_preview
from networks.services.operations import OperationRejected
from networks.services.restart import network_request_restart
from networks.services.xmlcheck import network_xml_warnings
from networks.services.xmledit import network_request_xml_change, network_xml_preview

DNSMASQ = "http://libvirt.org/schemas/network/dnsmasq/1.0"


@pytest.fixture
def default(demo_host):
    return Network.objects.get(host=demo_host, name="default")


@pytest.fixture
def dualstack(demo_host):
    return Network.objects.get(host=demo_host, name="dualstack")


def _with_options(network_xml: str, *values: str, prefix: str = "dnsmasq", namespace: str = DNSMASQ) -> str:
    """The network XML with <prefix:options> holding one <prefix:option value=…/> per value."""
    root = etree.fromstring(network_xml.encode())
    new_root = etree.Element(root.tag, root.attrib, nsmap={prefix: namespace})
    new_root.extend(list(root))
    options = etree.SubElement(new_root, f"{{{namespace}}}options")
    for value in values:
        etree.SubElement(options, f"{{{namespace}}}option", value=value)
    return etree.tostring(new_root, encoding="unicode")


def _edited(network_xml: str, change) -> str:
    root = etree.fromstring(network_xml.encode())
    change(root)
    return etree.tostring(root, encoding="unicode")


def _refused(network, new_xml: str) -> str:
    with pytest.raises(OperationRejected) as refused:
        network_xml_preview(network=network, new_xml=new_xml)
    return str(refused.value)


# ---------------------------------------------------------------- dnsmasq options


FILE_AND_PROGRAM_OPTIONS = [
    "dhcp-script=/tmp/evil.sh",
    "dhcp-luascript=/tmp/evil.lua",
    "conf-file=/etc/shadow",
    "conf-dir=/tmp",
    "conf-script=/tmp/evil.sh",
    "addn-hosts=/etc/shadow",
    "hostsdir=/tmp",
    "dhcp-hostsfile=/tmp/hosts",
    "dhcp-hostsdir=/tmp",
    "dhcp-optsfile=/tmp/opts",
    "dhcp-optsdir=/tmp",
    "dhcp-leasefile=/etc/passwd",
    "servers-file=/tmp/servers",
    "resolv-file=/tmp/resolv",
    "log-facility=/etc/cron.d/evil",
    "pid-file=/etc/passwd",
    "tftp-root=/",
    "enable-tftp",
    "dumpfile=/tmp/dump",
    "read-ethers",
    "user=root",
    "group=root",
    "dhcp-scriptuser=root",
    "dnssec-timestamp=/etc/passwd",
]


@pytest.mark.parametrize("value", FILE_AND_PROGRAM_OPTIONS)
def test_options_that_run_programs_or_name_files_are_refused_even_when_allowed(default, settings, value):
    name = value.split("=")[0]
    settings.KVMWEB_DNSMASQ_OPTIONS_ALLOWED = [name, "log-queries"]
    message = _refused(default, _with_options(default.inactive_xml, value))
    assert f"'{name}' runs a program or names a file" in message


@pytest.mark.parametrize(
    "value",
    ["--dhcp-script=/tmp/x", "DHCP-Script=/tmp/x", "  dhcp-script = /tmp/x", "-- dhcp-script=/tmp/x"],
)
def test_the_option_name_is_read_as_dnsmasq_reads_it(default, settings, value):
    settings.KVMWEB_DNSMASQ_OPTIONS_ALLOWED = ["dhcp-script"]
    assert "'dhcp-script' runs a program" in _refused(default, _with_options(default.inactive_xml, value))


def test_an_option_the_deployer_did_not_allow_is_refused(default):
    message = _refused(default, _with_options(default.inactive_xml, "log-queries"))
    assert message == "The dnsmasq option 'log-queries' is not allowed (KVMWEB_DNSMASQ_OPTIONS_ALLOWED: none)."


def test_the_setting_lists_option_names(monkeypatch):
    monkeypatch.setenv("KVMWEB_DNSMASQ_OPTIONS_ALLOWED", " log-queries, --Cache-Size ")
    assert env_option_names("KVMWEB_DNSMASQ_OPTIONS_ALLOWED") == ["log-queries", "cache-size"]
    monkeypatch.setenv("KVMWEB_DNSMASQ_OPTIONS_ALLOWED", "log-queries,cache-size=5")
    with pytest.raises(ImproperlyConfigured, match="cache-size=5"):
        env_option_names("KVMWEB_DNSMASQ_OPTIONS_ALLOWED")
    monkeypatch.delenv("KVMWEB_DNSMASQ_OPTIONS_ALLOWED")
    assert env_option_names("KVMWEB_DNSMASQ_OPTIONS_ALLOWED") == []


def test_an_allowed_option_is_accepted(default, settings):
    settings.KVMWEB_DNSMASQ_OPTIONS_ALLOWED = ["log-queries", "cache-size"]
    analysis = network_xml_preview(network=default, new_xml=_with_options(default.inactive_xml, "cache-size=500"))
    assert "cache-size=500" in analysis.diff and not analysis.live_possible


def test_one_bad_option_among_allowed_ones_is_refused(default, settings):
    settings.KVMWEB_DNSMASQ_OPTIONS_ALLOWED = ["log-queries"]
    new_xml = _with_options(default.inactive_xml, "log-queries", "dhcp-script=/tmp/x")
    assert "'dhcp-script' runs a program" in _refused(default, new_xml)


def test_a_line_break_in_an_allowed_option_cannot_smuggle_another_line(default, settings):
    settings.KVMWEB_DNSMASQ_OPTIONS_ALLOWED = ["log-queries"]
    message = _refused(default, _with_options(default.inactive_xml, "log-queries\ndhcp-script=/tmp/x"))
    assert message.startswith("A <dnsmasq:option> needs a one-line value: Control characters, line breaks")


@pytest.mark.parametrize("prefix", ["x", "network"])
def test_any_prefix_bound_to_the_dnsmasq_namespace_is_checked(default, prefix):
    # libvirt finds the options by namespace URI, not by the prefix the XML uses.
    new_xml = _with_options(default.inactive_xml, "dhcp-script=/tmp/x", prefix=prefix)
    assert "'dhcp-script' runs a program" in _refused(default, new_xml)


def test_the_dnsmasq_namespace_as_default_namespace_is_checked_too(default):
    options = f"<options xmlns='{DNSMASQ}'><option value='dhcp-script=/tmp/x'/></options>"
    new_xml = default.inactive_xml.replace("</network>", options + "</network>")
    assert "'dhcp-script' runs a program" in _refused(default, new_xml)


@pytest.mark.parametrize(
    "inside",
    [
        "<dnsmasq:options><dnsmasq:option/></dnsmasq:options>",
        "<dnsmasq:options><dnsmasq:option value=''/></dnsmasq:options>",
    ],
)
def test_an_option_without_a_value_is_refused(default, inside):
    new_xml = default.inactive_xml.replace("<network", f"<network xmlns:dnsmasq='{DNSMASQ}'", 1)
    message = _refused(default, new_xml.replace("</network>", inside + "</network>"))
    assert message.startswith("A <dnsmasq:option> needs a one-line value")


@pytest.mark.parametrize(
    "inside",
    [
        "<dnsmasq:other/>",
        "<dnsmasq:options><dnsmasq:options/></dnsmasq:options>",
        "<dnsmasq:option value='log-queries'/>",
        "<dnsmasq:options><dnsmasq:option value='log-queries' name='x'/></dnsmasq:options>",
        "<dns><dnsmasq:options><dnsmasq:option value='log-queries'/></dnsmasq:options></dns>",
    ],
)
def test_other_elements_of_the_dnsmasq_namespace_are_refused(default, settings, inside):
    settings.KVMWEB_DNSMASQ_OPTIONS_ALLOWED = ["log-queries"]
    new_xml = default.inactive_xml.replace("<network", f"<network xmlns:dnsmasq='{DNSMASQ}'", 1)
    new_xml = new_xml.replace("</network>", inside + "</network>")
    assert "In the dnsmasq namespace only <dnsmasq:options>" in _refused(default, new_xml)


def test_a_foreign_namespace_outside_metadata_is_refused(default):
    new_xml = default.inactive_xml.replace("</network>", "<x:thing xmlns:x='urn:example'/></network>")
    assert "namespace 'urn:example' are not accepted outside <metadata>" in _refused(default, new_xml)
    new_xml = default.inactive_xml.replace("<bridge ", "<bridge xmlns:x='urn:example' x:extra='1' ")
    assert "has an attribute in a namespace" in _refused(default, new_xml)


def test_metadata_is_free_form(default):
    metadata = "<metadata><app:owner xmlns:app='urn:example'>team\nnetops</app:owner></metadata>"
    analysis = network_xml_preview(
        network=default, new_xml=default.inactive_xml.replace("</network>", metadata + "</network>")
    )
    assert "team" in analysis.diff


def test_the_restart_service_checks_new_xml_itself(default, admin):
    with pytest.raises(OperationRejected, match="'dhcp-script' runs a program"):
        network_request_restart(
            network=default, actor=admin, source=AuditSource.API,
            new_xml=_with_options(default.inactive_xml, "dhcp-script=/tmp/x"),
        )  # fmt: skip
    assert not Operation.objects.filter(kind="network.restart").exists()


def test_a_synced_network_with_options_gets_warnings(default):
    warnings = network_xml_warnings(_with_options(default.inactive_xml, "dhcp-script=/tmp/x", "log-queries"))
    assert len(warnings) == 2
    assert "'dhcp-script' runs a program" in warnings[0] and "'log-queries' is not allowed" in warnings[1]
    assert network_xml_warnings(default.inactive_xml, "", "<broken") == ()


# ---------------------------------------------------------------- DOCTYPE, entities, sizes


@pytest.mark.parametrize(
    ("prologue", "inside", "says"),
    [
        (  # an external entity that would read a file of the kvmweb host (a 500 before)
            "<!DOCTYPE network [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>",
            "<metadata><a:x xmlns:a='urn:a'>&x;</a:x></metadata>",
            "XML with a DOCTYPE (or entity declarations) is not accepted.",
        ),
        (  # "billion laughs": entities that expand to gigabytes
            "<!DOCTYPE network [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
            "<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;'>]>",
            "<title>&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;</title>",
            "XML with a DOCTYPE (or entity declarations) is not accepted.",
        ),
        ("<!DOCTYPE network SYSTEM 'http://example.invalid/network.dtd'>", "", "DOCTYPE"),
        (
            "<?xml-stylesheet href='file:///etc/passwd'?>",
            "",
            "XML with processing instructions (<?…?>) is not accepted.",
        ),
    ],
)
def test_doctypes_entities_and_processing_instructions_are_refused(default, prologue, inside, says):
    new_xml = prologue + default.inactive_xml.replace("</network>", inside + "</network>")
    assert says in _refused(default, new_xml)


def test_a_processing_instruction_inside_the_network_is_refused(default):
    new_xml = default.inactive_xml.replace("<bridge ", "<?php system('id'); ?><bridge ")
    assert "processing instructions" in _refused(default, new_xml)


def test_a_document_over_one_mebibyte_is_refused(default):
    filler = "<!--" + "x" * (1024 * 1024) + "-->"
    assert "at most 1,048,576 characters" in _refused(
        default, default.inactive_xml.replace("</network>", filler + "</network>")
    )


def test_a_huge_name_is_refused_quickly_with_a_short_message(default):
    new_xml = default.inactive_xml.replace("<name>default</name>", f"<name>{'n' * 900_000}</name>")
    started = time.monotonic()
    message = _refused(default, new_xml)
    assert time.monotonic() - started < 2
    assert "must keep the name 'default'" in message and len(message) < 200


def test_too_many_elements_are_refused(default):
    comments = "<hostname>a</hostname>" * 20_001
    new_xml = default.inactive_xml.replace("<dns>", f"<dns><host ip='192.168.122.9'>{comments}</host>")
    assert "more than 20,000 elements" in _refused(default, new_xml)


# ---------------------------------------------------------------- entries, with the forms' checks


def _add_host(**attrs):
    def change(root):
        etree.SubElement(root.find("ip/dhcp"), "host", attrs)

    return change


def test_a_bad_reservation_gets_the_message_of_the_reservation_form(default):
    values = {"mac": "01:00:5e:00:00:01", "ip": "192.168.122.44", "name": "multi"}
    with pytest.raises(ValidationError) as form_error:
        network_update_preview(network=default, section="ip-dhcp-host", command="add-last", values=values)
    form_message = form_error.value.message_dict["mac"][0]
    assert form_message == "01:00:5e:00:00:01 is a multicast MAC address; a NIC needs a unicast one."
    message = _refused(default, _edited(default.inactive_xml, _add_host(**values)))
    assert message.endswith(f"mac: {form_message}")


@pytest.mark.parametrize(
    ("attrs", "says"),
    [
        ({"mac": "52:54:00:0a:00:11", "ip": "192.168.122.45"}, "52:54:00:0a:00:11 is already reserved on default"),
        ({"mac": "52:54:00:44:00:09", "ip": "10.99.0.5"}, "10.99.0.5 is outside every subnet of default"),
        ({"mac": "52:54:00:44:00:09", "ip": "192.168.122.255"}, "broadcast address"),
        ({"mac": "52:54:00:44:00:09", "ip": "192.168.122.1"}, "gateway"),
        ({"mac": "5254.00ab.cdef.00", "ip": "192.168.122.46"}, "is not a MAC address"),
        ({"mac": "52:54:00:44:00:09", "ip": "192.168.122.46", "name": "bad_name"}, "not a valid host name"),
        ({"mac": "52:54:00:44:00:09", "ip": "fe80::1%eth0"}, "zone"),
        ({"mac": "52:54:00:44:00:09", "ip": "192.168.122.46", "owner": "x"}, "unknown attribute 'owner'"),
    ],
)
def test_each_bad_reservation_is_refused(default, attrs, says):
    assert says in _refused(default, _edited(default.inactive_xml, _add_host(**attrs)))


def test_two_new_reservations_are_checked_against_each_other(default):
    def change(root):
        _add_host(mac="52:54:00:44:00:01", ip="192.168.122.44")(root)
        _add_host(mac="52:54:00:44:00:02", ip="192.168.122.44")(root)

    assert "192.168.122.44 is already reserved on default" in _refused(default, _edited(default.inactive_xml, change))


def test_the_same_new_reservation_written_twice_is_refused(default):
    def change(root):
        _add_host(mac="52:54:00:44:00:01", ip="192.168.122.44")(root)
        _add_host(mac="52:54:00:44:00:01", ip="192.168.122.44")(root)

    assert "is already reserved" in _refused(default, _edited(default.inactive_xml, change))


def test_a_reservation_under_the_wrong_ip_is_refused(dualstack):
    def change(root):
        etree.SubElement(root.findall("ip")[1].find("dhcp"), "host", mac="52:54:00:0b:00:99", ip="10.30.0.99")

    assert "belongs to another <ip>" in _refused(dualstack, _edited(dualstack.inactive_xml, change))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            lambda r: r.find("ip/dhcp").append(etree.Element("range", start="192.168.122.1", end="192.168.122.9")),
            "gateway",
        ),
        (lambda r: r.find("dns").append(etree.Element("txt", name="evil", value="a\nb")), "line breaks"),
        (lambda r: r.find("dns").append(etree.Element("txt", name="fleet", value="again")), "already has a TXT record"),
        (lambda r: r.find("dns").append(etree.Element("srv", service="ldap", protocol="sctp")), "tcp or udp"),
        (lambda r: _dns_host(r, "a,b"), "not a valid host name"),
        (lambda r: _dns_host(r, "x y"), "not a valid host name"),
        (lambda r: r.append(etree.Element("portgroup", name="bad name")), "A portgroup name"),
        (lambda r: r.find("forward").set("dev", "eth0;reboot"), "not a network interface name"),
        (lambda r: r.find("bridge").set("name", "br-with-a-very-long-name"), "not a bridge name"),
        (lambda r: r.find("domain").set("name", "demo.lan\nconf-file=/etc/x"), "line breaks"),
        (lambda r: r.find("domain").set("name", "demo lan"), "not a valid host name"),
        (lambda r: etree.SubElement(r, "mtu", size="big"), "whole number"),
        (lambda r: r.find("ip").set("netmask", "255.0.255.0"), "not an IPv4 netmask"),
        (lambda r: etree.SubElement(r.find("ip"), "tftp", root="/"), "<tftp>"),
        (lambda r: r.find("bridge").set("zone", "trusted\u200b"), "invisible characters"),
    ],
)
def test_every_section_and_part_is_checked(default, change, says):
    assert says in _refused(default, _edited(default.inactive_xml, change))


def _dns_host(root, hostname):
    host = etree.SubElement(root.find("dns"), "host", ip="192.168.122.77")
    etree.SubElement(host, "hostname").text = hostname


def test_a_prefix_that_is_not_a_number_is_a_clear_refusal(dualstack):
    new_xml = _edited(dualstack.inactive_xml, lambda r: r.find("ip").set("prefix", "twenty"))
    assert "<ip prefix>: Enter a whole number" in _refused(dualstack, new_xml)


def test_existing_entries_that_are_kept_are_not_checked_again(default, admin):
    # The demo's portgroups carry VLAN tags the portgroup form would refuse on a NAT network:
    # an edit that keeps them as they are and adds a reservation is accepted.
    new_xml = _edited(default.inactive_xml, _add_host(mac="52:54:00:44:00:01", ip="192.168.122.44", name="ok"))
    operation = network_request_xml_change(network=default, new_xml=new_xml, apply="live", actor=admin, source="api")
    assert operation.params["xml"] == new_xml


def test_a_copy_of_an_existing_reservation_is_refused(default):
    # The copy is new (the host has the entry once): it is checked, and collides with the original.
    def change(root):
        root.find("ip/dhcp").append(etree.fromstring(etree.tostring(root.find("ip/dhcp/host"))))

    assert "is already reserved on default" in _refused(default, _edited(default.inactive_xml, change))


# ---------------------------------------------------------------- the create form, same rules


@pytest.mark.parametrize(
    ("values", "field", "says"),
    [
        ({"forward_dev": "eth0;reboot"}, "forward_dev", "is not a network interface name"),
        ({"forward_dev": "../../etc"}, "forward_dev", "is not a network interface name"),
        ({"name": "n" * 1_000_000}, "name", "At most 1024 characters."),
        ({"bridge": "br0\nx"}, "bridge", "line breaks"),
    ],
)
def test_the_create_form_checks_names_like_the_xml_editor(demo_host, values, field, says):
    started = time.monotonic()
    with pytest.raises(ValidationError) as refused:
        network_create_plan(host=demo_host, values={"name": "newnet", "ipv4": "10.60.0.1/24", **values})
    assert time.monotonic() - started < 2
    assert says in " ".join(refused.value.message_dict[field])


def test_a_mirror_xml_kvmweb_cannot_read_is_a_clear_refusal(demo_host):
    isolated = Network.objects.get(host=demo_host, name="isolated")
    new_xml = isolated.inactive_xml
    unreadable = "<!DOCTYPE network><network><name>isolated</name></network>"
    Network.objects.filter(pk=isolated.pk).update(inactive_xml=unreadable, live_xml=unreadable)
    isolated.refresh_from_db()
    assert "The network's current XML cannot be read" in _refused(isolated, new_xml)
