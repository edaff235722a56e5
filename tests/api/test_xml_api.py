"""PUT /api/networks/{id}/xml/ with hostile XML: a clear 400, no Operation, nothing changed."""

import pytest
from lxml import etree

from networks.hypervisor import client
from networks.models import AuditEvent, Network, Operation

DNSMASQ = "http://libvirt.org/schemas/network/dnsmasq/1.0"


@pytest.fixture
def default(demo_host):
    return Network.objects.get(host=demo_host, name="default")


@pytest.fixture
def host_xml(demo_uri):
    """The default network's XML as the host has it now (the test driver keeps one config)."""
    return lambda: client.connect(demo_uri).networkLookupByName("default").XMLDesc(0)


@pytest.fixture
def nothing_changes(default, host_xml):
    mirror_before, host_before = default.inactive_xml, host_xml()
    yield
    assert not Operation.objects.exclude(kind="host.sync").exists()
    assert not AuditEvent.objects.filter(action__startswith="network.").filter(action__endswith=".requested").exists()
    default.refresh_from_db()
    assert default.inactive_xml == mirror_before
    assert host_xml() == host_before


def _with_options(network_xml: str, *values: str) -> str:
    root = etree.fromstring(network_xml.encode())
    new_root = etree.Element(root.tag, root.attrib, nsmap={"dnsmasq": DNSMASQ})
    new_root.extend(list(root))
    options = etree.SubElement(new_root, f"{{{DNSMASQ}}}options")
    for value in values:
        etree.SubElement(options, f"{{{DNSMASQ}}}option", value=value)
    return etree.tostring(new_root, encoding="unicode")


def _put(api, network, new_xml, apply="restart"):
    return api.put(f"/api/networks/{network.pk}/xml/", {"xml": new_xml, "apply": apply}, format="json")


def _hostile(default) -> dict[str, tuple[str, str]]:
    """name → (XML, what the 400 says)."""
    xml = default.inactive_xml
    return {
        "dhcp-script": (
            _with_options(xml, "dhcp-script=/var/lib/evil.sh"),
            "The dnsmasq option 'dhcp-script' runs a program or names a file that the network's dnsmasq "
            "(running as root) would open: kvmweb never accepts it.",
        ),
        "conf-file": (_with_options(xml, "--conf-file=/etc/shadow"), "'conf-file' runs a program or names a file"),
        "not allowed": (_with_options(xml, "log-queries"), "'log-queries' is not allowed"),
        "file entity": (
            "<!DOCTYPE network [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
            + xml.replace("</network>", "<metadata><a:x xmlns:a='urn:a'>&x;</a:x></metadata></network>"),
            "XML with a DOCTYPE (or entity declarations) is not accepted.",
        ),
        "billion laughs": (
            "<!DOCTYPE network [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
            "<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'>]>"
            + xml.replace("</network>", "<title>&c;</title></network>"),
            "XML with a DOCTYPE (or entity declarations) is not accepted.",
        ),
        "processing instruction": ("<?xml-stylesheet href='x'?>" + xml, "processing instructions"),
        "multicast MAC": (
            xml.replace("<dhcp>", "<dhcp><host mac='01:00:5e:00:00:01' ip='192.168.122.44'/>"),
            "mac: 01:00:5e:00:00:01 is a multicast MAC address; a NIC needs a unicast one.",
        ),
        "TXT line break": (
            xml.replace("<dns>", "<dns><txt name='x' value='a&#10;txt-record=b'/>"),
            "line breaks",
        ),
        "foreign namespace": (
            xml.replace("</network>", "<x:y xmlns:x='urn:x'/></network>"),
            "not accepted outside <metadata>",
        ),
        "huge name": (xml.replace("<name>default</name>", f"<name>{'n' * 500_000}</name>"), "must keep the name"),
        "not XML": ("<network><name>default</name>", "Malformed XML"),
    }


HOSTILE = [
    "dhcp-script",
    "conf-file",
    "not allowed",
    "file entity",
    "billion laughs",
    "processing instruction",
    "multicast MAC",
    "TXT line break",
    "foreign namespace",
    "huge name",
    "not XML",
]


@pytest.mark.parametrize("apply", ["restart", "define", "live"])
@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_xml_is_a_clear_400_and_changes_nothing(api, default, nothing_changes, case, apply):
    new_xml, says = _hostile(default)[case]
    response = _put(api, default, new_xml, apply)
    assert response.status_code == 400
    (message,) = response.json()["xml"]
    assert says in message and len(message) < 400


def test_the_attackers_request_as_sent_is_refused(api, default, nothing_changes):
    """The reported attack: a dhcp-script option defined with apply=restart."""
    response = _put(api, default, _with_options(default.inactive_xml, "dhcp-script=/tmp/evil.sh"), "restart")
    assert response.status_code == 400 and "'dhcp-script'" in response.json()["xml"][0]


def test_a_document_over_the_size_limit_is_refused_before_parsing(api, default, nothing_changes):
    response = _put(api, default, "<network>" + " " * (1024 * 1024) + "</network>")
    assert response.status_code == 400
    assert response.json()["xml"] == ["Ensure this field has no more than 1048576 characters."]


@pytest.mark.parametrize("value", ["a\x00b", 5, ["<network/>"], {"x": 1}, None])
def test_an_xml_field_that_is_not_text_is_a_400(api, default, nothing_changes, value):
    response = api.put(f"/api/networks/{default.pk}/xml/", {"xml": value}, format="json")
    assert response.status_code == 400 and "xml" in response.json()


def test_an_allowed_option_is_accepted(api, default, settings):
    settings.KVMWEB_DNSMASQ_OPTIONS_ALLOWED = ["cache-size"]
    response = _put(api, default, _with_options(default.inactive_xml, "cache-size=500"), "define")
    assert response.status_code == 202
    operation = Operation.objects.get(pk=response.json()["operation"]["id"])
    assert "cache-size=500" in operation.params["xml"]
