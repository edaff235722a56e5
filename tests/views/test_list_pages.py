"""The list pages: sorted, filtered and paginated in the database, with the same number of
queries whatever the number of rows, and no 500 for any query string."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from networks.models import (
    AuditEvent,
    DhcpReservation,
    Guest,
    GuestInterface,
    Host,
    Network,
    NetworkIp,
    NodeDevice,
    Operation,
    PortForward,
)
from networks.services.permissions import role_set
from tests.factories import HostFactory, UserFactory

LISTS = [
    "networks:host_list",
    "networks:network_list",
    "networks:guest_list",
    "networks:device_list",
    "networks:port_forward_list",
    "networks:operation_list",
    "networks:audit_list",
]


def _fleet(start: int, count: int) -> None:
    """`count` hosts, each with a network, a guest with two NICs on it, a PF with a VF, a port
    forward, an operation and an audit event (bulk inserts: no hypervisor involved)."""
    hosts = Host.objects.bulk_create(
        [Host(name=f"kvm{i:03d}", uri="test:///default", status="reachable") for i in range(start, start + count)]
    )
    networks = Network.objects.bulk_create(
        [Network(host=h, name="lan", forward_mode="nat", bridge=f"virbr{h.pk}", live_xml="<network/>") for h in hosts]
    )
    guests = Guest.objects.bulk_create([Guest(host=h, name=f"vm-{h.name}", state="running") for h in hosts])
    GuestInterface.objects.bulk_create(
        [
            GuestInterface(guest=g, position=p, type="network", network=n, mac=f"52:54:00:{g.pk % 256:02x}:00:0{p}")
            for g, n in zip(guests, networks, strict=True)
            for p in (0, 1)
        ]
    )
    pfs = NodeDevice.objects.bulk_create(
        [NodeDevice(host=h, name="pci_0000_01_00_0", capability="pci", vf_max=8) for h in hosts]
    )
    NodeDevice.objects.bulk_create(
        [NodeDevice(host=pf.host, name="pci_0000_01_10_0", capability="pci", physical_function=pf) for pf in pfs]
    )
    PortForward.objects.bulk_create(
        [
            PortForward(
                host=g.host,
                guest=g,
                guest_name=g.name,
                guest_mac="52:54:00:00:00:01",
                host_port_start=8080,
                host_port_end=8080,
                guest_port_start=80,
                guest_port_end=80,
            )  # fmt: skip
            for g in guests
        ]
    )
    Operation.objects.bulk_create(
        [Operation(kind="host.sync", host=h, host_name=h.name, lock_key=f"host:{h.pk}") for h in hosts]
    )
    AuditEvent.objects.bulk_create(
        [AuditEvent(action="test.event", source="system", host=h, host_name=h.name, object_type="host") for h in hosts]
    )


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
        assert response.status_code == 200, url
    return len(queries)


@pytest.mark.django_db
def test_every_list_makes_as_many_queries_for_3n_rows_as_for_n(logged_in):
    urls = [reverse(name) + "?per_page=25" for name in LISTS]
    _fleet(0, 30)
    network = Network.objects.get(host__name="kvm000")
    ip = NetworkIp.objects.create(network=network, position=0, address="10.0.0.1", prefix=16, family="ipv4")

    def reserve(start, count):
        DhcpReservation.objects.bulk_create(
            [DhcpReservation(network=network, ip=ip, address=f"10.0.{i // 250}.{i % 250 + 2}",
                             mac=f"52:54:00:aa:{i // 256:02x}:{i % 256:02x}", name=f"r{i}")
             for i in range(start, start + count)]
        )  # fmt: skip

    reserve(0, 60)
    urls.append(network.get_absolute_url())
    at_n = {url: _queries(logged_in, url) for url in urls}
    _fleet(30, 60)
    reserve(60, 120)
    assert Host.objects.count() == 90 and network.dhcp_reservations.count() == 180
    assert {url: _queries(logged_in, url) for url in urls} == at_n


def _names(response) -> list[str]:
    return [row.record.name for row in response.context["table"].paginated_rows]


@pytest.mark.django_db
def test_the_host_list_sorts_pages_and_counts_each_hosts_rows(logged_in):
    _fleet(0, 30)
    url = reverse("networks:host_list")
    first = logged_in.get(url, {"per_page": "25"})
    assert _names(first) == [f"kvm{i:03d}" for i in range(25)]
    assert "page 1 of 2 (30 rows)" in first.content.decode()
    assert _names(logged_in.get(url, {"per_page": "25", "page": "2"})) == [f"kvm{i:03d}" for i in range(25, 30)]
    assert _names(logged_in.get(url, {"sort": "-name"}))[:2] == ["kvm029", "kvm028"]
    row = first.context["table"].paginated_rows[0].record
    assert (row.network_count, row.guest_count) == (1, 1)
    network = logged_in.get(reverse("networks:network_list")).context["table"].paginated_rows[0].record
    assert network.guest_count == 1, "a guest with two NICs on the network counts once"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    ["sort=nosuch", "sort=guest_count", "sort=" + "x" * 5000, "sort=-", "sort=%00", "per_page=7", "per_page=0",
     "per_page=-1", "per_page=abc", "per_page=99999999999999999999", "page=0", "page=-3", "page=abc",
     "page=99999999999999999999", "page=1e3", "page=٣", "res-page=abc", "mode=nosuch", "state=maybe",
     "host=abc", "q=%00", "q=" + "x" * 5000],
)  # fmt: skip
@pytest.mark.parametrize("name", ["networks:host_list", "networks:network_list", "networks:guest_list",
                                  "networks:device_list", "networks:port_forward_list"])  # fmt: skip
def test_a_bad_sort_page_or_filter_shows_the_page(logged_in, name, query):
    _fleet(0, 3)
    response = logged_in.get(f"{reverse(name)}?{query}")
    if "%00" in query:  # a NUL anywhere in a query string is refused by the middleware
        assert response.status_code == 400
        return
    assert response.status_code == 200
    assert response.context["table"].per_page_value in (25, 50, 100, 250)


@pytest.mark.django_db
def test_rows_per_page_offers_the_four_choices_and_keeps_the_filters(logged_in):
    _fleet(0, 30)
    response = logged_in.get(reverse("networks:network_list"), {"per_page": "100", "q": "virbr", "sort": "bridge"})
    page = response.content.decode()
    assert len(response.context["table"].paginated_rows) == 30
    options = re.findall(r'<option value="(\d+)"( selected)?>\d+</option>', page)
    assert options == [("25", ""), ("50", ""), ("100", " selected"), ("250", "")]
    assert '<input type="hidden" name="q" value="virbr">' in page
    assert '<input type="hidden" name="sort" value="bridge">' in page
    assert len(logged_in.get(reverse("networks:network_list"), {"per_page": "7"}).context["table"].paginated_rows) == 30


@pytest.mark.django_db
def test_a_page_past_the_last_shows_the_last_page(logged_in):
    _fleet(0, 30)
    response = logged_in.get(reverse("networks:guest_list"), {"per_page": "25", "page": "99"})
    assert _names(response) == [f"vm-kvm{i:03d}" for i in range(25, 30)]


@pytest.mark.django_db
def test_the_network_list_sorts_by_a_column_both_ways(logged_in):
    hosts = Host.objects.bulk_create([Host(name="a-host", uri="test:///default"), Host(name="b-host", uri="x")])
    Network.objects.bulk_create(
        [Network(host=hosts[0], name="zeta", bridge="br1"), Network(host=hosts[1], name="alpha", bridge="br2"),
         Network(host=hosts[0], name="mid", bridge="br0", forward_mode="nat")]
    )  # fmt: skip
    url = reverse("networks:network_list")
    assert _names(logged_in.get(url)) == ["mid", "zeta", "alpha"]  # by host, then name
    assert _names(logged_in.get(url, {"sort": "name"})) == ["alpha", "mid", "zeta"]
    assert _names(logged_in.get(url, {"sort": "-name"})) == ["zeta", "mid", "alpha"]
    assert _names(logged_in.get(url, {"sort": "bridge"})) == ["mid", "zeta", "alpha"]
    page = logged_in.get(url, {"sort": "name"}).content.decode()
    assert 'href="?sort=-name"' in page, "the sorted column's header link reverses the order"


@pytest.mark.django_db
def test_the_mode_filter_offers_any_first_and_finds_isolated_networks(logged_in):
    host = HostFactory(name="kvm1")
    Network.objects.bulk_create(
        [Network(host=host, name="iso"), Network(host=host, name="natnet", forward_mode="nat")]
    )  # fmt: skip
    url = reverse("networks:network_list")
    page = logged_in.get(url).content.decode()
    select = " ".join(re.search(r'<select name="mode"[^>]*>(.*?)</select>', page, re.S)[1].split())
    assert select.startswith('<option value="" selected>Any mode</option> <option value="isolated">Isolated')
    assert '<option value="isolated">Isolated</option>' in select
    assert _names(logged_in.get(url)) == ["iso", "natnet"]
    assert _names(logged_in.get(url, {"mode": "isolated"})) == ["iso"]
    assert _names(logged_in.get(url, {"mode": "nat"})) == ["natnet"]
    assert _names(logged_in.get(url, {"state": "inactive", "q": "nat"})) == ["natnet"]


@pytest.mark.django_db
def test_lists_show_only_the_users_hosts(client):
    _fleet(0, 3)
    user = UserFactory(username="carol", role="viewer")
    role_set(user=user, role="operator", host_names=["kvm001"], actor=None, source="system")
    client.force_login(user)
    for name in ("networks:host_list", "networks:network_list", "networks:guest_list", "networks:device_list"):
        page = client.get(reverse(name)).content.decode()
        assert "kvm001" in page and "kvm000" not in page and "kvm002" not in page, name
    events = client.get(reverse("networks:audit_list")).context["table"].rows
    assert [row.record.host_name for row in events] == ["kvm001"]


@pytest.mark.django_db
def test_the_network_list_does_not_read_the_xml_columns(logged_in):
    _fleet(0, 3)
    with CaptureQueriesContext(connection) as queries:
        logged_in.get(reverse("networks:network_list"))
    assert not [q["sql"] for q in queries if "live_xml" in q["sql"] or "inactive_xml" in q["sql"]]


def _events(count: int) -> list[AuditEvent]:
    """Two events per second: the cursor must tell them apart by id."""
    now = timezone.now()
    return AuditEvent.objects.bulk_create(
        [AuditEvent(action="test.event", source="system", object_type="x", object_name=f"e{i:03d}",
                    created_at=now - timedelta(seconds=count - i // 2)) for i in range(count)]
    )  # fmt: skip


def _objects(response) -> list[str]:
    return [row.record.object_name for row in response.context["table"].rows]


def _link(page: str, rel: str) -> str:
    return re.search(rf'<a rel="{rel}" href="([^"]+)"', page)[1].replace("&amp;", "&")


@pytest.mark.django_db
def test_the_audit_log_pages_newer_and_older_by_cursor(logged_in):
    _events(60)
    url = reverse("networks:audit_list")
    first = logged_in.get(url, {"per_page": "25", "action": "test."})
    assert _objects(first) == [f"e{i:03d}" for i in range(59, 34, -1)]
    assert 'rel="prev"' not in first.content.decode()
    second = logged_in.get(url + _link(first.content.decode(), "next"))
    assert _objects(second) == [f"e{i:03d}" for i in range(34, 9, -1)]
    third = logged_in.get(url + _link(second.content.decode(), "next"))
    assert _objects(third) == [f"e{i:03d}" for i in range(9, -1, -1)]
    assert 'rel="next"' not in third.content.decode()
    back = logged_in.get(url + _link(third.content.decode(), "prev"))
    assert _objects(back) == _objects(second)
    assert "action=test." in _link(third.content.decode(), "prev"), "the filters stay"
    newest = logged_in.get(url + _link(back.content.decode(), "prev"))
    assert _objects(newest) == _objects(first) and 'rel="prev"' not in newest.content.decode()


@pytest.mark.django_db
def test_the_audit_log_and_operations_never_count_the_table(logged_in):
    _events(30)
    for name in ("networks:audit_list", "networks:operation_list"):
        with CaptureQueriesContext(connection) as queries:
            logged_in.get(reverse(name), {"older": f"{10**16}.5"})
        sql = " ".join(q["sql"] for q in queries).upper()
        assert "COUNT(" not in sql and "OFFSET" not in sql, name


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    ["older=abc", "older=1.0", "older=-5.3", "newer=1e9.2", "older=99999999999999999999.1", "older=5.99999999999",
     "older=١.١", "older=1.2&newer=3.4", "newer=%00"],
)  # fmt: skip
@pytest.mark.parametrize("name", ["networks:audit_list", "networks:operation_list"])
def test_a_cursor_that_cannot_be_read_is_a_400(logged_in, name, query):
    response = logged_in.get(f"{reverse(name)}?{query}")
    assert response.status_code == 400


@pytest.mark.django_db
def test_the_operations_list_filters_and_pages_by_cursor(logged_in):
    host = HostFactory(name="kvm1")
    Operation.objects.bulk_create(
        [Operation(kind="host.sync", host=host, host_name="kvm1", lock_key="x", status=s)
         for s in ["failed"] * 30 + ["succeeded"] * 5]
    )  # fmt: skip
    url = reverse("networks:operation_list")
    first = logged_in.get(url, {"status": "failed", "per_page": "25"})
    assert len(first.context["table"].rows) == 25
    rest = logged_in.get(url + _link(first.content.decode(), "next"))
    assert len(rest.context["table"].rows) == 5
    assert {row.record.status for row in rest.context["table"].rows} == {"failed"}


@pytest.mark.django_db
def test_a_networks_reservations_are_paginated_with_their_edit_links(logged_in):
    host = HostFactory(name="kvm1")
    network = Network.objects.create(host=host, name="lan", forward_mode="nat")
    ip = NetworkIp.objects.create(network=network, position=0, address="10.0.0.1", prefix=16, family="ipv4")
    DhcpReservation.objects.bulk_create(
        [DhcpReservation(network=network, ip=ip, address=f"10.0.1.{i}", mac=f"52:54:00:00:01:{i:02x}", name=f"r{i}")
         for i in range(10, 70)]
    )  # fmt: skip
    page = logged_in.get(network.get_absolute_url()).content.decode()
    assert "10.0.1.59" in page and "10.0.1.60" not in page
    edit = reverse("networks:network_edit", args=[network.pk, "ip-dhcp-host"])
    assert f'href="{edit}?command=modify&amp;key=52%3A54%3A00%3A00%3A01%3A0a">edit</a>' in page
    second = logged_in.get(network.get_absolute_url(), {"res-page": "2"}).content.decode()
    assert "10.0.1.60" in second and "10.0.1.69" in second and "10.0.1.59" not in second
