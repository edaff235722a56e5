"""Pages of network XML: hostile XML in the editor is refused on the page; a network whose synced XML
carries dnsmasq options kvmweb refuses says so on its page."""

from django.urls import reverse
from lxml import etree

from networks.hypervisor import xml
from networks.models import Network, Operation
from networks.services.sync import mirror_network

DNSMASQ = "http://libvirt.org/schemas/network/dnsmasq/1.0"


def _synced_with_options(network: Network, *values: str) -> Network:
    """The network as a sync would mirror it once someone added options on the host (virsh net-edit)."""
    root = etree.fromstring(network.inactive_xml.encode())
    new_root = etree.Element(root.tag, root.attrib, nsmap={"dnsmasq": DNSMASQ})
    new_root.extend(list(root))
    options = etree.SubElement(new_root, f"{{{DNSMASQ}}}options")
    for value in values:
        etree.SubElement(options, f"{{{DNSMASQ}}}option", value=value)
    network_xml = etree.tostring(new_root, encoding="unicode")
    return mirror_network(network.host, xml.parse_network(network_xml, network_xml, active=True, persistent=True))


def test_the_page_warns_about_a_dhcp_script_option(logged_in, demo_host):
    network = _synced_with_options(Network.objects.get(host=demo_host, name="default"), "dhcp-script=/tmp/x")
    page = logged_in.get(reverse("networks:network_detail", args=[network.pk])).content.decode()
    assert 'id="config-warnings"' in page
    assert "The dnsmasq option &#x27;dhcp-script&#x27; runs a program or names a file" in page


def test_an_allowed_option_gives_no_warning(logged_in, demo_host, settings):
    settings.KVMWEB_DNSMASQ_OPTIONS_ALLOWED = ["log-queries"]
    network = _synced_with_options(Network.objects.get(host=demo_host, name="default"), "log-queries")
    page = logged_in.get(reverse("networks:network_detail", args=[network.pk])).content.decode()
    assert "config-warnings" not in page and "unsafe config" not in page


def test_the_editor_page_refuses_an_external_entity_with_a_message(logged_in, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    hostile = "<!DOCTYPE network [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>" + network.inactive_xml.replace(
        "</network>", "<metadata><a:x xmlns:a='urn:a'>&x;</a:x></metadata></network>"
    )
    url = reverse("networks:network_edit_xml", args=[network.pk])
    for apply in ("", "restart"):
        response = logged_in.post(url, {"xml": hostile, "apply": apply})
        assert response.status_code == 200
        assert "XML with a DOCTYPE (or entity declarations) is not accepted." in response.content.decode()
    assert not Operation.objects.exclude(kind="host.sync").exists()


def test_the_editor_page_refuses_a_dhcp_script_option(logged_in, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    hostile = network.inactive_xml.replace("<network>", f"<network xmlns:dnsmasq='{DNSMASQ}'>", 1).replace(
        "</network>", "<dnsmasq:options><dnsmasq:option value='dhcp-script=/tmp/x'/></dnsmasq:options></network>"
    )
    response = logged_in.post(reverse("networks:network_edit_xml", args=[network.pk]), {"xml": hostile})
    assert "runs a program or names a file" in response.content.decode()
    assert "Save and restart" not in response.content.decode()
