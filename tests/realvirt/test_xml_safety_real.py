"""The reported attack on a real libvirtd: a dhcp-script dnsmasq option through PUT .../xml/.

libvirt copies each <dnsmasq:option value> into the config of the network's dnsmasq, which runs
as root; kvmweb must refuse it before libvirt sees it. No guest is needed: the network's XML on
the daemon must be byte-identical after the request.
"""

import libvirt
import pytest
from rest_framework.test import APIClient

from networks.models import Network, Operation

from .kvmweb_setup import nat_network_xml, registered_host

pytestmark = pytest.mark.realvirt

DNSMASQ = "http://libvirt.org/schemas/network/dnsmasq/1.0"


def _with_dhcp_script(network_xml: str, name: str) -> str:
    options = f"<dnsmasq:options><dnsmasq:option value='dhcp-script=/tmp/{name}.sh'/></dnsmasq:options>"
    declared = network_xml.replace("<network>", f"<network xmlns:dnsmasq='{DNSMASQ}'>", 1)
    return declared.replace("</network>", options + "</network>")


def _xml_on_daemon(conn, name: str) -> tuple[str, str]:
    network = conn.networkLookupByName(name)
    return network.XMLDesc(0), network.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)


def test_the_daemon_itself_would_take_a_dhcp_script_option(private_conn):
    """The control: without kvmweb's check the option reaches libvirt, which keeps it."""
    private_conn.networkDefineXML(_with_dhcp_script(nat_network_xml("kvctl", "kvbr84", "10.84.0"), "control"))
    try:
        assert "dhcp-script=/tmp/control.sh" in private_conn.networkLookupByName("kvctl").XMLDesc(0)
    finally:
        private_conn.networkLookupByName("kvctl").undefine()  # never started: dnsmasq never ran


def test_a_dhcp_script_option_is_refused_and_the_daemon_keeps_its_xml(db, private_libvirtd, private_conn):
    network = private_conn.networkDefineXML(nat_network_xml("kvxml", "kvbr83", "10.83.0"))
    network.create()
    with registered_host(private_libvirtd, "kvm-xml", "xml-admin") as (host, admin):
        mirror = Network.objects.get(host=host, name="kvxml")
        before = _xml_on_daemon(private_conn, "kvxml")
        api = APIClient()
        api.force_authenticate(admin)
        response = api.put(
            f"/api/networks/{mirror.pk}/xml/",
            {"xml": _with_dhcp_script(mirror.inactive_xml, "evil"), "apply": "restart"},
            format="json",
        )
        assert response.status_code == 400
        assert "'dhcp-script' runs a program or names a file" in response.json()["xml"][0]
        assert not Operation.objects.exclude(kind="host.sync").exists()
        assert _xml_on_daemon(private_conn, "kvxml") == before
