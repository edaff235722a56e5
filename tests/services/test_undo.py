"""Undo from the audit log on the test driver: the plan (live, restart, an older event's own
entries, conflicts), who may ask, and the run, checked against what the host holds."""

import threading
import time
from dataclasses import asdict
from datetime import timedelta

import libvirt
import pytest
from django.db import connection
from django.utils import timezone
from lxml import etree

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client
from networks.hypervisor import networks as hv_networks
from networks.models import AuditEvent, Guest, Network, Operation
from networks.services import operations, undo
from networks.services.audit import audit_record
from networks.services.interfaces import guest_interface_request
from networks.services.netupdate import network_request_update
from networks.services.networks import network_request_undefine
from networks.services.operations import OperationRejected, operation_recover_lost, operation_run
from networks.services.permissions import PermissionDenied
from networks.services.sync import mirror_network
from networks.services.undo import UndoImpossible, undo_offered, undo_plan, undo_preview, undo_request
from networks.services.xmledit import network_request_xml_change
from tests.conftest import run_to_end
from tests.factories import UserFactory

RESERVATION = {"mac": "52:54:00:77:00:01", "ip": "192.168.122.77", "name": "undome"}


@pytest.fixture
def net(demo_host):
    return lambda name: Network.objects.select_related("host").get(host=demo_host, name=name)


@pytest.fixture
def operator(db):
    return UserFactory(username="olga", role="operator")


def _host_xml(uri: str, name: str) -> str:
    return client.connect(uri).networkLookupByName(name).XMLDesc(0)


def _succeeded(operation) -> AuditEvent:
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    return AuditEvent.objects.get(operation=operation, action__endswith=".succeeded")


def _reserve(net, actor, values=RESERVATION) -> AuditEvent:
    operation = network_request_update(
        network=net("default"), section="ip-dhcp-host", command="add-last", values=values, actor=actor, source="web"
    )
    return _succeeded(operation)


def _edit_xml(net, admin, name: str, change, apply: str) -> AuditEvent:
    network = net(name)
    root = etree.fromstring(network.inactive_xml.encode())
    change(root)
    new_xml = etree.tostring(root, encoding="unicode")
    return _succeeded(network_request_xml_change(network=network, new_xml=new_xml, apply=apply, actor=admin,
                                                 source="web"))  # fmt: skip


def _stp_on(root):
    root.find("bridge").set("stp", "on")


# ---------------------------------------------------------------- plans


def test_a_reservation_added_is_undone_live_by_deleting_it(net, admin, demo_uri):
    event = _reserve(net, admin)
    plan = undo_plan(event)
    assert plan.method == "live" and not plan.changed_since
    assert [(u.section, u.command) for u in plan.live_updates] == [("ip-dhcp-host", "delete")]
    assert "undome" in plan.live_updates[0].fragment
    assert plan.actions == ("network.undo", "network.update.ip-dhcp-host")
    assert "-" in plan.diff and "undome" in plan.diff

    operation = undo_request(event, admin, AuditSource.WEB, "wrong MAC")
    assert operation.kind == "network.undo" and operation.params["undoes"] == event.pk
    outcome = _succeeded(operation)
    assert "undome" not in _host_xml(demo_uri, "default")
    assert "web01" in _host_xml(demo_uri, "default")  # nothing else went
    assert outcome.message == f"Undoes event #{event.pk}: wrong MAC"
    assert "undome" in outcome.before_xml and "undome" not in outcome.after_xml
    assert Operation.objects.get(pk=operation.pk).result["undoes"] == event.pk
    assert not net("default").dhcp_reservations.filter(name="undome").exists()  # the mirror follows


def test_a_bridge_change_is_undone_by_a_restart_that_names_the_guests(net, admin, demo_uri):
    event = _edit_xml(net, admin, "routed", _stp_on, "restart")
    assert "stp='on'" in _host_xml(demo_uri, "routed") or 'stp="on"' in _host_xml(demo_uri, "routed")
    plan = undo_plan(event)
    assert plan.method == "restart" and plan.live_updates == ()
    assert plan.actions == ("network.undo", "network.xml_edit")
    assert plan.restart is not None and plan.restart.guests == []  # build01, its only guest, is shut off
    outcome = _succeeded(undo_request(event, admin, AuditSource.WEB))
    host_xml = _host_xml(demo_uri, "routed")
    assert "stp='off'" in host_xml or 'stp="off"' in host_xml
    assert outcome.before_xml and outcome.after_xml  # the restart's own outcome had no before
    assert Operation.objects.get(pk=outcome.operation_id).result["method"] == "restart"


