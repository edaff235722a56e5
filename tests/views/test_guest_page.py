"""The guest page: each interface with its addresses, its reservation and what the user may do."""

import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from networks.models import DhcpLease, DhcpReservation, Guest, GuestInterface, Host, Network, UserRole
from tests.factories import UserFactory

BUILD01_MAC = "52:54:00:0c:00:41"  # build01's NIC on `routed`, a network without reservations


def _page(client, host, guest_name: str) -> str:
    guest = Guest.objects.get(host=host, name=guest_name)
    response = client.get(reverse("networks:guest_detail", args=[guest.pk]))
    assert response.status_code == 200
    return response.content.decode()


def _row(page: str, mac: str) -> str:
    """The interface table's row of `mac`."""
    match = re.search(rf'<tr class="interface" data-mac="{re.escape(mac)}">(.*?)</tr>', page, re.S)
    assert match, f"no row for {mac}"
    return match.group(1)


def _reserve_link(row: str) -> str | None:
    match = re.search(r'<a class="reserve" href="([^"]+)"', row)
    return unescape(match.group(1)) if match else None


def _lease(host, network_name: str, mac: str, address: str, prefix: int | None = 24) -> DhcpLease:
    network = Network.objects.get(host=host, name=network_name)
    return DhcpLease.objects.create(network=network, mac=mac, address=address, prefix=prefix, hostname="")


@pytest.fixture
def operator_client(client, db):
    client.force_login(UserFactory(username="olga", role="operator"))
    return client


@pytest.fixture
def viewer_client(client, db):
    client.force_login(UserFactory(username="vera", role="viewer"))
    return client


def test_an_interface_shows_the_address_its_network_leased_to_its_mac(logged_in, demo_host):
    _lease(demo_host, "routed", BUILD01_MAC, "10.20.0.150")
    _lease(demo_host, "default", BUILD01_MAC, "192.168.122.200")  # same MAC, another network: not this NIC's
    row = _row(_page(logged_in, demo_host, "build01"), BUILD01_MAC)
    assert "<code>10.20.0.150</code>" in row and "lease" in row
    assert "192.168.122.200" not in row


def test_an_interface_without_a_lease_says_no_address_is_known(logged_in, demo_host):
    assert "none known" in _row(_page(logged_in, demo_host, "build01"), BUILD01_MAC)


def test_addresses_the_guest_agent_reported_are_shown_once_beside_the_leases(logged_in, demo_host):
    _lease(demo_host, "routed", BUILD01_MAC, "10.20.0.150")
    GuestInterface.objects.filter(mac=BUILD01_MAC).update(agent_addresses=["10.20.0.150/24", "fd00:20::7/64"])
    row = _row(_page(logged_in, demo_host, "build01"), BUILD01_MAC)
    assert '<code>fd00:20::7/64</code> <span class="muted">guest agent</span>' in row
    assert row.count("10.20.0.150") == 2, "the leased address once, and once in the reserve link"


def test_the_reservation_of_the_interfaces_mac_is_shown_with_a_link_to_its_network(logged_in, demo_host):
    _lease(demo_host, "default", "52:54:00:0a:00:11", "192.168.122.11")
    row = _row(_page(logged_in, demo_host, "web01"), "52:54:00:0a:00:11")
    default = Network.objects.get(host=demo_host, name="default")
    assert f'<a href="{default.get_absolute_url()}">192.168.122.11</a> (web01)' in row
    assert _reserve_link(row) is None, "already reserved: nothing to offer"


def test_a_leased_address_without_reservation_links_to_the_prefilled_reservation_editor(logged_in, demo_host):
    _lease(demo_host, "routed", BUILD01_MAC, "10.20.0.150")
    link = _reserve_link(_row(_page(logged_in, demo_host, "build01"), BUILD01_MAC))
    routed = Network.objects.get(host=demo_host, name="routed")
    parts = urlsplit(link)
    assert parts.path == reverse("networks:network_edit", args=[routed.pk, "ip-dhcp-host"])
    assert parse_qs(parts.query) == {
        "command": ["add-last"],
        "mac": [BUILD01_MAC],
        "ip": ["10.20.0.150"],
        "name": ["build01"],
    }


def test_the_reserve_link_opens_the_editor_filled_in_and_its_preview_reserves_the_lease(logged_in, demo_host):
    _lease(demo_host, "routed", BUILD01_MAC, "10.20.0.150")
    link = _reserve_link(_row(_page(logged_in, demo_host, "build01"), BUILD01_MAC))
    editor = logged_in.get(link).content.decode()
    for field, value in (("mac", BUILD01_MAC), ("ip", "10.20.0.150"), ("name", "build01")):
        assert f'name="{field}" value="{value}"' in editor
    query = {key: values[0] for key, values in parse_qs(urlsplit(link).query).items()}
    preview = logged_in.post(link.split("?")[0], {**query, "scope": "both"}).content.decode()
    assert f"Reserve {BUILD01_MAC} → 10.20.0.150 (build01)" in preview


def test_a_guest_name_that_is_no_host_name_is_not_proposed(logged_in, demo_host):
    Guest.objects.filter(host=demo_host, name="build01").update(name="build_01")
    _lease(demo_host, "routed", BUILD01_MAC, "10.20.0.150")
    query = parse_qs(urlsplit(_reserve_link(_row(_page(logged_in, demo_host, "build_01"), BUILD01_MAC))).query)
    assert "name" not in query and query["ip"] == ["10.20.0.150"]


