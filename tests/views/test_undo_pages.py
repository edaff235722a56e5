"""The pages of undo: the button on an audit event (only where possible and allowed), the
plan to confirm, the operation page, and the links between the events."""

import pytest
from django.test import Client
from django.urls import reverse

from networks.choices import OperationStatus
from networks.hypervisor import client as libvirt_client
from networks.models import AuditEvent, Guest, Network, Operation
from networks.services.interfaces import guest_interface_request
from networks.services.netupdate import network_request_update
from networks.services.operations import operation_run
from networks.services.permissions import role_set
from networks.services.xmledit import network_request_xml_change
from tests.factories import HostFactory, UserFactory


@pytest.fixture
def event(demo_host, admin):
    operation = network_request_update(
        network=Network.objects.get(host=demo_host, name="default"), section="ip-dhcp-host", command="add-last",
        values={"mac": "52:54:00:77:00:01", "ip": "192.168.122.77", "name": "undome"}, actor=admin, source="web",
    )  # fmt: skip
    assert operation_run(operation.pk).status == OperationStatus.SUCCEEDED
    return AuditEvent.objects.get(operation=operation, action="network.update.succeeded")


def _as(role: str) -> Client:
    client = Client()
    client.force_login(UserFactory(username=f"u-{role}", role=role))
    return client


def _confirm_url(event) -> str:
    return reverse("networks:audit_undo", args=[event.pk])


def test_the_event_page_offers_undo_and_the_confirm_page_shows_the_plan(logged_in, event):
    page = logged_in.get(event.get_absolute_url()).content.decode()
    assert "Undo this change" in page and _confirm_url(event) in page
    plan = logged_in.get(_confirm_url(event))
    assert plan.status_code == 200
    html = plan.content.decode()
    assert 'id="undo-entries"' in html and "delete" in html and "undome" in html and "no restart" in html


def test_the_plan_of_a_running_only_change_says_it_leaves_the_persistent_config(logged_in, demo_host, admin):
    operation = network_request_update(
        network=Network.objects.get(host=demo_host, name="default"), section="ip-dhcp-host", command="add-last",
        values={"mac": "52:54:00:77:00:02", "ip": "192.168.122.78", "name": "runonly"}, scope="live", actor=admin,
        source="web",
    )  # fmt: skip
    assert operation_run(operation.pk).status == OperationStatus.SUCCEEDED
    event = AuditEvent.objects.get(operation=operation, action="network.update.succeeded")
    html = logged_in.get(_confirm_url(event)).content.decode()
    assert "to the running network only" in html and "(the persistent config is left as it is)" in html


def test_the_plan_to_define_an_undefined_network_again_says_so(logged_in, demo_host, admin):
    from networks.services.networks import network_request_undefine

    operation = network_request_undefine(network=Network.objects.get(host=demo_host, name="isolated"), actor=admin,
                                         source="web")  # fmt: skip
    assert operation_run(operation.pk).status == OperationStatus.SUCCEEDED
    event = AuditEvent.objects.get(operation=operation, action="network.undefine.succeeded")
    assert "Undo this change" in logged_in.get(event.get_absolute_url()).content.decode()
    html = logged_in.get(_confirm_url(event)).content.decode()
    assert "isolated was undefined: it is defined again on demo" in html and "not started" in html


def test_confirm_queues_the_undo_and_leads_to_the_operation_page(logged_in, event, demo_uri):
    response = logged_in.post(_confirm_url(event), {"message": "typo"})
    operation = Operation.objects.get(kind="network.undo")
    assert response.status_code == 302 and response["Location"] == operation.get_absolute_url()
    assert operation_run(operation.pk).status == OperationStatus.SUCCEEDED
    assert "undome" not in libvirt_client.connect(demo_uri).networkLookupByName("default").XMLDesc(0)
    operation_page = logged_in.get(operation.get_absolute_url()).content.decode()
    assert f"Undoes event #{event.pk}" in operation_page and event.get_absolute_url() in operation_page
    outcome = AuditEvent.objects.get(operation=operation, action="network.undo.succeeded")
    outcome_page = logged_in.get(outcome.get_absolute_url()).content.decode()
    assert f"Undoes event #{event.pk}" in outcome_page and event.get_absolute_url() in outcome_page
    undone_page = logged_in.get(event.get_absolute_url()).content.decode()
    assert 'id="undone-by"' in undone_page and operation.get_absolute_url() in undone_page
    assert "Undo this change" not in undone_page and "Already undone" in undone_page


def test_a_restart_plan_names_what_guests_notice(logged_in, demo_host, admin):
    network = Network.objects.get(host=demo_host, name="routed")
    edited = network.inactive_xml.replace("stp='off'", "stp='on'").replace('stp="off"', 'stp="on"')
    operation = network_request_xml_change(network=network, new_xml=edited, apply="restart", actor=admin, source="web")
    assert operation_run(operation.pk).status == OperationStatus.SUCCEEDED
    edit = AuditEvent.objects.get(operation=operation, action="network.restart.succeeded")
    html = logged_in.get(_confirm_url(edit)).content.decode()
    assert "needs a restart" in html and "re-plugs each running guest" in html and "stp" in html


