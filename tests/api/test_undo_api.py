"""POST /api/audit/{id}/undo/ [?dry_run=1]: the plan, the operation, and every refusal."""

import pytest
from rest_framework.test import APIClient

from networks.choices import OperationStatus
from networks.hypervisor import client
from networks.models import AuditEvent, Guest, Network, Operation
from networks.services.interfaces import guest_interface_request
from networks.services.netupdate import network_request_update
from networks.services.operations import operation_run
from networks.services.permissions import role_set
from tests.factories import HostFactory, UserFactory


@pytest.fixture
def event(demo_host, admin):
    """The outcome event of a reservation added to `default`."""
    operation = network_request_update(
        network=Network.objects.get(host=demo_host, name="default"), section="ip-dhcp-host", command="add-last",
        values={"mac": "52:54:00:77:00:01", "ip": "192.168.122.77", "name": "undome"}, actor=admin, source="web",
    )  # fmt: skip
    assert operation_run(operation.pk).status == OperationStatus.SUCCEEDED
    return AuditEvent.objects.get(operation=operation, action="network.update.succeeded")


@pytest.fixture
def host_xml(demo_uri):
    return lambda: client.connect(demo_uri).networkLookupByName("default").XMLDesc(0)


def _as(role: str) -> APIClient:
    api = APIClient()
    api.force_authenticate(UserFactory(username=f"u-{role}", role=role))
    return api


def _undo(api, event, body=None, query=""):
    return api.post(f"/api/audit/{event.pk}/undo/{query}", {} if body is None else body, format="json")


def _undo_operations():
    return Operation.objects.filter(kind="network.undo")


def test_a_dry_run_answers_the_plan_and_changes_nothing(api, event, host_xml):
    before, events = host_xml(), AuditEvent.objects.count()
    response = _undo(api, event, query="?dry_run=1")
    assert response.status_code == 200, response.content
    plan = response.json()
    assert plan["undoes"] == event.pk and plan["method"] == "live" and plan["network_name"] == "default"
    assert [(u["section"], u["command"]) for u in plan["live_updates"]] == [("ip-dhcp-host", "delete")]
    assert plan["actions"] == ["network.undo", "network.update.ip-dhcp-host"]
    assert plan["restart"] is None and plan["changed_since"] is False and plan["scope"] == "both"
    assert host_xml() == before and not _undo_operations().exists() and AuditEvent.objects.count() == events


def test_an_undo_answers_202_with_the_operation_and_the_plan(api, event, host_xml):
    response = _undo(api, event, {"message": "wrong MAC"})
    assert response.status_code == 202, response.content
    body = response.json()
    operation = Operation.objects.get(pk=body["operation"]["id"])
    assert body["operation"]["kind"] == "network.undo" and body["plan"]["method"] == "live"
    assert operation.params["undoes"] == event.pk and operation.message == f"Undoes event #{event.pk}: wrong MAC"
    assert operation_run(operation.pk).status == OperationStatus.SUCCEEDED
    assert "undome" not in host_xml()


def test_nothing_left_to_undo_is_a_400(api, event):
    assert operation_run(_undo(api, event).json()["operation"]["id"]).status == OperationStatus.SUCCEEDED
    response = _undo(api, event)
    assert response.status_code == 400 and "Already undone" in response.json()["non_field_errors"][0]


def test_a_request_event_is_a_400_that_points_to_the_outcome(api, event):
    requested = AuditEvent.objects.get(operation_id=event.operation_id, action="network.update.requested")
    response = _undo(api, requested, query="?dry_run=1")
    assert response.status_code == 400 and f"event #{event.pk}" in response.json()["non_field_errors"][0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "non_field_errors"),
        ("undo", "non_field_errors"),
        (7, "non_field_errors"),
        ("null", "non_field_errors"),
        ({"message": 7}, "message"),
        ({"message": ["a"]}, "message"),
        ({"message": "x" * 401}, "message"),
        ({"message": "ok", "force": True}, "non_field_errors"),
    ],
)
def test_a_hostile_body_is_a_400_that_changes_nothing(api, event, host_xml, body, field):
    before = host_xml()
    if body == "null":  # the JSON literal itself
        response = api.post(f"/api/audit/{event.pk}/undo/", "null", content_type="application/json")
    else:
        response = api.post(f"/api/audit/{event.pk}/undo/", body, format="json")
    assert response.status_code == 400 and field in response.json()
    assert not _undo_operations().exists() and host_xml() == before