def _stopped(net, demo_uri, name: str) -> None:
    """Stop a network on the host and mirror it (the test driver keeps a define of a running
    network in its live XML only, so defines are tested on a stopped one)."""
    client.connect(demo_uri).networkLookupByName(name).destroy()
    mirror_network(net(name).host, hv_networks.get_network(client.connect(demo_uri), name))


def test_a_change_to_a_stopped_network_is_undone_with_a_define(net, admin, demo_uri):
    _stopped(net, demo_uri, "routed")
    event = _edit_xml(net, admin, "routed", _stp_on, "define")
    plan = undo_plan(event)
    assert plan.method == "define" and plan.actions == ("network.undo", "network.xml_edit")
    _succeeded(undo_request(event, admin, AuditSource.WEB))
    network = client.connect(demo_uri).networkLookupByName("routed")
    assert "stp='off'" in network.XMLDesc(0) and not network.isActive()


def test_an_older_event_reverts_only_its_own_entry(net, admin, demo_uri):
    first = _reserve(net, admin)
    _reserve(net, admin, {"mac": "52:54:00:77:00:02", "ip": "192.168.122.78", "name": "later"})
    plan = undo_plan(first)
    assert plan.changed_since
    assert [(u.command, "undome" in u.fragment) for u in plan.live_updates] == [("delete", True)]
    assert "later" in plan.diff_event_now and "undome" in plan.diff_then_event
    _succeeded(undo_request(first, admin, AuditSource.API))
    host_xml = _host_xml(demo_uri, "default")
    assert "undome" not in host_xml and "later" in host_xml


def test_an_older_removal_is_put_back_among_later_changes(net, admin, demo_uri):
    removed = _succeeded(network_request_update(
        network=net("default"), section="ip-dhcp-host", command="delete", values={}, key="52:54:00:0a:00:12",
        actor=admin, source="web",
    ))  # fmt: skip
    _reserve(net, admin)
    plan = undo_plan(removed)
    assert plan.changed_since and [(u.command, "web02" in u.fragment) for u in plan.live_updates] == [
        ("add-last", True)
    ]
    _succeeded(undo_request(removed, admin, AuditSource.WEB))
    host_xml = _host_xml(demo_uri, "default")
    assert "web02" in host_xml and "undome" in host_xml


def test_an_entry_changed_since_is_a_conflict_that_names_it(net, admin, demo_uri):
    first = _reserve(net, admin)
    _succeeded(network_request_update(
        network=net("default"), section="ip-dhcp-host", command="modify", key=RESERVATION["mac"],
        values={**RESERVATION, "ip": "192.168.122.79"}, actor=admin, source="web",
    ))  # fmt: skip
    before = _host_xml(demo_uri, "default")
    with pytest.raises(UndoImpossible, match=r"undome.*has changed since.*192\.168\.122\.79"):
        undo_plan(first)
    with pytest.raises(UndoImpossible):
        undo_request(first, admin, AuditSource.WEB)
    assert _host_xml(demo_uri, "default") == before
    assert not Operation.objects.filter(kind="network.undo").exists()


def _modify_web01(net, admin, ip: str) -> AuditEvent:
    return _succeeded(network_request_update(
        network=net("default"), section="ip-dhcp-host", command="modify", key="52:54:00:0a:00:11",
        values={"mac": "52:54:00:0a:00:11", "ip": ip, "name": "web01"}, actor=admin, source="web",
    ))  # fmt: skip


def test_an_older_modify_puts_the_old_version_back(net, admin, demo_uri):
    modified = _modify_web01(net, admin, "192.168.122.21")
    _reserve(net, admin)
    plan = undo_plan(modified)
    assert plan.changed_since and [u.command for u in plan.live_updates] == ["modify"]
    _succeeded(undo_request(modified, admin, AuditSource.WEB))
    host_xml = _host_xml(demo_uri, "default")
    assert "192.168.122.11" in host_xml and "192.168.122.21" not in host_xml and "undome" in host_xml


def test_an_older_modify_of_an_entry_changed_again_is_a_conflict(net, admin):
    modified = _modify_web01(net, admin, "192.168.122.21")
    _modify_web01(net, admin, "192.168.122.31")
    with pytest.raises(UndoImpossible, match=r"192\.168\.122\.21.*as this event left it, has changed or gone since"):
        undo_plan(modified)


