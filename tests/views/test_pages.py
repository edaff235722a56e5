import pytest
from django.urls import reverse

from networks.models import AuditEvent, Guest, Host, Network, Operation

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


def test_pages_use_a_bounded_number_of_queries(logged_in, demo_host, django_assert_max_num_queries):
    network = Network.objects.get(host=demo_host, name="default")
    for url in [reverse("networks:network_list"), network.get_absolute_url(), demo_host.get_absolute_url()]:
        with django_assert_max_num_queries(25):
            logged_in.get(url)


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
