"""The host page's networks and guests, and the network page's attached guests: tables paginated
and sorted in the database, each with its own query parameters, in as many queries for 3N rows
as for N."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from networks.models import Guest, GuestInterface, Network
from tests.factories import HostFactory

SMALL_PAGES = {"networks-per_page": "25", "guests-per_page": "25"}


def _grow(host, start: int, count: int) -> Network:
    """`count` more networks and guests on `host`; each guest has two NICs on the host's first network."""
    Network.objects.bulk_create(
        [
            Network(host=host, name=f"net{i:03d}", bridge=f"br{i}", live_xml="<network/>")
            for i in range(start, start + count)
        ]
    )
    first = Network.objects.get(host=host, name="net000")
    guests = Guest.objects.bulk_create(
        [Guest(host=host, name=f"vm{i:03d}", state="running") for i in range(start, start + count)]
    )
    GuestInterface.objects.bulk_create(
        [
            GuestInterface(
                guest=g,
                position=p,
                type="network",
                network=first,
                mac=f"52:54:00:{g.pk // 256:02x}:{g.pk % 256:02x}:0{p}",
            )
            for g in guests
            for p in (0, 1)
        ]
    )
    return first


def _get(client, url, params):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, params)
    assert response.status_code == 200
    return response, len(queries)


def _names(table) -> list[str]:
    return [row.record.name for row in table.paginated_rows]


@pytest.mark.django_db
def test_the_host_page_makes_as_many_queries_for_3n_networks_and_guests_as_for_n(logged_in):
    host = HostFactory(name="kvm1")
    _grow(host, 0, 30)
    at_n, queries_n = _get(logged_in, host.get_absolute_url(), SMALL_PAGES)
    _grow(host, 30, 60)
    at_3n, queries_3n = _get(logged_in, host.get_absolute_url(), SMALL_PAGES)
    assert queries_3n == queries_n
    page = at_3n.content.decode()
    assert "vm024" in page and "vm025" not in page and "net024" in page and "net025" not in page
    assert "page 1 of 4 (90 rows)" in page


@pytest.mark.django_db
def test_the_host_pages_two_tables_page_and_sort_independently(logged_in):
    host = HostFactory(name="kvm1")
    _grow(host, 0, 30)
    params = {**SMALL_PAGES, "networks-page": "2", "guests-sort": "-name"}
    response = logged_in.get(host.get_absolute_url(), params)
    networks, guests = response.context["networks"], response.context["guests"]
    assert _names(networks) == [f"net{i:03d}" for i in range(25, 30)]
    assert _names(guests)[:2] == ["vm029", "vm028"] and len(guests.paginated_rows) == 25
    first = logged_in.get(host.get_absolute_url(), SMALL_PAGES).context["networks"].paginated_rows[0].record
    assert (first.name, first.guest_count) == ("net000", 30), "30 guests, two NICs each, count once"
    assert guests.paginated_rows[0].record.interface_count == 2
    page = response.content.decode()
    assert [column.name for column in networks.columns] == [
        "name",
        "mode",
        "bridge",
        "state",
        "autostart",
        "guest_count",
    ]
    assert "host" not in [column.name for column in guests.columns]
    assert "networks-page=1" in page and "guests-page=2" in page, "each table's own links"


@pytest.mark.django_db
def test_the_network_page_makes_as_many_queries_for_3n_attached_guests_as_for_n(logged_in):
    host = HostFactory(name="kvm1")
    network = _grow(host, 0, 15)
    at_n, queries_n = _get(logged_in, network.get_absolute_url(), {"guests-per_page": "25"})
    _grow(host, 15, 30)
    at_3n, queries_3n = _get(logged_in, network.get_absolute_url(), {"guests-per_page": "25"})
    assert queries_3n == queries_n
    table = at_3n.context["attached_guests"]
    assert [(row.record.guest.name, row.record.position) for row in table.paginated_rows][:3] == [
        ("vm000", 0), ("vm000", 1), ("vm001", 0)
    ]  # fmt: skip
    page = at_3n.content.decode()
    assert "page 1 of 4 (90 rows)" in page and "vm012" in page and "vm013" not in page


@pytest.mark.django_db
def test_the_network_pages_attached_guests_page_sort_and_link_to_their_guest(logged_in):
    host = HostFactory(name="kvm1")
    network = _grow(host, 0, 30)
    response = logged_in.get(network.get_absolute_url(), {"guests-page": "2", "guests-sort": "-guest"})
    rows = [row.record for row in response.context["attached_guests"].paginated_rows]
    assert len(rows) == 10 and rows[0].guest.name == "vm004" and rows[-1].guest.name == "vm000"
    guest = Guest.objects.get(name="vm000")
    page = response.content.decode()
    assert f'<a href="{guest.get_absolute_url()}">vm000</a>' in page
    assert '<span class="badge running">Running</span>' in page and f"<code>{rows[-1].mac}</code>" in page


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    ["networks-page=abc", "networks-page=0", "guests-page=99999999999999999999", "guests-per_page=7",
     "networks-per_page=-1", "guests-sort=nosuch", "networks-sort=guest_count", "guests-sort=" + "x" * 5000,
     "networks-page=٣"],
)  # fmt: skip
def test_a_bad_page_or_sort_on_a_detail_page_shows_the_page(logged_in, query):
    host = HostFactory(name="kvm1")
    network = _grow(host, 0, 3)
    for url in (host.get_absolute_url(), network.get_absolute_url()):
        response = logged_in.get(f"{url}?{query}")
        assert response.status_code == 200, url
        assert "vm000" in response.content.decode()
