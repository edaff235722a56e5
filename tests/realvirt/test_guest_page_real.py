"""The guest page against a real daemon and one real guest: its lease, its PCI address, a
reservation made from the page's "Reserve this address" link, and a guest agent channel that no
agent opened."""

import re
import time
from html import unescape
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

import libvirt
import pytest
from django.urls import reverse

from networks.choices import AuditSource
from networks.models import Guest, GuestInterface, Network, Operation
from networks.services import hosts as host_services

from .kvmweb_setup import guests_on_new_network, nat_network_xml, registered_host, run_ok

pytestmark = pytest.mark.realvirt
NETWORK = "kvpage"
AGENT_CHANNEL = "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"


def _libvirt_pci_address(dom) -> str:
    """The guest-side PCI address of the guest's NIC, as libvirt's live XML gives it."""
    address = ET.fromstring(dom.XMLDesc(0)).find("devices/interface/address[@type='pci']")
    parts = [int(address.get(name), 16) for name in ("domain", "bus", "slot", "function")]
    return "{:04x}:{:02x}:{:02x}.{:x}".format(*parts)


def _sync(host) -> float:
    started = time.monotonic()
    run_ok(host_services.host_request_sync(host=host, actor=None, source=AuditSource.SYSTEM))
    return time.monotonic() - started


def _interface_row(client, guest_name: str, mac: str) -> str:
    guest = Guest.objects.get(name=guest_name)
    page = client.get(reverse("networks:guest_detail", args=[guest.pk])).content.decode()
    match = re.search(rf'<tr class="interface" data-mac="{re.escape(mac)}">(.*?)</tr>', page, re.S)
    assert match, page
    return match.group(1)


def _with_agent_channel(dom) -> None:
    """Stop the guest and give it a guest agent channel (a channel cannot be hot-plugged into a
    guest without a virtio-serial controller, nor such a controller hot-plugged), then start it."""
    dom.destroy()
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    root.find("devices").append(ET.fromstring(AGENT_CHANNEL))
    dom.connect().defineXML(ET.tostring(root, encoding="unicode"))
    dom.create()


def test_a_real_guests_lease_and_pci_address_are_shown_and_reserved_from_its_page(
    db, client, private_libvirtd, guest_image
):
    network_xml = nat_network_xml(NETWORK, "kvpage0", "10.84.0")
    with (
        guests_on_new_network(private_libvirtd, guest_image, network_xml, ["page-a"]) as (guest,),
        registered_host(private_libvirtd, "kvm-page") as (host, admin),
    ):
        client.force_login(admin)
        row = _interface_row(client, "page-a", guest.mac)
        assert f"<code>{guest.ip}</code>" in row
        assert f"<code>{_libvirt_pci_address(guest.dom)}</code>" in row

        link = unescape(re.search(r'<a class="reserve" href="([^"]+)"', row).group(1))
        query = {key: values[0] for key, values in parse_qs(urlsplit(link).query).items()}
        assert query == {"command": "add-last", "mac": guest.mac, "ip": guest.ip, "name": "page-a"}
        assert client.get(link).status_code == 200
        response = client.post(link.split("?")[0], {**query, "scope": "both", "confirm": "1"})
        assert response.status_code == 302
        run_ok(Operation.objects.latest("pk"))
        conn = private_libvirtd.connect()
        try:
            live = conn.networkLookupByName(NETWORK).XMLDesc(0)
        finally:
            conn.close()
        assert f"<host mac='{guest.mac}' name='page-a' ip='{guest.ip}'/>" in live

        row = _interface_row(client, "page-a", guest.mac)
        network = Network.objects.get(host=host, name=NETWORK)
        assert f'<a href="{network.get_absolute_url()}">{guest.ip}</a> (page-a)' in row
        assert 'class="reserve"' not in row

        # A guest agent channel that no agent opened: libvirt's live XML says
        # "disconnected", and the sync neither asks nor warns.
        _with_agent_channel(guest.dom)
        seconds = _sync(host)
        host.refresh_from_db()
        mirrored = Guest.objects.get(host=host, name="page-a")
        assert "state='disconnected'" in mirrored.xml or 'state="disconnected"' in mirrored.xml
        assert GuestInterface.objects.get(guest=mirrored).agent_addresses == []
        assert not [warning for warning in host.sync_warnings if "agent" in warning]
        print(f"\nMEASURED host sync with one running guest (agent channel, no agent): {seconds:.2f} s")
