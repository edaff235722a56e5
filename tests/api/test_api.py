import pytest
from rest_framework.test import APIClient

from networks.models import AuditEvent, Host, Network, Operation
from networks.services.audit import audit_record
from networks.services.operations import operation_run


@pytest.mark.parametrize("path", ["/api/hosts/", "/api/networks/", "/api/guests/", "/api/operations/", "/api/audit/"])
def test_anonymous_api_calls_get_401(db, path):
    assert APIClient().get(path).status_code == 401


def test_network_detail_follows_the_contract(api, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    body = api.get(f"/api/networks/{network.pk}/").json()
    assert body["name"] == "default" and body["host"] == demo_host.pk
    assert body["forward_mode"] == "nat" and body["bridge"] == "virbr0"
    assert body["active"] is True and "autostart" in body and body["persistent"] is True
    ip = body["ips"][0]
    assert (ip["address"], ip["prefix"], ip["family"]) == ("192.168.122.1", 24, "ipv4")
    assert ip["dhcp_ranges"][0]["start"] == "192.168.122.2"
    assert any(h["mac"] == "52:54:00:0a:00:11" and h["ip"].startswith("192.168.122.") for h in ip["dhcp_hosts"])
    assert len(body["dhcp_hosts"]) == network.dhcp_reservations.count()
    assert all({"mac", "ip", "name"} <= set(h) for h in body["dhcp_hosts"])


def test_networks_filter_by_host_and_name(api, demo_host):
    other = Host.objects.create(name="other", uri="test:///default")
    Network.objects.create(host=other, name="default")
    results = api.get("/api/networks/", {"host": demo_host.pk, "name": "default"}).json()["results"]
    assert [(n["name"], n["host"]) for n in results] == [("default", demo_host.pk)]


def test_guests_carry_their_interfaces(api, demo_host):
    results = api.get("/api/guests/", {"name": "web01"}).json()["results"]
    assert [i["source"] for i in results[0]["interfaces"]] == ["default", "isolated"]


def test_lifecycle_writes_answer_202_with_an_operation_to_watch(api, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    response = api.post(f"/api/networks/{network.pk}/stop/", {"message": "maintenance"}, format="json")
    assert response.status_code == 202
    op_id = response.json()["operation"]["id"]
    assert response.json()["operation"]["status"] == "queued"
    operation_run(op_id)
    body = api.get(f"/api/operations/{op_id}/").json()
    assert body["status"] == "succeeded" and body["progress"] == 100 and "Stopping" in body["log"]
    assert AuditEvent.objects.filter(action="network.stop.requested", source="api", message="maintenance").exists()


def test_autostart_needs_a_boolean_and_bad_input_creates_no_operation(api, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    before = Operation.objects.count()
    response = api.post(f"/api/networks/{network.pk}/autostart/", {}, format="json")
    assert response.status_code == 400 and "enabled" in response.json()
    assert Operation.objects.count() == before
    response = api.post(f"/api/networks/{network.pk}/autostart/", {"enabled": True}, format="json")
    assert response.status_code == 202 and Operation.objects.get(pk=response.json()["operation"]["id"]).params == {
        "enabled": True
    }


def test_hosts_can_be_added_synced_and_removed(api, db):
    response = api.post("/api/hosts/", {"name": "kvm1", "uri": "qemu+tls://kvm1.example/system"}, format="json")
    assert response.status_code == 201 and response.json()["operation"]["kind"] == "host.sync"
    host_id = response.json()["id"]
    assert api.post(f"/api/hosts/{host_id}/sync/").status_code == 202
    assert api.delete(f"/api/hosts/{host_id}/").status_code == 204
    assert not Host.objects.filter(pk=host_id).exists()
    assert AuditEvent.objects.filter(action="host.delete", object_name="kvm1").exists()


def test_a_forbidden_uri_is_a_field_error(api, db):
    response = api.post("/api/hosts/", {"name": "x", "uri": "qemu+ssh://h/system?command=sh"}, format="json")
    assert response.status_code == 400 and "uri" in response.json()
    assert not Host.objects.exists() and not Operation.objects.exists()


def test_create_network_validates_before_queueing(api, demo_host):
    bad = api.post("/api/networks/", {"host": demo_host.pk, "name": "lab", "ipv4": "nope"}, format="json")
    assert bad.status_code == 400 and "ipv4" in bad.json()
    good = api.post("/api/networks/", {"host": demo_host.pk, "name": "lab", "ipv4": "10.5.0.1/24"}, format="json")
    assert good.status_code == 202


def test_audit_log_lists_events_newest_first(api, demo_host):
    for step in ("first", "second", "third"):
        audit_record(action=f"test.{step}", source="api", object_type="host", object_name="demo", host=demo_host)
    events = api.get("/api/audit/").json()["results"]
    assert [e["action"] for e in events[:3]] == ["test.third", "test.second", "test.first"]
    assert len(events) == AuditEvent.objects.count() > 3
    stamps = [e["created_at"] for e in events]
    assert stamps == sorted(stamps, reverse=True)
    assert events[3]["action"] == "host.sync.succeeded"  # the demo host's first sync came before
    assert {"actor_name", "source", "action", "before_xml", "after_xml", "operation"} <= set(events[0])


def test_the_openapi_schema_is_served_to_logged_in_clients(api, db):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert "/api/networks/{id}/start/" in response.json()["paths"]
    assert APIClient().get("/api/schema/").status_code == 401