def test_a_removed_entry_whose_address_was_taken_since_is_a_conflict(net, admin):
    removed = _succeeded(network_request_update(
        network=net("default"), section="ip-dhcp-host", command="delete", values={}, key="52:54:00:0a:00:12",
        actor=admin, source="web",
    ))  # fmt: skip
    _reserve(net, admin, {"mac": "52:54:00:77:00:09", "ip": "192.168.122.12", "name": "squatter"})
    with pytest.raises(UndoImpossible, match=r"web02.*cannot be put back.*squatter"):
        undo_plan(removed)


def test_an_older_restart_change_with_later_changes_is_refused(net, admin):
    event = _edit_xml(net, admin, "routed", _stp_on, "restart")
    _succeeded(network_request_update(
        network=net("routed"), section="ip-dhcp-host", command="add-last",
        values={"mac": "52:54:00:77:00:03", "ip": "10.20.0.50"}, actor=admin, source="web",
    ))  # fmt: skip
    with pytest.raises(UndoImpossible, match="needed a restart"):
        undo_plan(event)


def test_a_second_undo_has_nothing_to_do(net, admin):
    event = _reserve(net, admin)
    _succeeded(undo_request(event, admin, AuditSource.WEB))
    with pytest.raises(UndoImpossible, match="nothing to revert|Already undone"):
        undo_request(event, admin, AuditSource.WEB)


def test_undoing_the_undo_puts_the_change_back(net, admin, demo_uri):
    event = _reserve(net, admin)
    undo_event = _succeeded(undo_request(event, admin, AuditSource.WEB))
    _succeeded(undo_request(undo_event, admin, AuditSource.WEB))
    assert "undome" in _host_xml(demo_uri, "default")


def test_an_undo_already_queued_is_not_queued_twice(net, admin):
    event = _reserve(net, admin)
    first = undo_request(event, admin, AuditSource.WEB)
    with pytest.raises(UndoImpossible, match=f"operation #{first.pk}"):
        undo_request(event, admin, AuditSource.WEB)


# ---------------------------------------------------------------- events that cannot be undone


def test_the_request_event_points_to_its_outcome(net, admin):
    event = _reserve(net, admin)
    requested = AuditEvent.objects.get(operation_id=event.operation_id, action="network.update.requested")
    with pytest.raises(UndoImpossible, match=f"event #{event.pk}"):
        undo_plan(requested)


@pytest.mark.parametrize(
    ("action", "object_type", "says"),
    [
        ("network.stop.succeeded", "network", "start it instead"),
        ("guest.hostdev_attach.succeeded", "guest", "Only a guest's interface changes"),
        ("guest.interface_add.succeeded", "guest", "does not record the interface's MAC"),
        ("network.update.failed", "network", "only a change that succeeded"),
        ("network.update.ip-dhcp-host.denied", "network", "refused request"),
        ("host.sync.succeeded", "host", "Host changes"),
    ],
)
def test_other_events_say_why_they_cannot_be_undone(net, admin, action, object_type, says):
    network = net("default")
    xml_now = network.inactive_xml
    event = audit_record(action=action, source="web", object_type=object_type, object_name="default",
                         host=network.host, before_xml=xml_now, after_xml=xml_now)  # fmt: skip
    with pytest.raises(UndoImpossible, match=says):
        undo_plan(event)


def test_a_network_renamed_since_cannot_be_undone(net, admin):
    event = _reserve(net, admin)
    Network.objects.filter(pk=net("default").pk).update(name="renamed")
    with pytest.raises(UndoImpossible, match="no longer exists"):
        undo_plan(event)


def test_a_network_recreated_under_the_same_name_is_not_the_one_changed(net, admin):
    event = _reserve(net, admin)
    Network.objects.filter(pk=net("default").pk).update(uuid="11111111-2222-3333-4444-555555555555")
    with pytest.raises(UndoImpossible, match="not the one this event changed"):
        undo_plan(event)


def test_an_old_config_that_breaks_todays_rules_is_not_restored(net, admin):
    network = net("default")
    hostile = network.inactive_xml.replace(
        "<network>", "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>", 1
    ).replace("</network>", "<dnsmasq:options><dnsmasq:option value='dhcp-script=/tmp/x'/></dnsmasq:options></network>")
    event = audit_record(action="network.define.succeeded", source="web", object_type="network",
                         object_name="default", host=network.host, before_xml=hostile,
                         after_xml=network.inactive_xml)  # fmt: skip
    with pytest.raises(UndoImpossible, match="breaks a rule.*dhcp-script"):
        undo_plan(event)


