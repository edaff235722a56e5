"""`/api/port-forwards/`: the contract of issue 9 (202 with the operation, 400 naming the field)."""

import pytest
from django.urls import reverse

from networks.models import AuditEvent, Guest, Host, Operation, PortForward
from tests.factories import HostFactory, UserFactory

LIST = "/api/port-forwards/"


@pytest.fixture
def host(demo_host):
    Host.objects.filter(pk=demo_host.pk).update(queue="demo-host")
    return Host.objects.get(pk=demo_host.pk)


@pytest.fixture
def api(client, db):
    client.force_login(UserFactory(username="op", role="operator"))
    return client


def guest_id(host, name="web01"):
    return Guest.objects.get(host=host, name=name).pk


def body(host, **values):
    return {"host": host.pk, "guest": guest_id(host), "host_port": 8080, "guest_port": 80, **values}


def post(api, data, url=LIST):
    return api.post(url, data, content_type="application/json")


def errors(response, field):
    assert response.status_code == 400, response.content
    return " ".join(response.json()[field])


def test_a_forward_is_created_and_answered_with_the_operation_that_applies_it(api, host):
    response = post(api, body(host, source_cidrs=["203.0.113.0/24"], comment="web", protocol="tcp"))
    assert response.status_code == 202, response.content
    data = response.json()
    operation = Operation.objects.get(kind="port_forward.create")
    assert data["operation"] == {"id": operation.pk, "status": "queued", "kind": "port_forward.create"}
    forward = data["port_forward"]
    assert (forward["host_port_start"], forward["host_port_end"], forward["guest_port_start"]) == (8080, 8080, 80)
    assert (forward["guest_name"], forward["guest_address"], forward["source_cidrs"]) == (
        "web01",
        "192.168.122.11",
        ["203.0.113.0/24"],
    )
    assert data["warnings"] == []
    assert (forward["state"], forward["live_state"]) == ("unknown", "worker_absent"), "no host worker reported yet"


def test_ranges_are_given_as_start_and_end(api, host):
    ranges = {"host_port_start": 8000, "host_port_end": 8009, "guest_port_start": 9000, "guest_port_end": 9009}
    response = post(api, {"host": host.pk, "guest": guest_id(host), **ranges})
    assert response.status_code == 202, response.content
    assert PortForward.objects.get().guest_ports == "9000-9009"


def test_a_guest_without_a_reservation_is_accepted_with_a_warning_and_the_link_to_reserve(api, host):
    response = post(api, body(host, guest=guest_id(host, "build01")))
    assert response.status_code == 202
    [warning] = response.json()["warnings"]
    assert "its address may change: reserve it" in warning["message"]
    assert "/edit/ip-dhcp-host/?mac=52%3A54%3A00%3A0c%3A00%3A41" in warning["link"]


def test_a_port_outside_1_to_65535_is_a_400_naming_it(api, host):
    assert "65535" in errors(post(api, body(host, host_port=65536)), "host_port")
    assert "1" in errors(post(api, body(host, guest_port=0)), "guest_port")


def test_a_range_moved_to_other_ports_longer_than_1024_is_a_400_and_nothing_is_saved(api, host):
    moved = {"host_port_start": 20000, "host_port_end": 21100, "guest_port_start": 30000, "guest_port_end": 31100}
    response = post(api, {"host": host.pk, "guest": guest_id(host), **moved})
    assert "at most 1024 ports long; this one has 1101" in errors(response, "guest_port")
    assert not PortForward.objects.exists() and not Operation.objects.filter(kind="port_forward.create").exists()


def test_a_port_and_a_range_together_are_refused(api, host):
    assert "not both" in errors(post(api, body(host, host_port_start=8080)), "host_port")


def test_ranges_of_different_length_are_refused(api, host):
    ranges = {"host_port_start": 8000, "host_port_end": 8001, "guest_port": 80}
    assert "same length" in errors(post(api, {"host": host.pk, "guest": guest_id(host), **ranges}), "guest_port")


def test_a_host_port_already_forwarded_is_refused_naming_that_forward(api, host):
    first = post(api, body(host)).json()["port_forward"]["id"]
    message = errors(post(api, body(host, guest=guest_id(host, "db01"))), "host_port")
    assert f"forward #{first}" in message


def test_source_cidrs_must_be_a_list_of_exact_ipv4_networks(api, host):
    assert "list" in errors(post(api, body(host, source_cidrs="10.0.0.0/8")), "source_cidrs")
    assert "not an IPv4 network" in errors(post(api, body(host, source_cidrs=["10.0.0.1/8"])), "source_cidrs")


