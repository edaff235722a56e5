"""The API side of the audit log: refused writes leave an event, and the log exports."""

import csv
import io
import json

import pytest
from rest_framework.test import APIClient

from networks.choices import AuditSource
from networks.models import AuditEvent, Host
from networks.services import hosts as host_services
from networks.services.audit import audit_record
from networks.services.permissions import role_set
from tests.factories import HostFactory, UserFactory


def _client(user, **kwargs) -> APIClient:
    client = APIClient(**kwargs)
    client.force_authenticate(user=user)
    return client


def _only_event_since(last_id: int) -> AuditEvent:
    (event,) = AuditEvent.objects.filter(id__gt=last_id)
    return event


def _last_id() -> int:
    last = AuditEvent.objects.order_by("-id").first()
    return last.id if last else 0


# ---------------------------------------------------------------- refusals


def test_a_rejected_write_is_audited_with_who_where_and_why_but_not_the_values(admin):
    host = HostFactory(name="kvm1")
    before = _last_id()
    response = _client(admin).post(
        "/api/networks/",
        {"host": host.pk, "name": "lab", "mode": "hunter2-not-a-mode", "message": "my secret reason"},
        format="json",
        REMOTE_ADDR="192.0.2.44",
    )
    assert response.status_code == 400 and "hunter2-not-a-mode" in response.json()["mode"][0]
    event = _only_event_since(before)
    assert (event.action, event.source, event.actor_name) == ("request.rejected", "api", "alice")
    assert (event.client_address, event.object_name) == ("192.0.2.44", "/api/networks/")
    assert event.detail.startswith("POST /api/networks/ answered 400: mode: ")
    assert "is not a valid choice" in event.detail
    stored = json.dumps(AuditEvent.objects.filter(pk=event.pk).values().get(), default=str)
    assert "hunter2" not in stored and "my secret reason" not in stored


def test_a_malformed_body_is_audited(admin):
    before = _last_id()
    response = _client(admin).post("/api/hosts/", "{not json", content_type="application/json")
    assert response.status_code == 400
    event = _only_event_since(before)
    assert event.action == "request.rejected" and "JSON parse error" in event.detail


def test_a_long_reason_is_cut(admin):
    before = _last_id()
    response = _client(admin).post("/api/hosts/", {"name": "x" * 5000, "uri": "test:///default"}, format="json")
    assert response.status_code == 400
    event = _only_event_since(before)
    reason = event.detail.split(": ", 1)[1]
    assert reason.startswith("name: ") and len(reason) <= 200


def test_a_refusal_by_role_is_audited_once(db):
    host = HostFactory(name="kvm1")
    viewer = UserFactory(username="victor", role="viewer")
    before = _last_id()
    response = _client(viewer).post(f"/api/hosts/{host.pk}/sync/")
    assert response.status_code == 403
    event = _only_event_since(before)  # authorize's event; the middleware adds none
    assert (event.action, event.actor_name) == ("host.sync.denied", "victor")


def test_a_refusal_outside_authorize_is_audited(admin):
    """A session without its CSRF token: DRF refuses it (403) before any service runs."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(admin)
    before = _last_id()
    response = client.post("/api/hosts/", {"name": "kvm9", "uri": "test:///default"}, format="json")
    assert response.status_code == 403 and not Host.objects.filter(name="kvm9").exists()
    event = _only_event_since(before)
    assert (event.action, event.actor_name, event.client_address) == ("request.denied", "alice", "127.0.0.1")
    assert event.detail == "POST /api/hosts/ answered 403: CSRF Failed: CSRF cookie not set."


def test_reads_that_fail_are_not_audited(admin):
    before = _last_id()
    assert _client(admin).get("/api/audit/?host=999999").status_code == 400
    assert _last_id() == before


# ---------------------------------------------------------------- host filter and export


@pytest.fixture
def removed_host_events(admin):
    host = host_services.host_create(
        name="gone", uri="test:///default", actor=admin, source=AuditSource.API, sync=False
    )
    host_services.host_delete(host=host, actor=admin, source=AuditSource.API)
    HostFactory(name="stays")
    audit_record(
        action="test.other", source=AuditSource.SYSTEM, object_type="host", host=Host.objects.get(name="stays")
    )
    return host


def test_host_name_finds_a_removed_hosts_events(admin, removed_host_events):
    events = _client(admin).get("/api/audit/?host_name=gone").json()["results"]
    assert sorted(e["action"] for e in events) == ["host.create", "host.delete"]


def _csv(response) -> list[dict]:
    assert response.streaming
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_export_csv_takes_the_lists_filters(admin, removed_host_events):
    response = _client(admin).get("/api/audit/export.csv?host_name=gone")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert 'filename="kvmweb-audit.csv"' in response["Content-Disposition"]
    rows = _csv(response)
    assert [r["action"] for r in rows] == ["host.create", "host.delete"]  # oldest first
    assert rows[0]["host_name"] == "gone" and len(rows[0]["chain_hash"]) == 64


def test_export_jsonl_keeps_every_value_exactly(admin):
    audit_record(action="test.event", source=AuditSource.API, object_type="x", message="=1+1", detail='tab\t"q"')
    response = _client(admin).get("/api/audit/export.jsonl?action=test.")
    assert response["Content-Type"].startswith("application/x-ndjson")
    lines = b"".join(response.streaming_content).decode().splitlines()
    (record,) = [json.loads(line) for line in lines]
    assert (record["message"], record["detail"], record["source"]) == ("=1+1", 'tab\t"q"', "api")


@pytest.mark.parametrize("payload", ['=HYPERLINK("http://x")', "+1", "-1+2", "@SUM(A1)", "\tcmd", "\rcmd"])
def test_export_csv_cells_cannot_run_as_formulas(admin, payload):
    audit_record(action="test.event", source=AuditSource.API, object_type="x", object_name=payload, message=payload)
    (row,) = _csv(_client(admin).get("/api/audit/export.csv?action=test."))
    assert row["object_name"] == "'" + payload and row["message"] == "'" + payload


def test_export_refuses_a_filter_it_cannot_read(admin):
    response = _client(admin).get("/api/audit/export.csv?host=abc")
    assert response.status_code == 400 and "host" in response.json()


def test_export_ignores_the_clients_accept_header_and_format_parameter(admin):
    client = _client(admin)
    assert client.get("/api/audit/export.csv?format=xml", HTTP_ACCEPT="application/xml").status_code == 200
    assert client.get("/api/audit/export.xlsx").status_code == 404


def test_export_shows_only_the_hosts_in_the_users_scope(admin):
    mine, other = HostFactory(name="mine"), HostFactory(name="other")
    for host in (mine, other):
        audit_record(action="test.event", source=AuditSource.SYSTEM, object_type="host", host=host)
    scoped = UserFactory(username="scoped", role="viewer")
    role_set(user=scoped, role="viewer", host_names=["mine"], actor=None, source="system")
    rows = _csv(_client(scoped).get("/api/audit/export.csv?action=test."))
    assert [r["host_name"] for r in rows] == ["mine"]


def test_anonymous_clients_cannot_export(db):
    assert APIClient().get("/api/audit/export.csv").status_code == 401