# ---------------------------------------------------------------- who may undo


def test_an_operator_may_undo_a_reservation_but_not_an_admins_xml_edit(net, admin, operator, demo_uri):
    reservation = _reserve(net, admin)
    assert undo_offered(reservation, operator)[0] is not None
    _succeeded(undo_request(reservation, operator, AuditSource.WEB))

    edit = _edit_xml(net, admin, "routed", _stp_on, "restart")
    plan, reason = undo_offered(edit, operator)
    assert plan is None and "admin" in reason
    before = _host_xml(demo_uri, "routed")
    with pytest.raises(PermissionDenied, match="network.xml_edit needs the admin role"):
        undo_request(edit, operator, AuditSource.WEB)
    assert _host_xml(demo_uri, "routed") == before
    denied = AuditEvent.objects.get(action="network.xml_edit.denied")
    assert denied.actor_name == "olga" and denied.object_name == "routed"


def test_a_viewer_may_not_even_ask_for_the_plan_and_that_is_audited(net, admin):
    viewer = UserFactory(username="vic", role="viewer")
    event = _reserve(net, admin)
    with pytest.raises(PermissionDenied, match="operator"):
        undo_preview(event, viewer, AuditSource.API)
    assert AuditEvent.objects.filter(action="network.undo.denied", actor_name="vic").exists()


def test_a_dry_run_preview_changes_nothing(net, admin, demo_uri):
    event = _reserve(net, admin)
    before, operations, events = _host_xml(demo_uri, "default"), Operation.objects.count(), AuditEvent.objects.count()
    assert undo_preview(event, admin, AuditSource.API).method == "live"
    assert _host_xml(demo_uri, "default") == before
    assert (Operation.objects.count(), AuditEvent.objects.count()) == (operations, events)


@pytest.mark.parametrize("message", [None, 7, ["x"], "x" * 401])
def test_a_hostile_message_is_refused(net, admin, message):
    event = _reserve(net, admin)
    with pytest.raises(OperationRejected, match="at most 400"):
        undo_request(event, admin, AuditSource.API, message)
    assert not Operation.objects.filter(kind="network.undo").exists()


# ---------------------------------------------------------------- the run against a moved host


def test_the_run_works_the_plan_out_again_when_the_host_moved(net, admin, demo_uri):
    event = _reserve(net, admin)
    operation = undo_request(event, admin, AuditSource.WEB)
    # Someone adds a reservation directly on the host before the worker runs.
    client.connect(demo_uri).networkLookupByName("default").update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, 0,
        "<host mac='52:54:00:77:00:05' ip='192.168.122.85' name='direct'/>",
        libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
    )  # fmt: skip
    _succeeded(operation)
    host_xml = _host_xml(demo_uri, "default")
    assert "undome" not in host_xml and "direct" in host_xml  # the later entry is kept


def test_the_run_refuses_when_the_entry_moved_on_the_host(net, admin, demo_uri):
    event = _reserve(net, admin)
    operation = undo_request(event, admin, AuditSource.WEB)
    client.connect(demo_uri).networkLookupByName("default").update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, 0,
        "<host mac='52:54:00:77:00:01' ip='192.168.122.90' name='undome'/>",
        libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
    )  # fmt: skip
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.FAILED and "has changed since" in finished.error
    assert "192.168.122.90" in _host_xml(demo_uri, "default")


def test_the_run_refuses_when_the_way_to_undo_changed(net, admin, demo_uri):
    event = _edit_xml(net, admin, "routed", _stp_on, "restart")
    operation = undo_request(event, admin, AuditSource.WEB)
    client.connect(demo_uri).networkLookupByName("routed").destroy()  # stopped: a define now, not a restart
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.FAILED
    assert "now needs a define instead of restart" in finished.error
    assert "stp='on'" in _host_xml(demo_uri, "routed")


def test_an_entry_of_a_stopped_network_is_undone_in_its_config_by_net_update(net, admin, demo_uri):
    _stopped(net, demo_uri, "default")
    event = _reserve(net, admin)
    plan = undo_plan(event)
    assert plan.method == "live" and plan.actions == ("network.undo", "network.update.ip-dhcp-host")
    assert plan.scope == "config"
    _succeeded(undo_request(event, admin, AuditSource.WEB))
    network = client.connect(demo_uri).networkLookupByName("default")
    assert "undome" not in network.XMLDesc(0) and not network.isActive()