def test_an_ipv6_lease_is_shown_but_offers_no_reservation_by_mac(logged_in, demo_host):
    DhcpReservation.objects.filter(mac="52:54:00:0b:00:21").delete()
    _lease(demo_host, "dualstack", "52:54:00:0b:00:21", "fd00:30::99", prefix=64)
    row = _row(_page(logged_in, demo_host, "db01"), "52:54:00:0b:00:21")
    assert "<code>fd00:30::99</code>" in row
    assert _reserve_link(row) is None


def test_an_operator_is_offered_the_reserve_link_and_interface_actions(operator_client, demo_host):
    _lease(demo_host, "routed", BUILD01_MAC, "10.20.0.150")
    page = _page(operator_client, demo_host, "build01")
    guest = Guest.objects.get(host=demo_host, name="build01")
    assert _reserve_link(_row(page, BUILD01_MAC))
    assert reverse("networks:guest_interface_add", args=[guest.pk]) in page
    assert reverse("networks:guest_interface_edit", args=[guest.pk, BUILD01_MAC]) in page
    assert reverse("networks:guest_interface_remove", args=[guest.pk, BUILD01_MAC]) in page


def test_a_viewer_sees_the_addresses_but_no_reserve_link_and_no_action(viewer_client, demo_host):
    _lease(demo_host, "routed", BUILD01_MAC, "10.20.0.150")
    page = _page(viewer_client, demo_host, "build01")
    row = _row(page, BUILD01_MAC)
    assert "<code>10.20.0.150</code>" in row
    assert _reserve_link(row) is None
    assert "/interfaces/" not in page and "Add interface" not in page
    assert "ip-dhcp-host" not in page


def test_an_operator_of_another_host_cannot_see_the_guest(client, demo_host):
    other = Host.objects.create(name="elsewhere", uri="test:///default")
    user = UserFactory(username="otto", role="operator")
    UserRole.objects.filter(user=user).update(all_hosts=False)
    user.kvmweb_role.hosts.set([other])
    client.force_login(user)
    guest = Guest.objects.get(host=demo_host, name="build01")
    assert client.get(reverse("networks:guest_detail", args=[guest.pk])).status_code == 404


def test_each_interface_shows_its_model_link_vlan_bandwidth_pci_address_and_portgroup(logged_in, demo_host):
    page = _page(logged_in, demo_host, "web01")
    prod = _row(page, "52:54:00:0a:00:11")
    assert "in: average 2048 KiB/s, peak 4096 KiB/s, burst 1024 KiB<br>out: average 1024 KiB/s" in prod
    assert "<code>0000:00:03.0</code>" in prod and "portgroup</span> prod" in prod and "virtio" in prod
    assert '<td class="link">up</td>' in prod
    backend = _row(page, "52:54:00:0a:01:11")
    assert '<span class="badge bad">down</span>' in backend and "<code>0000:00:04.0</code>" in backend


def test_a_macvtap_interface_shows_its_host_device_and_mode(logged_in, demo_host):
    row = _row(_page(logged_in, demo_host, "nas01"), "52:54:00:0d:01:61")
    assert "ens1f1" in row and "mode</span> vepa" in row and "e1000e" in row


def test_a_vlan_tagged_interface_shows_its_tags(logged_in, demo_host):
    assert "<td>20</td>" in _row(_page(logged_in, demo_host, "nas01"), "52:54:00:0d:00:61")


def test_the_page_ends_with_the_guests_port_forwards_section(logged_in, demo_host):
    page = _page(logged_in, demo_host, "web01")
    assert page.rfind("<section>") > page.find('id="interfaces"')


def test_the_page_makes_as_many_queries_for_two_interfaces_as_for_one(logged_in, demo_host):
    for network, mac, address in (
        ("default", "52:54:00:0a:00:11", "192.168.122.11"),
        ("isolated", "52:54:00:0a:01:11", "10.10.0.11"),
        ("dualstack", "52:54:00:0b:00:21", "10.30.0.21"),
    ):
        _lease(demo_host, network, mac, address)
    counts = []
    for name in ("db01", "web01"):
        with CaptureQueriesContext(connection) as queries:
            _page(logged_in, demo_host, name)
        counts.append(len(queries))
    assert counts[0] == counts[1]


# ---------------------------------------------------------------- the editor's prefill is checked like input


def test_a_prefill_with_control_characters_is_left_out_and_named(logged_in, demo_host):
    routed = Network.objects.get(host=demo_host, name="routed")
    url = reverse("networks:network_edit", args=[routed.pk, "ip-dhcp-host"])
    response = logged_in.get(url, {"mac": "52:54:00:0c:00:41\x07", "ip": "10.20.0.150"})
    page = response.content.decode()
    assert response.status_code == 200
    assert 'id="edit-errors"' in page and "<strong>mac</strong>" in page
    assert 'name="mac" value=""' in page and 'name="ip" value="10.20.0.150"' in page


def test_an_overlong_prefill_is_left_out_and_named(logged_in, demo_host):
    routed = Network.objects.get(host=demo_host, name="routed")
    url = reverse("networks:network_edit", args=[routed.pk, "ip-dhcp-host"])
    page = logged_in.get(url, {"name": "a" * 5000}).content.decode()
    assert "<strong>name</strong>: At most 1024 characters." in page and "a" * 1025 not in page


def test_every_demo_guests_page_renders_with_one_row_per_interface(logged_in, demo_host):
    for guest in Guest.objects.filter(host=demo_host).prefetch_related("interfaces"):
        page = _page(logged_in, demo_host, guest.name)
        assert page.count('<tr class="interface"') == len(guest.interfaces.all()), guest.name