def test_a_guest_not_on_a_nat_or_routed_network_is_refused_saying_why(api, host):
    message = errors(post(api, body(host, guest=guest_id(host, "nas01"))), "guest")
    assert "no interface on a NAT or routed network" in message


def test_a_host_without_a_host_worker_is_refused(api, demo_host):
    message = errors(post(api, body(demo_host)), "host")
    assert "host worker" in message and not PortForward.objects.exists()


@pytest.mark.parametrize(
    "data",
    [
        [],
        "x",
        5,
        None,
        {"host": [1]},
        {"protocol": ["tcp"]},
        {"host_port": 80.0},
        {"host_port": True},
        {"enabled": [True]},
        {"comment": {"a": 1}},
        {"source_cidrs": [["10.0.0.0/8"]]},
        {"source_cidrs": [5]},
        {"host_address": ["10.0.0.1"]},
        {"host_address": "10.0.0.1\x00"},
        {"guest": "web01"},
    ],
    ids=repr,
)
def test_any_json_type_where_another_is_expected_is_a_400(api, host, data):
    sent = data if not isinstance(data, dict) else {**body(host), **data}
    response = post(api, sent)
    assert response.status_code == 400, (data, response.status_code, response.content[:300])
    assert not PortForward.objects.exists()


def test_the_list_filters_by_host_and_guest(api, host, default_uri):
    post(api, body(host))
    post(api, body(host, guest=guest_id(host, "db01"), host_port=5432, guest_port=5432))
    HostFactory(name="other", uri=default_uri)
    by_guest = api.get(LIST, {"guest": guest_id(host, "db01")}).json()["results"]
    assert [f["guest_name"] for f in by_guest] == ["db01"]
    assert len(api.get(LIST, {"host": host.pk}).json()["results"]) == 2
    assert api.get(LIST, {"host": 99999}).status_code == 400


def test_a_guest_of_a_hidden_host_answers_like_a_missing_one(client, host):
    from networks.services.permissions import role_set

    HostFactory(name="other")
    user = UserFactory(username="scoped", role="viewer")
    role_set(user=user, role="operator", host_names=["other"], actor=None, source="system")
    client.force_login(user)
    hidden, missing = client.get(LIST, {"guest": guest_id(host)}), client.get(LIST, {"guest": 99999})
    assert hidden.status_code == missing.status_code == 400
    answer = post(client, body(host))
    assert answer.status_code == 400 and "does not exist" in answer.content.decode()


def test_patch_changes_only_what_it_names_and_answers_202(api, host):
    forward_id = post(api, body(host, comment="a")).json()["port_forward"]["id"]
    url = f"{LIST}{forward_id}/"
    response = api.patch(url, {"host_port": 8081, "enabled": False}, content_type="application/json")
    assert response.status_code == 202, response.content
    assert response.json()["operation"]["kind"] == "port_forward.update"
    forward = PortForward.objects.get()
    assert (forward.host_ports, forward.enabled, forward.comment, forward.guest_ports) == ("8081", False, "a", "80")
    assert api.patch(url, {"guest_port": [80]}, content_type="application/json").status_code == 400
    assert api.patch(url, [1], content_type="application/json").status_code == 400
    assert api.put(url, body(host), content_type="application/json").status_code == 405


def test_delete_answers_202_and_the_forward_is_gone(api, host):
    forward_id = post(api, body(host)).json()["port_forward"]["id"]
    response = api.delete(f"{LIST}{forward_id}/")
    assert response.status_code == 202
    assert response.json()["operation"]["kind"] == "port_forward.delete"
    assert not PortForward.objects.exists()
    assert api.get(f"{LIST}{forward_id}/").status_code == 404


def test_reapply_one_forward_or_a_whole_host(api, host):
    forward_id = post(api, body(host)).json()["port_forward"]["id"]
    one = post(api, {}, f"{LIST}{forward_id}/reapply/")
    every = post(api, {"host": host.pk}, reverse("api:port-forward-reapply-host"))
    assert (one.status_code, every.status_code) == (202, 202)
    assert Operation.objects.filter(kind="port_forward.reapply").count() == 2
    assert post(api, {"host": "demo"}, reverse("api:port-forward-reapply-host")).status_code == 400


def test_a_viewer_is_refused_with_the_role_needed_and_the_refusal_is_audited(client, host):
    client.force_login(UserFactory(username="watcher", role="viewer"))
    response = post(client, body(host))
    assert response.status_code == 403 and "operator" in response.json()["detail"]
    assert AuditEvent.objects.filter(action="port_forward.create.denied", actor_name="watcher").exists()
