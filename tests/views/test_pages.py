import libvirt
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from networks.hypervisor import client, inventory
from networks.models import AuditEvent, Guest, Host, Network, Operation
from networks.services.sync import mirror_host

PAGES = [
    ("networks:dashboard", None),
    ("networks:host_list", None),
    ("networks:host_add", None),
    ("networks:network_list", None),
    ("networks:guest_list", None),
    ("networks:device_list", None),
    ("networks:operation_list", None),
    ("networks:audit_list", None),
]


def _detail_urls(host):
    network = Network.objects.get(host=host, name="default")
    return [
        reverse("networks:host_detail", args=[host.pk]),
        reverse("networks:network_detail", args=[network.pk]),
        reverse("networks:network_stop", args=[network.pk]),
        reverse("networks:network_undefine", args=[network.pk]),
        reverse("networks:guest_detail", args=[Guest.objects.get(name="web01").pk]),
        reverse("networks:operation_detail", args=[Operation.objects.first().pk]),
        reverse("networks:operation_progress", args=[Operation.objects.first().pk]),
        reverse("networks:audit_detail", args=[AuditEvent.objects.first().pk]),
        reverse("networks:host_delete", args=[host.pk]),
    ]


@pytest.mark.parametrize(("name", "args"), PAGES)
def test_anonymous_users_are_sent_to_the_login_page(client, db, name, args):
    response = client.get(reverse(name, args=args))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_every_page_renders_and_no_get_changes_anything(logged_in, demo_host):
    counts = (Operation.objects.count(), AuditEvent.objects.count(), Host.objects.count())
    for url in [reverse(name, args=args) for name, args in PAGES] + _detail_urls(demo_host):
        assert logged_in.get(url).status_code == 200, url
    assert (Operation.objects.count(), AuditEvent.objects.count(), Host.objects.count()) == counts


