"""Port forward pages on the demo fleet: lists with their live state, create/edit/delete with a
confirm, re-apply, the host worker notes, and what a viewer is offered."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from networks.choices import ForwardState
from networks.models import Guest, Host, Network, Operation, PortForward
from tests.factories import HostFactory, UserFactory


@pytest.fixture
def host(demo_host):
    Host.objects.filter(pk=demo_host.pk).update(queue="demo-host", worker_seen_at=timezone.now())
    return Host.objects.get(pk=demo_host.pk)


@pytest.fixture
def operator(client, db):
    user = UserFactory(username="op", role="operator")
    client.force_login(user)
    return user


def forward_to(host, name="web01", port=8080, **values):
    guest = Guest.objects.get(host=host, name=name)
    mac = guest.interfaces.order_by("position").first().mac
    return PortForward.objects.create(host=host, guest=guest, guest_name=name, guest_mac=mac, host_port_start=port,
                                      host_port_end=port, guest_port_start=80, guest_port_end=80,
                                      **values)  # fmt: skip


def form(host, name="web01", **values):
    guest = Guest.objects.get(host=host, name=name)
    return {"guest": guest.pk, "protocol": "tcp", "host_ports": "8080", "guest_ports": "80", "enabled": "on", **values}


def test_the_host_page_lists_its_forwards_with_their_live_state(client, operator, host):
    forward_to(host, state=ForwardState.PRESENT)
    forward_to(host, name="build01", port=2222, state=ForwardState.GUEST_STOPPED)
    page = client.get(host.get_absolute_url()).content.decode()
    assert "tcp/8080 → 80" in page and "Rules present" in page
    assert "tcp/2222 → 80" in page and "Guest stopped (applies at its next start)" in page
    assert "Add port forward…" in page and "Re-apply all" in page


def test_a_silent_host_worker_shows_on_every_forward(client, operator, host):
    Host.objects.filter(pk=host.pk).update(worker_seen_at=timezone.now() - timedelta(hours=1))
    forward_to(host, state=ForwardState.PRESENT)
    page = client.get(host.get_absolute_url()).content.decode()
    assert "Rules present" not in page, "a state nobody keeps current is not shown as current"
    assert page.count("Host worker absent") >= 2  # the note and the forward's state


def test_a_host_without_a_host_worker_says_forwards_need_it(client, operator, demo_host):
    page = client.get(demo_host.get_absolute_url()).content.decode()
    assert "Port forwards need demo's host worker" in page and "scripts/host-worker.sh demo" in page
    assert "Add port forward…" not in page


def test_the_form_from_a_guests_page_has_that_guest_chosen(client, operator, host):
    db01 = Guest.objects.get(host=host, name="db01")
    page = client.get(reverse("networks:port_forward_create", args=[host.pk]), {"guest": db01.pk}).content.decode()
    assert f'<option value="{db01.pk}" selected>db01</option>' in page


def test_creating_a_forward_from_the_page_queues_it_and_shows_its_page(client, operator, host):
    response = client.post(reverse("networks:port_forward_create", args=[host.pk]), form(host, comment="site"))
    forward = PortForward.objects.get()
    assert response.status_code == 302 and response.url == forward.get_absolute_url()
    assert Operation.objects.filter(kind="port_forward.create", host=host).exists()
    assert (forward.comment, forward.guest_address) == ("site", "192.168.122.11")


def test_the_page_of_a_forward_to_an_unreserved_guest_links_to_reserving_it(client, operator, host):
    response = client.post(reverse("networks:port_forward_create", args=[host.pk]), form(host, "build01"), follow=True)
    page = response.content.decode()
    assert "its address may change: reserve it" in page
    routed = Network.objects.get(host=host, name="routed")
    assert f'href="/networks/{routed.pk}/edit/ip-dhcp-host/?mac=52%3A54%3A00%3A0c%3A00%3A41' in page


def test_a_refused_forward_shows_the_reason_on_its_field_and_saves_nothing(client, operator, host):
    existing = forward_to(host)
    response = client.post(reverse("networks:port_forward_create", args=[host.pk]), form(host, "db01"))
    assert response.status_code == 200
    assert f"by forward #{existing.pk}" in response.content.decode()
    assert PortForward.objects.count() == 1 and not Operation.objects.filter(kind__startswith="port_").exists()


def test_ports_the_form_cannot_read_are_refused(client, operator, host):
    response = client.post(reverse("networks:port_forward_create", args=[host.pk]), form(host, host_ports="80:90"))
    assert "Give a port (8080) or a range (8000-8009)." in response.content.decode()


def test_editing_a_forward_saves_it_and_asks_for_an_update(client, operator, host):
    forward = forward_to(host)
    page = client.get(reverse("networks:port_forward_edit", args=[forward.pk])).content.decode()
    assert 'value="8080"' in page, "the form shows the forward as it is"
    client.post(reverse("networks:port_forward_edit", args=[forward.pk]), form(host, host_ports="8081"))
    forward.refresh_from_db()
    assert forward.host_ports == "8081"
    assert Operation.objects.filter(kind="port_forward.update").exists()


def test_deleting_asks_first_then_removes_it(client, operator, host):
    forward = forward_to(host)
    url = reverse("networks:port_forward_delete", args=[forward.pk])
    assert "Delete port forward tcp/8080 → web01:80" in client.get(url).content.decode()
    assert PortForward.objects.exists(), "showing the confirm changes nothing"
    response = client.post(url, {"message": "no longer needed"})
    assert response.status_code == 302 and not PortForward.objects.exists()
    assert Operation.objects.get(kind="port_forward.delete").message == "no longer needed"


def test_reapply_from_a_forward_and_from_its_host(client, operator, host):
    forward = forward_to(host)
    client.post(reverse("networks:port_forward_reapply", args=[forward.pk]))
    client.post(reverse("networks:host_port_forwards_reapply", args=[host.pk]))
    assert Operation.objects.filter(kind="port_forward.reapply").count() == 2


def test_the_fleet_list_filters_by_host_and_guest(client, operator, host, default_uri):
    forward_to(host)
    forward_to(host, name="db01", port=5432)
    other = HostFactory(name="other", uri=default_uri)
    elsewhere = Guest.objects.create(host=other, name="elsewhere")
    PortForward.objects.create(host=other, guest=elsewhere, guest_name="elsewhere", guest_mac="52:54:00:00:00:99",
                               host_port_start=7777, host_port_end=7777, guest_port_start=7,
                               guest_port_end=7)  # fmt: skip
    url = reverse("networks:port_forward_list")
    everything = client.get(url).content.decode()
    assert "tcp/8080" in everything and "tcp/7777" in everything
    on_demo = client.get(url, {"host": host.pk}).content.decode()
    assert "tcp/8080" in on_demo and "tcp/7777" not in on_demo
    db01 = Guest.objects.get(host=host, name="db01")
    to_db01 = client.get(url, {"guest": db01.pk}).content.decode()
    assert "tcp/5432" in to_db01 and "tcp/8080" not in to_db01


def test_a_viewer_reads_forwards_but_is_offered_no_change(client, host):
    client.force_login(UserFactory(username="watcher", role="viewer"))
    forward = forward_to(host)
    for url in (host.get_absolute_url(), forward.get_absolute_url()):
        page = client.get(url).content.decode()
        assert "tcp/8080" in page
        for offer in ("Add port forward…", "Re-apply", "Edit…", "Delete…"):
            assert offer not in page
    assert client.get(reverse("networks:port_forward_create", args=[host.pk])).status_code == 403


def test_the_restart_confirm_lists_the_forwards_it_reapplies(client, operator, host):
    forward_to(host)
    network = Network.objects.get(host=host, name="default")
    page = client.get(reverse("networks:network_restart", args=[network.pk])).content.decode()
    assert "re-applied and verified after the re-plug" in page and "tcp/8080 → web01:80" in page


def test_the_guest_part_lists_the_guests_forwards_and_offers_a_new_one(rf, operator, host):
    from django.template.loader import render_to_string

    from networks.services.permissions import allowed_actions

    forward_to(host, state=ForwardState.PRESENT)
    web01 = Guest.objects.get(host=host, name="web01")
    request = rf.get(web01.get_absolute_url())
    request.user = operator
    context = {"guest": web01, "may": allowed_actions(operator, host)}
    html = render_to_string("networks/_guest_port_forwards.html", context, request=request)
    assert "tcp/8080 → 80" in html and "Rules present" in html
    assert f"/hosts/{host.pk}/port-forwards/add/?guest={web01.pk}" in html
    Host.objects.filter(pk=host.pk).update(queue="")
    web01 = Guest.objects.select_related("host").get(pk=web01.pk)
    html = render_to_string("networks/_guest_port_forwards.html", {**context, "guest": web01}, request=request)
    assert "Port forwards need demo's host worker" in html and "Forward a port to" not in html