def _rename_mirror(root):
    root.find("dns/host[@ip='192.168.122.5']/hostname").text = "mirror2"


def test_an_undo_killed_between_the_delete_and_the_add_is_recovered_by_putting_the_entry_back(net, admin, demo_uri):
    event = _edit_xml(net, admin, "default", _rename_mirror, "live")
    operation = undo_request(event, admin, AuditSource.WEB)
    (update,) = undo_plan(event).live_updates
    assert update.command == "replace" and "mirror2" in update.old_fragment
    # What a worker killed right after the delete leaves: the row running with its checkpoint,
    # silent, and the host without the entry.
    client.connect(demo_uri).networkLookupByName("default").update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_DNS_HOST, -1, update.old_fragment,
        libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
    )  # fmt: skip
    assert "mirror2" not in _host_xml(demo_uri, "default")
    stale = timezone.now() - timedelta(minutes=5)
    Operation.objects.filter(pk=operation.pk).update(
        status=OperationStatus.RUNNING, started_at=stale, heartbeat_at=stale,
        checkpoint={"replacing": asdict(update)},
    )  # fmt: skip
    assert operation_recover_lost(stale_after=timedelta(seconds=30)) == 1
    operation.refresh_from_db()
    assert "<hostname>mirror2</hostname>" in _host_xml(demo_uri, "default")  # no entry lost
    assert operation.status == OperationStatus.FAILED and "put back" in operation.error
    assert operation.result["undoes"] == event.pk and operation.result["completed"] is False


# ---------------------------------------------------------------- the running network, its config, or both


def _reserve_in(net, admin, scope: str) -> AuditEvent:
    return _succeeded(network_request_update(
        network=net("default"), section="ip-dhcp-host", command="add-last", values=RESERVATION, scope=scope,
        actor=admin, source="web",
    ))  # fmt: skip


def test_a_running_only_reservation_is_undone_on_the_running_network_only(net, admin, demo_uri):
    event = _reserve_in(net, admin, "live")
    plan = undo_plan(event)
    assert (plan.method, plan.scope) == ("live", "live")
    operation = undo_request(event, admin, AuditSource.WEB)
    assert operation.params["scope"] == "live"
    _succeeded(operation)
    assert "undome" not in _host_xml(demo_uri, "default")
    assert Operation.objects.get(pk=operation.pk).result["scope"] == "live"


@pytest.fixture
def _not_enqueued(monkeypatch):
    """Committed operations stay queued (no broker here)."""
    monkeypatch.setattr(operations, "enqueue", lambda operation: None)


