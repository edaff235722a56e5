"""The pages' side of the audit log: refusals, failed logins and CSRF refusals leave an
event; the list filters by host name (removed hosts too) and exports what it shows."""

import csv
import io
import json

import pytest
from django import forms
from django.http import HttpResponse
from django.template import engines
from django.test import Client, RequestFactory
from django.urls import reverse

from networks.choices import AuditSource
from networks.middleware import RefusalAuditMiddleware
from networks.models import AuditEvent
from networks.services import hosts as host_services
from networks.services.audit import audit_record
from tests.factories import HostFactory, UserFactory


def _last_id() -> int:
    last = AuditEvent.objects.order_by("-id").first()
    return last.id if last else 0


def _events_since(last_id: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(id__gt=last_id).order_by("id"))


def _stored(event: AuditEvent) -> str:
    return json.dumps(AuditEvent.objects.filter(pk=event.pk).values().get(), default=str)


# ---------------------------------------------------------------- failed logins and CSRF


def test_a_failed_login_is_audited_with_the_username_tried_and_the_address(client, db):
    before = _last_id()
    response = client.post(
        reverse("login"), {"username": "mallory", "password": "Tr0ub4dor&3-secret"}, REMOTE_ADDR="203.0.113.9"
    )
    assert response.status_code == 200 and b"errorlist" in response.content
    (event,) = _events_since(before)
    assert (event.action, event.object_type, event.object_name) == ("user.login_failed", "user", "mallory")
    assert (event.client_address, event.actor_name, event.source) == ("203.0.113.9", "", "web")
    assert "Tr0ub4dor" not in _stored(event)


def test_a_failed_login_for_a_real_user_is_audited_too(client, admin):
    before = _last_id()
    client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    (event,) = _events_since(before)
    assert (event.action, event.object_name) == ("user.login_failed", "alice")


def test_a_csrf_refusal_is_audited_and_explained(admin):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    before = _last_id()
    response = client.post(reverse("networks:host_add"), {"name": "kvm9", "uri": "test:///default"})
    assert response.status_code == 403
    assert b"Form refused" in response.content and b"Reload the page" in response.content
    (event,) = _events_since(before)  # one event: the middleware does not add request.denied
    assert (event.action, event.actor_name, event.client_address) == ("request.csrf_failed", "alice", "127.0.0.1")
    assert event.detail == "POST /hosts/add/ refused (CSRF): CSRF cookie not set."


def test_an_anonymous_csrf_refusal_on_the_login_page_is_audited(db):
    before = _last_id()
    response = Client(enforce_csrf_checks=True).post(reverse("login"), {"username": "eve", "password": "x"})
    assert response.status_code == 403
    (event,) = _events_since(before)
    assert (event.action, event.actor_name, event.object_name) == ("request.csrf_failed", "", "/accounts/login/")


# ---------------------------------------------------------------- refusals by the pages


def test_a_page_refusal_by_role_is_audited_once(client, db):
    host = HostFactory(name="kvm1")
    client.force_login(UserFactory(username="victor", role="viewer"))
    before = _last_id()
    assert client.post(reverse("networks:host_sync", args=[host.pk])).status_code == 403
    assert [e.action for e in _events_since(before)] == ["host.sync.denied"]


class _PickForm(forms.Form):
    colour = forms.ChoiceField(choices=[("red", "Red")])


def _form_page_answering_400(request):
    """A page that answers 400 with its form's errors, as the pages may come to do."""
    form = _PickForm(request.POST)
    form.is_valid()
    return HttpResponse(engines["django"].from_string("<form>{{ form }}</form>").render({"form": form}), status=400)


def test_a_page_answering_400_is_audited_with_its_first_error_but_not_the_value(admin):
    request = RequestFactory().post("/somewhere/", {"colour": "ultraviolet-secret"}, REMOTE_ADDR="192.0.2.5")
    request.user = admin
    before = _last_id()
    response = RefusalAuditMiddleware(_form_page_answering_400)(request)
    assert response.status_code == 400 and b"ultraviolet-secret" in response.content  # Django quotes it
    (event,) = _events_since(before)
    assert (event.action, event.source, event.actor_name) == ("request.rejected", "web", "alice")
    assert (
        event.detail == "POST /somewhere/ answered 400: Select a valid choice. … is not one of the available choices."
    )
    assert "ultraviolet" not in _stored(event)


# ---------------------------------------------------------------- host filter and export


@pytest.fixture
def removed_host(admin):
    host = host_services.host_create(
        name="gone", uri="test:///default", actor=admin, source=AuditSource.WEB, sync=False
    )
    host_services.host_delete(host=host, actor=admin, source=AuditSource.WEB)
    stays = HostFactory(name="stays")
    audit_record(action="test.other", source=AuditSource.SYSTEM, object_type="host", host=stays)
    return host


def test_the_list_filters_by_a_removed_hosts_name(logged_in, removed_host):
    page = logged_in.get(reverse("networks:audit_list"))
    # The host field proposes the current hosts; a removed host's name is typed
    assert b'<option value="stays">' in page.content and b'list="audit-host-names"' in page.content
    response = logged_in.get(reverse("networks:audit_list"), {"host_name": "gone"})
    actions = [row.record.action for row in response.context["table"].rows]
    assert sorted(actions) == ["host.create", "host.delete"]


def test_the_list_links_exports_carrying_its_filters(logged_in, removed_host):
    response = logged_in.get(reverse("networks:audit_list"), {"host_name": "gone", "source": "web", "per_page": "25"})
    assert b'href="/audit/export.csv?host_name=gone&amp;source=web">Export CSV' in response.content
    assert b'href="/audit/export.jsonl?host_name=gone&amp;source=web">Export JSON lines' in response.content


def test_the_csv_export_holds_the_filtered_events(logged_in, removed_host):
    response = logged_in.get("/audit/export.csv?host_name=gone")
    assert response.status_code == 200 and response.streaming
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["action"], r["host_name"], r["actor_name"]) for r in rows] == [
        ("host.create", "gone", "alice"),
        ("host.delete", "gone", "alice"),
    ]


def test_the_jsonl_export_and_formula_cells(logged_in):
    audit_record(action="test.event", source=AuditSource.WEB, object_type="x", message="@cmd|' /C calc'!A0")
    jsonl = b"".join(logged_in.get("/audit/export.jsonl?action=test.").streaming_content).decode()
    assert json.loads(jsonl)["message"] == "@cmd|' /C calc'!A0"
    text = b"".join(logged_in.get("/audit/export.csv?action=test.").streaming_content).decode()
    (row,) = csv.DictReader(io.StringIO(text))
    assert row["message"] == "'@cmd|' /C calc'!A0"


def test_the_export_refuses_a_filter_it_cannot_read(logged_in, removed_host):
    before = _last_id()
    response = logged_in.get("/audit/export.csv?host=nowhere")
    assert response.status_code == 400 and b"host:" in response.content
    assert _last_id() == before  # a refused read is not audited
    assert logged_in.post("/audit/export.csv").status_code == 405