def test_the_network_page_shows_what_the_host_has(logged_in, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    page = logged_in.get(network.get_absolute_url()).content.decode()
    for expected in ["192.168.122.1/24", "52:54:00:0a:00:11", "web01", "virbr0", "&lt;network"]:
        assert expected in page


def _grow(conn, start: int, count: int) -> None:
    """`count` more networks, guests and reservations on the demo host (the test driver)."""
    default = conn.networkLookupByName("default")
    for n in range(start, start + count):
        conn.networkDefineXML(
            f"<network><name>grow{n}</name><bridge name='gr{n}'/>"
            f"<ip address='10.{n}.0.1' netmask='255.255.255.0'><dhcp><host mac='52:54:00:77:00:{n:02x}' "
            f"ip='10.{n}.0.5' name='h{n}'/></dhcp></ip></network>"
        ).create()
        conn.defineXML(
            f"<domain type='test'><name>vm{n}</name><memory>1024</memory><os><type>hvm</type></os><devices>"
            f"<interface type='network'><mac address='52:54:00:78:00:{n:02x}'/><source network='default'/>"
            "</interface></devices></domain>"
        )
        default.update(
            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, 0,
            f"<host mac='52:54:00:79:00:{n:02x}' ip='192.168.122.{100 + n}' name='r{n}'/>",
            libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
        )  # fmt: skip


def _queries(logged_in, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert logged_in.get(url).status_code == 200, url
    return len(queries)


def test_a_page_makes_as_many_queries_for_3n_rows_as_for_n(logged_in, demo_host, demo_uri):
    conn = client.connect(demo_uri)
    network = Network.objects.get(host=demo_host, name="default")
    urls = [
        reverse("networks:network_list"),
        reverse("networks:guest_list"),
        network.get_absolute_url(),
        demo_host.get_absolute_url(),
    ]
    _grow(conn, 1, 5)
    mirror_host(demo_host, inventory.read_host(conn))
    at_n = {url: _queries(logged_in, url) for url in urls}
    _grow(conn, 6, 10)
    mirror_host(demo_host, inventory.read_host(conn))
    assert network.dhcp_reservations.count() == 3 + 15 and demo_host.networks.count() == 7 + 15
    at_3n = {url: _queries(logged_in, url) for url in urls}
    assert at_3n == at_n


def test_sync_now_is_post_only_and_creates_an_operation(logged_in, demo_host):
    url = reverse("networks:host_sync", args=[demo_host.pk])
    assert logged_in.get(url).status_code == 405
    response = logged_in.post(url)
    assert response.status_code == 302
    operation = Operation.objects.filter(kind="host.sync").first()
    assert operation.status == "queued" and operation.requested_by_name == "alice"
    assert AuditEvent.objects.filter(action="host.sync.requested", source="web", actor_name="alice").exists()


def test_stopping_asks_first_and_names_the_guests_that_lose_connectivity(logged_in, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    url = reverse("networks:network_stop", args=[network.pk])
    page = logged_in.get(url).content.decode()
    assert "will lose connectivity" in page and "web01" in page
    assert not Operation.objects.filter(kind="network.stop").exists()
    logged_in.post(url, {"message": "kernel update"})
    operation = Operation.objects.get(kind="network.stop")
    assert operation.message == "kernel update" and operation.network == network


def test_adding_a_host_with_a_forbidden_uri_shows_the_error_and_adds_nothing(logged_in, db):
    response = logged_in.post(
        reverse("networks:host_add"), {"name": "evil", "uri": "qemu+ext:///system?command=/bin/sh"}
    )
    assert response.status_code == 200
    assert "not allowed" in response.content.decode()
    assert not Host.objects.filter(name="evil").exists()


def test_adding_a_host_queues_its_first_sync(logged_in, db):
    response = logged_in.post(reverse("networks:host_add"), {"name": "kvm1", "uri": "qemu+ssh://root@kvm1/system"})
    host = Host.objects.get(name="kvm1")
    assert response.url == host.get_absolute_url()
    assert host.operations.get().kind == "host.sync"


def test_the_progress_fragment_polls_while_active_and_stops_when_done(logged_in, demo_host):
    queued = Operation.objects.create(kind="host.sync", host=demo_host, host_name="demo", lock_key="x")
    url = reverse("networks:operation_progress", args=[queued.pk])
    assert 'hx-trigger="every 1s"' in logged_in.get(url).content.decode()
    done = Operation.objects.filter(status="succeeded").first()
    response = logged_in.get(reverse("networks:operation_progress", args=[done.pk]) + "?refresh=1")
    assert "hx-trigger" not in response.content.decode()
    assert response["HX-Refresh"] == "true"


def test_network_list_filters_by_mode_state_and_name(logged_in, demo_host):
    url = reverse("networks:network_list")
    page = logged_in.get(url, {"mode": "bridge"}).content.decode()
    assert "lan-bridge" in page and "dualstack" not in page
    page = logged_in.get(url, {"q": "dual"}).content.decode()
    assert "dualstack" in page and "lan-bridge" not in page


def test_pages_say_when_the_host_was_last_synced_not_when_a_row_last_changed(logged_in, demo_host):
    from datetime import UTC, datetime

    Host.objects.filter(pk=demo_host.pk).update(last_sync_at=datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC))
    changed = datetime(2025, 11, 12, 13, 14, 15, tzinfo=UTC)  # when the rows were last written
    Network.objects.filter(host=demo_host).update(synced_at=changed, leases_known=True)
    Guest.objects.filter(host=demo_host).update(synced_at=changed)
    routed = Network.objects.get(host=demo_host, name="routed")  # no running guest uses it

    def page(name: str, pk: int) -> str:
        return logged_in.get(reverse(f"networks:{name}", args=[pk])).content.decode()

    pages = {
        "network": page("network_detail", routed.pk),
        "stop": page("network_stop", routed.pk),
        "guest": page("guest_detail", Guest.objects.get(name="web01").pk),
    }
    assert "As of the host's last sync (2026-02-03 04:05:06)." in pages["network"]
    assert "as of the host's last sync, 2026-02-03 04:05:06" in pages["stop"]
    assert "host last synced 2026-02-03 04:05:06" in pages["guest"]
    assert all("2025-11-12" not in page and "13:14:15" not in page for page in pages.values())