@pytest.mark.django_db(transaction=True)
def test_two_confirms_at_once_queue_one_undo(_not_enqueued, net, admin, monkeypatch):
    """Both confirms are held for a second between the check for a queued undo and the
    Operation: the second waits for the first's transaction, then sees its operation."""
    event = _reserve(net, admin)
    checked = undo._refuse_if_pending

    def slow_check(*args):
        checked(*args)
        time.sleep(1.0)  # the window another confirm would slip through

    monkeypatch.setattr(undo, "_refuse_if_pending", slow_check)
    start, outcomes = threading.Barrier(2), []

    def confirm():
        try:
            start.wait()
            undo_request(event, admin, AuditSource.WEB)
            outcomes.append("queued")
        except UndoImpossible as error:
            outcomes.append(str(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=confirm) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    queued = Operation.objects.get(kind="network.undo")
    assert sorted(outcomes) == [
        f"An undo of this event is already waiting or running (operation #{queued.pk}).",
        "queued",
    ]


# ---------------------------------------------------------------- an undefined network, defined again

ISOLATED_UUID = "6b0f2c6e-8d4a-4b43-9a1c-0d6e2a7f1b10"


def _undefine(net, admin, name: str) -> AuditEvent:
    return _succeeded(network_request_undefine(network=net(name), actor=admin, source="web"))


def _define_on_host(demo_uri, host, name: str, uuid: str, bridge: str) -> None:
    """Someone defines a network on the host directly; kvmweb mirrors it."""
    conn = client.connect(demo_uri)
    conn.networkDefineXML(f"<network><name>{name}</name><uuid>{uuid}</uuid><bridge name='{bridge}'/></network>")
    mirror_network(host, hv_networks.get_network(conn, name))


def test_an_undefined_network_is_defined_again_from_its_config(net, admin, demo_uri, demo_host):
    event = _undefine(net, admin, "isolated")
    plan = undo_plan(event)
    assert plan.method == "create" and plan.actions == ("network.undo", "network.create")
    assert "virbr1" in plan.diff and plan.network.pk is None
    operation = undo_request(event, admin, AuditSource.WEB)
    outcome = _succeeded(operation)
    network = client.connect(demo_uri).networkLookupByName("isolated")
    assert network.UUIDString() == ISOLATED_UUID and not network.isActive() and not network.autostart()
    assert "virbr1" in network.XMLDesc(0) and "virbr1" in outcome.after_xml
    mirrored = net("isolated")
    assert Operation.objects.get(pk=operation.pk).network_id == mirrored.pk and mirrored.uuid == ISOLATED_UUID
    with pytest.raises(UndoImpossible, match="Already undone: isolated is defined on demo again"):
        undo_plan(event)
    with pytest.raises(UndoImpossible, match="undefining it"):
        undo_plan(outcome)


def test_an_operator_may_not_define_an_undefined_network_again(net, admin, operator, demo_uri):
    event = _undefine(net, admin, "isolated")
    plan, reason = undo_offered(event, operator)
    assert plan is None and "admin" in reason
    with pytest.raises(PermissionDenied, match="network.create needs the admin role"):
        undo_request(event, operator, AuditSource.WEB)
    assert "isolated" not in client.connect(demo_uri).listDefinedNetworks()


@pytest.mark.parametrize(
    ("name", "uuid", "says"),
    [
        ("isolated", "11111111-2222-3333-4444-555555555555", "has this network's name now"),
        ("other", ISOLATED_UUID, r"has this network's UUID \(it is named other\) now"),
        ("other", "11111111-2222-3333-4444-555555555555", "The network other on demo uses the bridge virbr1 now"),
    ],
)
def test_an_undefined_network_whose_name_or_uuid_was_taken_since_is_not_defined_again(
    net, admin, demo_uri, demo_host, name, uuid, says
):
    event = _undefine(net, admin, "isolated")
    _define_on_host(demo_uri, demo_host, name, uuid, "virbr1" if "bridge" in says else "virbr9")
    with pytest.raises(UndoImpossible, match=says):
        undo_request(event, admin, AuditSource.WEB)
    assert not Operation.objects.filter(kind="network.undo").exists()


def test_the_run_refuses_a_name_taken_on_the_host_after_the_request(net, admin, demo_uri):
    event = _undefine(net, admin, "isolated")
    operation = undo_request(event, admin, AuditSource.WEB)
    conn = client.connect(demo_uri)
    conn.networkDefineXML("<network><name>isolated</name><bridge name='virbr9'/></network>")  # not mirrored
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.FAILED and "already exists" in finished.error
    assert conn.networkLookupByName("isolated").UUIDString() != ISOLATED_UUID  # the host's network is untouched


def test_an_undo_of_an_undefine_killed_after_the_define_is_recovered_as_done(net, admin, demo_uri, demo_host):
    event = _undefine(net, admin, "isolated")
    operation = undo_request(event, admin, AuditSource.WEB)
    # What a worker killed right after its define leaves: the network on the host, the row running.
    client.connect(demo_uri).networkDefineXML(operation.params["xml"])
    stale = timezone.now() - timedelta(minutes=5)
    Operation.objects.filter(pk=operation.pk).update(status=OperationStatus.RUNNING, started_at=stale,
                                                     heartbeat_at=stale)  # fmt: skip
    assert operation_recover_lost(stale_after=timedelta(seconds=30)) == 1
    operation.refresh_from_db()
    assert operation.status == OperationStatus.SUCCEEDED and operation.result["completed"] is True
    assert net("isolated").uuid == ISOLATED_UUID  # mirrored


# ---------------------------------------------------------------- guest interfaces (build01 is stopped: its config)

BUILD01_MAC = "52:54:00:0c:00:41"  # on network routed, model virtio (demo/fleet.xml)


def _build01(demo_host):
    return Guest.objects.select_related("host").get(host=demo_host, name="build01")


def _interface_event(guest, actor, action, values, mac="") -> AuditEvent:
    operation = guest_interface_request(action=action, guest=guest, values=values, mac=mac, actor=actor, source="web")
    finished = run_to_end(operation.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    return AuditEvent.objects.get(operation=operation, action=f"guest.interface_{action}.succeeded")


def _undone(event, actor) -> Operation:
    operation = undo_request(event, actor, "web")
    finished = run_to_end(operation.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    return finished


def _config_interface(demo_uri, mac: str) -> str:
    """The <interface> of build01's config on the host with `mac`, '' when there is none."""
    root = etree.fromstring(client.connect(demo_uri).lookupByName("build01").XMLDesc(0).encode())
    found = [i for i in root.iter("interface") if i.find("mac").get("address") == mac]
    return etree.tostring(found[0], encoding="unicode").replace('"', "'") if found else ""


def test_an_interface_added_to_a_guest_is_undone_by_removing_it(demo_host, admin, demo_uri):
    event = _interface_event(_build01(demo_host), admin, "add", {"source": "default", "mac": "52:54:00:77:00:09"})
    plan = undo_plan(event)
    assert (plan.action, plan.mac, plan.scope) == ("remove", "52:54:00:77:00:09", "config")
    assert "52:54:00:77:00:09" in plan.interface.before_xml and plan.interface.after_xml == ""
    finished = _undone(event, admin)
    assert finished.kind == "guest.interface_remove" and finished.params["undoes"] == event.pk
    assert finished.message.startswith(f"Undoes event #{event.pk}: ")
    assert _config_interface(demo_uri, "52:54:00:77:00:09") == ""
    assert _config_interface(demo_uri, BUILD01_MAC)  # the other NIC stays


def test_an_interface_removed_from_a_guest_is_added_back_with_its_settings(demo_host, admin, demo_uri):
    _interface_event(_build01(demo_host), admin, "update", {"portgroup": "", "link": "down", "model": "e1000"},
                     mac=BUILD01_MAC)  # fmt: skip
    event = _interface_event(_build01(demo_host), admin, "remove", {}, mac=BUILD01_MAC)
    plan = undo_plan(event)
    assert plan.action == "add"
    assert plan.values == {"source_type": "network", "source": "routed", "model": "e1000", "mac": BUILD01_MAC,
                           "link": "down", "scope": "config"}  # fmt: skip
    _undone(event, admin)
    back = _config_interface(demo_uri, BUILD01_MAC)
    assert "<source network='routed'/>" in back and "<model type='e1000'/>" in back
    assert "<link state='down'/>" in back


def test_an_interface_update_is_undone_by_putting_the_old_values_back(demo_host, admin, demo_uri):
    moved = {"source": "default", "portgroup": "dev", "model": "rtl8139"}
    event = _interface_event(_build01(demo_host), admin, "update", moved, mac=BUILD01_MAC)
    plan = undo_plan(event)
    assert plan.action == "update" and plan.values["source"] == "routed" and plan.values["model"] == "virtio"
    assert "rtl8139" in plan.interface.before_xml and "virtio" in plan.interface.after_xml
    _undone(event, admin)
    back = _config_interface(demo_uri, BUILD01_MAC)
    assert "<source network='routed'/>" in back and "<model type='virtio'/>" in back and "portgroup" not in back


def test_an_interface_changed_since_the_event_is_not_undone(demo_host, admin):
    event = _interface_event(_build01(demo_host), admin, "update", {"model": "e1000"}, mac=BUILD01_MAC)
    _interface_event(_build01(demo_host), admin, "update", {"link": "down"}, mac=BUILD01_MAC)
    before = Operation.objects.count()
    with pytest.raises(UndoImpossible, match="has changed since this event"):
        undo_request(event, admin, "web")
    assert Operation.objects.count() == before


def test_an_interface_removed_since_is_not_updated_back(demo_host, admin):
    event = _interface_event(_build01(demo_host), admin, "update", {"model": "e1000"}, mac=BUILD01_MAC)
    _interface_event(_build01(demo_host), admin, "remove", {}, mac=BUILD01_MAC)
    with pytest.raises(UndoImpossible, match="no longer has the interface"):
        undo_plan(event)


def test_an_interface_change_of_a_guest_gone_since_is_not_undone(demo_host, admin):
    event = _interface_event(_build01(demo_host), admin, "add", {"source": "default"})
    _build01(demo_host).delete()  # as a sync leaves it once the guest is undefined
    with pytest.raises(UndoImpossible, match="build01 is no longer on demo"):
        undo_plan(event)


WEB01_MAC = "52:54:00:0a:00:11"


def _web01_link_down_event(demo_host, admin, scope: str) -> AuditEvent:
    """web01's link set down, recorded as the real daemon's run records it (the test driver
    cannot change a running guest): the operation, its outcome event, and the mirror after it."""
    web01 = Guest.objects.get(host=demo_host, name="web01")
    operation = Operation.objects.create(
        kind="guest.interface_update", host=demo_host, host_name="demo", target_name="web01", lock_key="x",
        params={"mac": WEB01_MAC, "scope": scope, "changes": {"link": "down"}}, status=OperationStatus.SUCCEEDED,
    )  # fmt: skip
    root = etree.fromstring(web01.xml.encode())
    interface = [i for i in root.iter("interface") if i.find("mac").get("address") == WEB01_MAC][0]
    etree.SubElement(interface, "link", state="down")
    after = etree.tostring(root, encoding="unicode")
    event = audit_record(action="guest.interface_update.succeeded", source="web", object_type="guest",
                         object_name="web01", host=demo_host, operation=operation, before_xml=web01.xml,
                         after_xml=after, actor=admin)  # fmt: skip
    if scope != "config":
        Guest.objects.filter(pk=web01.pk).update(xml=after)
    return event


def test_a_running_guests_interface_change_is_undone_on_the_running_guest_and_its_config(demo_host, admin):
    event = _web01_link_down_event(demo_host, admin, "both")
    plan = undo_plan(event)
    assert (plan.action, plan.scope, plan.values) == ("update", "both", {"link": "", "scope": "both"})
    assert "down" in plan.interface.before_xml and "down" not in plan.interface.after_xml
    operation = undo_request(event, admin, "web", "link back up")
    assert operation.kind == "guest.interface_update" and operation.params["scope"] == "both"
    assert operation.params["changes"] == {"link": ""} and operation.params["undoes"] == event.pk
    assert operation.message == f"Undoes event #{event.pk}: link back up"
    with pytest.raises(UndoImpossible, match="already waiting or running"):
        undo_request(event, admin, "web")


@pytest.mark.parametrize(
    ("interface", "says"),
    [
        ("<interface type='user'><mac address='52:54:00:77:00:0c'/></interface>", "a user interface"),
        ("<interface type='network'><mac address='52:54:00:77:00:0c'/><source network='default'/></interface>",
         "had no model"),
        ("<interface type='network'><mac address='52:54:00:77:00:0c'/><source network='default'/>"
         "<model type='virtio'/><bandwidth><inbound average='100' floor='50'/></bandwidth></interface>",
         "inbound floor"),
    ],
)  # fmt: skip
def test_a_removed_interface_kvmweb_cannot_add_back_as_it_was_is_refused(demo_host, admin, interface, says):
    web01 = Guest.objects.get(host=demo_host, name="web01")
    root = etree.fromstring(web01.xml.encode())
    root.find("devices").append(etree.fromstring(interface))
    operation = Operation.objects.create(
        kind="guest.interface_remove", host=demo_host, host_name="demo", target_name="web01", lock_key="x",
        params={"mac": "52:54:00:77:00:0c", "scope": "both"}, status=OperationStatus.SUCCEEDED,
    )  # fmt: skip
    event = audit_record(action="guest.interface_remove.succeeded", source="web", object_type="guest",
                         object_name="web01", host=demo_host, operation=operation,
                         before_xml=etree.tostring(root, encoding="unicode"), after_xml=web01.xml)  # fmt: skip
    with pytest.raises(UndoImpossible, match=says):
        undo_plan(event)


def test_a_config_only_change_of_a_running_guest_is_refused_with_the_reason(demo_host, admin):
    event = _web01_link_down_event(demo_host, admin, "config")
    with pytest.raises(UndoImpossible, match="persistent config of web01 while it runs"):
        undo_plan(event)


def test_an_operator_may_undo_an_interface_change_and_a_viewer_may_not(demo_host, admin, operator, demo_uri):
    event = _interface_event(_build01(demo_host), admin, "add", {"source": "default", "mac": "52:54:00:77:00:0a"})
    viewer = UserFactory(username="vera", role="viewer")
    assert undo_offered(event, viewer)[0] is None
    with pytest.raises(PermissionDenied):
        undo_request(event, viewer, "web")
    assert AuditEvent.objects.filter(action="network.undo.denied", actor=viewer, object_name="build01").exists()
    assert undo_offered(event, operator)[0] is not None
    _undone(event, operator)
    assert _config_interface(demo_uri, "52:54:00:77:00:0a") == ""
