"""The guest interface pages: form, preview (XML and what the running guest notices), confirm."""

import pytest
from django.urls import reverse

from networks.models import AuditEvent, Guest, Operation
from tests.conftest import run_to_end
from tests.factories import UserFactory


@pytest.fixture
def operator(client, db):
    client.force_login(UserFactory(username="op", role="operator"))
    return client


def _guest(host, name):
    return Guest.objects.get(host=host, name=name)


def _add_url(guest):
    return reverse("networks:guest_interface_add", args=[guest.pk])


def test_the_add_form_offers_the_hosts_networks_and_nics(operator, demo_host):
    page = operator.get(_add_url(_guest(demo_host, "build01"))).content.decode()
    assert '<datalist id="interface-sources">' in page
    for name in ("default", "lan-bridge", "eth1"):
        assert f'<option value="{name}">' in page
    assert "the persistent config (the guest is not running)" in page and "running guest only" not in page


def test_adding_previews_then_applies_with_the_previewed_mac(operator, demo_host):
    build01 = _guest(demo_host, "build01")
    form = {"source_type": "network", "source": "default", "model": "e1000", "link": "up", "scope": "config"}
    preview = operator.post(_add_url(build01), form)
    page = preview.content.decode()
    assert preview.status_code == 200 and "Persistent config only: the guest sees it at its next start." in page
    mac = preview.context["plan"].mac
    assert f'name="previewed_mac" value="{mac}"' in page and not Operation.objects.filter(kind__startswith="guest.")
    confirmed = operator.post(_add_url(build01), {**form, "confirm": "1", "previewed_mac": mac})
    operation = Operation.objects.get(kind="guest.interface_add")
    assert confirmed.status_code == 302 and confirmed["Location"] == operation.get_absolute_url()
    assert run_to_end(operation.pk).status == "succeeded"
    assert build01.interfaces.get(mac=mac).model == "e1000"


def test_a_bad_field_is_shown_and_nothing_is_queued(operator, demo_host):
    page = operator.post(_add_url(_guest(demo_host, "build01")), {"source": "nosuch", "scope": "config"})
    assert "Host demo has no network &#x27;nosuch&#x27;" in page.content.decode()
    assert not Operation.objects.filter(kind__startswith="guest.").exists()


def test_the_edit_form_starts_from_the_interface_and_says_what_the_guest_notices(operator, demo_host):
    web01 = _guest(demo_host, "web01")
    url = reverse("networks:guest_interface_edit", args=[web01.pk, "52:54:00:0a:00:11"])
    form = operator.get(url).context["form"]
    assert (form.initial["source"], form.initial["portgroup"], form.initial["inbound_average"]) == (
        "default",
        "prod",
        "2048",
    )
    unchanged = dict(form.initial)
    link = operator.post(url, {**unchanged, "link": "down", "scope": "both"})
    plan = link.context["plan"]
    assert plan.changes == {"link": "down"} and plan.effect.startswith("In-place update, the guest sees nothing.")
    assert "Its link goes down" in link.content.decode()
    model = operator.post(url, {**unchanged, "model": "e1000", "scope": "both"})
    assert "Hot-unplug + plug: the guest sees a new NIC and must re-DHCP." in model.content.decode()
    assert '<span class="add">+  &lt;model type=&quot;e1000&quot;/&gt;</span>' in model.content.decode()


def test_removing_previews_the_unplug_then_queues_it(operator, demo_host):
    web01 = _guest(demo_host, "web01")
    url = reverse("networks:guest_interface_remove", args=[web01.pk, "52:54:00:0a:01:11"])
    page = operator.get(url).content.decode()
    assert "Hot-unplug: the guest loses this NIC at once." in page
    assert not Operation.objects.filter(kind__startswith="guest.").exists()
    confirmed = operator.post(url, {"confirm": "1", "scope": "config", "message": "not needed"})
    operation = Operation.objects.get(kind="guest.interface_remove")
    assert confirmed.status_code == 302 and operation.params["scope"] == "config"
    assert AuditEvent.objects.get(operation=operation).message == "not needed"


def test_an_unknown_or_malformed_mac_is_not_found(operator, demo_host):
    web01 = _guest(demo_host, "web01")
    for mac in ("52:54:00:99:99:99", "nonsense"):
        assert operator.get(reverse("networks:guest_interface_edit", args=[web01.pk, mac])).status_code == 404
        assert operator.get(reverse("networks:guest_interface_remove", args=[web01.pk, mac])).status_code == 404


def test_a_viewer_is_refused_the_forms(client, demo_host):
    client.force_login(UserFactory(username="watcher", role="viewer"))
    build01 = _guest(demo_host, "build01")
    assert client.get(_add_url(build01)).status_code == 403
    assert client.post(_add_url(build01), {"source": "default"}).status_code == 403
    assert AuditEvent.objects.filter(action="guest.interface_add.denied", actor_name="watcher").count() == 2