@pytest.mark.parametrize("query", ["?dry_run=yes", "?dry_run=", "?dry_run=2"])
def test_a_dry_run_value_it_cannot_read_is_a_400(api, event, query):
    response = _undo(api, event, query=query)
    assert response.status_code == 400 and "dry_run" in response.json()
    assert not _undo_operations().exists()


@pytest.mark.parametrize("pk", ["0", "99999999", "2147483648", "99999999999999999999"])
def test_an_unknown_event_is_a_404(api, event, pk):
    assert api.post(f"/api/audit/{pk}/undo/", {}, format="json").status_code == 404


def test_a_viewer_gets_403_naming_the_role(db, event):
    response = _undo(_as("viewer"), event, query="?dry_run=1")
    assert response.status_code == 403 and "operator" in response.json()["detail"]
    assert AuditEvent.objects.filter(action="network.undo.denied").exists()
    assert not _undo_operations().exists()


def test_an_operator_may_not_undo_an_admins_xml_edit(api, demo_host, admin):
    network = Network.objects.get(host=demo_host, name="routed")
    edited = network.inactive_xml.replace("stp='off'", "stp='on'").replace('stp="off"', 'stp="on"')
    put = api.put(f"/api/networks/{network.pk}/xml/", {"xml": edited, "apply": "restart"}, format="json")
    assert operation_run(put.json()["operation"]["id"]).status == OperationStatus.SUCCEEDED
    edit = AuditEvent.objects.get(action="network.restart.succeeded")
    response = _undo(_as("operator"), edit)
    assert response.status_code == 403 and "network.xml_edit needs the admin role" in response.json()["detail"]
    assert not _undo_operations().exists()
    plan = _undo(api, edit, query="?dry_run=1").json()
    assert plan["method"] == "restart" and plan["restart"]["guests"] == []


def test_an_event_of_a_host_outside_the_scope_does_not_exist(db, event):
    HostFactory(name="other")
    user = UserFactory(username="scoped", role="viewer")
    role_set(user=user, role="admin", host_names=["other"], actor=None, source="system")
    scoped = APIClient()
    scoped.force_authenticate(user)
    assert _undo(scoped, event).status_code == 404
    assert _undo(scoped, event, query="?dry_run=1").status_code == 404
    assert not _undo_operations().exists()


def test_the_plan_to_define_an_undefined_network_again_has_no_network_id(api, demo_host, admin):
    from networks.services.networks import network_request_undefine

    operation = network_request_undefine(network=Network.objects.get(host=demo_host, name="isolated"), actor=admin,
                                         source="web")  # fmt: skip
    assert operation_run(operation.pk).status == OperationStatus.SUCCEEDED
    event = AuditEvent.objects.get(operation=operation, action="network.undefine.succeeded")
    response = _undo(api, event, query="?dry_run=1")
    assert response.status_code == 200, response.content
    plan = response.json()
    assert (plan["method"], plan["network"], plan["network_name"]) == ("create", None, "isolated")
    assert plan["actions"] == ["network.undo", "network.create"]


def test_a_guest_interface_removal_is_undone_by_adding_it_back(api, demo_host, admin, demo_uri):
    build01 = Guest.objects.select_related("host").get(host=demo_host, name="build01")
    removed = guest_interface_request(action="remove", guest=build01, values={}, mac="52:54:00:0c:00:41", actor=admin,
                                      source="web")  # fmt: skip
    assert operation_run(removed.pk).status == OperationStatus.SUCCEEDED
    event = AuditEvent.objects.get(operation=removed, action="guest.interface_remove.succeeded")
    dry = _undo(api, event, query="?dry_run=1")
    assert dry.status_code == 200, dry.json()
    assert dry.json()["method"] == "interface" and dry.json()["interface"]["action"] == "add"
    assert dry.json()["interface"]["values"] == {"source_type": "network", "source": "routed", "model": "virtio",
                                                 "mac": "52:54:00:0c:00:41", "scope": "config"}  # fmt: skip
    assert not Operation.objects.filter(kind="guest.interface_add").exists()
    response = _undo(api, event, {"message": "wrong NIC"})
    assert response.status_code == 202, response.json()
    operation = Operation.objects.get(pk=response.json()["operation"]["id"])
    assert operation.kind == "guest.interface_add" and operation.message == f"Undoes event #{event.pk}: wrong NIC"
    assert operation_run(operation.pk).status == OperationStatus.SUCCEEDED
    assert "52:54:00:0c:00:41" in client.connect(demo_uri).lookupByName("build01").XMLDesc(0)
    again = _undo(api, event)
    assert again.status_code == 400 and "Already undone" in again.json()["non_field_errors"][0]