def test_an_older_event_shows_the_three_way_picture(logged_in, event, demo_host, admin):
    later = network_request_update(
        network=Network.objects.get(host=demo_host, name="default"), section="ip-dhcp-host", command="add-last",
        values={"mac": "52:54:00:77:00:02", "ip": "192.168.122.78", "name": "later"}, actor=admin, source="web",
    )  # fmt: skip
    operation_run(later.pk)
    html = logged_in.get(_confirm_url(event)).content.decode()
    assert "changed since" in html and "Then, at the event, now" in html and "later" in html


def test_an_operator_sees_no_button_for_an_admins_xml_edit_and_is_refused_the_page(demo_host, admin):
    network = Network.objects.get(host=demo_host, name="routed")
    edited = network.inactive_xml.replace("stp='off'", "stp='on'").replace('stp="off"', 'stp="on"')
    operation = network_request_xml_change(network=network, new_xml=edited, apply="restart", actor=admin, source="web")
    operation_run(operation.pk)
    edit = AuditEvent.objects.get(operation=operation, action="network.restart.succeeded")
    operator = _as("operator")
    page = operator.get(edit.get_absolute_url()).content.decode()
    assert "Undo this change" not in page and "admin role" in page
    assert operator.get(_confirm_url(edit)).status_code == 403
    assert operator.post(_confirm_url(edit), {"message": ""}).status_code == 403
    assert not Operation.objects.filter(kind="network.undo").exists()
    assert AuditEvent.objects.filter(action="network.xml_edit.denied", actor_name="u-operator").exists()


def test_a_viewer_sees_no_button(event):
    page = _as("viewer").get(event.get_absolute_url()).content.decode()
    assert "Undo this change" not in page and "operator role" in page


def test_a_request_event_says_where_its_outcome_is(logged_in, event):
    requested = AuditEvent.objects.get(operation_id=event.operation_id, action="network.update.requested")
    page = logged_in.get(requested.get_absolute_url()).content.decode()
    assert "Undo this change" not in page and f"event #{event.pk}" in page


def test_a_refused_confirm_is_a_form_error_that_queues_nothing(logged_in, event):
    response = logged_in.post(_confirm_url(event), {"message": "x" * 401})
    assert response.status_code == 400 and "at most 400" in response.content.decode()
    assert not Operation.objects.filter(kind="network.undo").exists()
    logged_in.post(_confirm_url(event), {})
    again = logged_in.post(_confirm_url(event), {})
    assert again.status_code == 400 and "already waiting or running" in again.content.decode()
    assert Operation.objects.filter(kind="network.undo").count() == 1


def test_an_event_of_a_host_outside_the_scope_does_not_exist(event):
    HostFactory(name="other")
    user = UserFactory(username="scoped", role="viewer")
    role_set(user=user, role="admin", host_names=["other"], actor=None, source="system")
    scoped = Client()
    scoped.force_login(user)
    assert scoped.get(_confirm_url(event)).status_code == 404
    assert scoped.post(_confirm_url(event), {}).status_code == 404


@pytest.mark.parametrize("pk", ["0", "2147483648", "99999999999999999999"])
def test_an_unknown_event_is_a_404(logged_in, db, pk):
    assert logged_in.get(f"/audit/{pk}/undo/").status_code == 404
    assert logged_in.post(f"/audit/{pk}/undo/", {}).status_code == 404


def test_a_guest_interface_change_is_undone_from_its_page_and_the_pages_link_both_ways(logged_in, demo_host, admin,
                                                                                       demo_uri):  # fmt: skip
    build01 = Guest.objects.select_related("host").get(host=demo_host, name="build01")
    values = {"source": "default", "mac": "52:54:00:77:00:0b"}
    added = guest_interface_request(action="add", guest=build01, values=values, actor=admin, source="web")
    assert operation_run(added.pk).status == OperationStatus.SUCCEEDED
    event = AuditEvent.objects.get(operation=added, action="guest.interface_add.succeeded")
    page = logged_in.get(event.get_absolute_url()).content.decode()
    assert "Undo this change" in page and _confirm_url(event) in page
    plan = logged_in.get(_confirm_url(event)).content.decode()
    assert "Remove interface 52:54:00:77:00:0b from build01 (config)" in plan and "52:54:00:77:00:0b" in plan
    response = logged_in.post(_confirm_url(event), {"message": ""})
    operation = Operation.objects.get(kind="guest.interface_remove")
    assert response.status_code == 302 and response["Location"] == operation.get_absolute_url()
    assert operation_run(operation.pk).status == OperationStatus.SUCCEEDED
    assert "52:54:00:77:00:0b" not in libvirt_client.connect(demo_uri).lookupByName("build01").XMLDesc(0)
    operation_page = logged_in.get(operation.get_absolute_url()).content.decode()
    assert f"Undoes event #{event.pk}" in operation_page and event.get_absolute_url() in operation_page
    outcome = AuditEvent.objects.get(operation=operation, action="guest.interface_remove.succeeded")
    assert f"Undoes event #{event.pk}" in logged_in.get(outcome.get_absolute_url()).content.decode()
    undone_page = logged_in.get(event.get_absolute_url()).content.decode()
    assert operation.get_absolute_url() in undone_page and "Undo this change" not in undone_page
