"""Renaming a network: the checks, failures that leave the host as it was or say where the
network is, and recovery of a rename whose worker died (test driver)."""

from datetime import timedelta

import libvirt
import pytest
from django.utils import timezone

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client
from networks.hypervisor import restart as hv_restart
from networks.models import Network, Operation
from networks.services import restart as restart_services
from networks.services.operations import (
    OperationRejected,
    Progress,
    operation_claim,
    operation_recover_lost,
    operation_run,
)
from networks.services.restart import network_request_rename


def test_a_network_without_guests_is_renamed_on_the_host_and_in_the_mirror(demo_host, admin, demo_uri):
    routed = Network.objects.get(host=demo_host, name="routed")
    operation = network_request_rename(network=routed, new_name="routed2", move_guests=False, actor=admin, source="web")
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    conn = client.connect(demo_uri)
    assert "routed2" in conn.listNetworks() and "routed" not in conn.listNetworks() + conn.listDefinedNetworks()
    renamed = Network.objects.get(pk=routed.pk)
    assert renamed.name == "routed2" and renamed.active


def test_a_rename_that_cannot_move_guests_puts_everything_back(demo_host, admin, demo_uri):
    # The test driver cannot update guests' devices: the move fails and the rename is undone.
    isolated = Network.objects.get(host=demo_host, name="isolated")
    before = client.connect(demo_uri).networkLookupByName("isolated").XMLDesc(0)
    operation = network_request_rename(network=isolated, new_name="iso2", move_guests=True, actor=admin, source="web")
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.FAILED
    conn = client.connect(demo_uri)
    assert "iso2" not in conn.listNetworks() + conn.listDefinedNetworks()
    assert conn.networkLookupByName("isolated").isActive()
    assert conn.networkLookupByName("isolated").XMLDesc(0) == before


@pytest.mark.parametrize(
    ("name", "move", "says"),
    [("bad name", True, "letters"), ("default", True, "already exists"), ("iso3", False, "Running guests")],
)
def test_bad_renames_are_refused(demo_host, admin, name, move, says):
    isolated = Network.objects.get(host=demo_host, name="isolated")
    with pytest.raises(OperationRejected, match=says):
        network_request_rename(network=isolated, new_name=name, move_guests=move, actor=admin, source=AuditSource.WEB)


# ---------------------------------------------------------------- failures and interrupted runs


def test_a_rename_whose_define_libvirt_refuses_restores_the_old_network(demo_host, admin, demo_uri):
    # A real refusal: the host has a network of that name the mirror does not know yet.
    conn = client.connect(demo_uri)
    conn.networkDefineXML("<network><name>routed2</name><bridge name='virbr77'/></network>")
    before = conn.networkLookupByName("routed").XMLDesc(0)
    routed = Network.objects.get(host=demo_host, name="routed")
    operation = network_request_rename(network=routed, new_name="routed2", move_guests=False, actor=admin, source="web")
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.FAILED and "already exists" in finished.error
    assert conn.networkLookupByName("routed").isActive() and conn.networkLookupByName("routed").XMLDesc(0) == before
    assert "virbr77" in conn.networkLookupByName("routed2").XMLDesc(0)  # the other network is untouched
    # The old config was recorded before the old network was destroyed.
    assert finished.checkpoint["old_xml"] == before and finished.checkpoint["was_active"]


def test_the_old_config_is_recorded_before_the_old_network_is_destroyed(demo_host, demo_uri):
    conn = client.connect(demo_uri)
    before = conn.networkLookupByName("routed").XMLDesc(0)
    seen = []

    def checkpoint(**state):
        seen.append((conn.networkLookupByName("routed").isActive(), state))

    hv_restart.rename_network(conn, "routed", "routed2", False, checkpoint=checkpoint)
    still_running, state = seen[0]
    assert still_running, "the checkpoint must be written while the old network still exists and runs"
    assert state["old_xml"] == before and state["was_active"] and state["autostart"] is False


class _RefusingToDefine:
    """INJECTED failure (no real libvirt refuses this here): the host's connection, except that
    defining `name` fails, as if another admin had taken its bridge meanwhile."""

    def __init__(self, conn, name):
        self._conn, self._name = conn, name

    def networkDefineXML(self, text):
        if f"<name>{self._name}</name>" in text:
            raise libvirt.libvirtError("bridge name 'virbr1' already in use by another admin's network")
        return self._conn.networkDefineXML(text)

    def __getattr__(self, attr):
        return getattr(self._conn, attr)


def test_a_failed_undo_reports_both_errors_and_the_network_runs_under_its_new_name(
    demo_host, admin, demo_uri, monkeypatch
):
    conn = client.connect(demo_uri)
    monkeypatch.setattr(restart_services, "host_connection", lambda host: _RefusingToDefine(conn, "isolated"))
    isolated = Network.objects.get(host=demo_host, name="isolated")
    # Moving guests fails for real (the test driver cannot update devices); putting the old
    # network back then fails by injection.
    operation = network_request_rename(network=isolated, new_name="iso2", move_guests=True, actor=admin, source="web")
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.FAILED
    assert finished.error.startswith("Renaming failed: ") and "not supported" in finished.error
    assert "putting isolated back failed too: bridge name 'virbr1' already in use" in finished.error
    assert finished.error.endswith("the network runs as iso2")
    assert finished.result == {"runs_as": "iso2", "network_running": True}
    assert conn.networkLookupByName("iso2").isActive()
    assert Network.objects.get(pk=isolated.pk).name == "iso2"  # the mirror follows it


def _killed_after_undefine(network, admin, conn, new_name):
    """Claim a rename and do what its run does up to the undefine of the old network."""
    operation = network_request_rename(network=network, new_name=new_name, move_guests=False, actor=admin, source="web")
    operation = operation_claim(operation.pk)
    Progress(operation).checkpoint(**hv_restart.rename_state(conn, network.name, new_name, False))
    old = conn.networkLookupByName(network.name)
    old.destroy()
    old.undefine()
    return operation


def _lose_worker(operation):
    Operation.objects.filter(pk=operation.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert operation_recover_lost(stale_after=timedelta(seconds=30)) == 1
    return Operation.objects.get(pk=operation.pk)


def test_a_rename_killed_between_undefine_and_define_gets_the_old_network_back(demo_host, admin, demo_uri):
    conn = client.connect(demo_uri)
    before = conn.networkLookupByName("routed").XMLDesc(0)
    operation = _killed_after_undefine(Network.objects.get(host=demo_host, name="routed"), admin, conn, "routed2")
    assert "routed" not in conn.listNetworks() + conn.listDefinedNetworks()
    recovered = _lose_worker(operation)
    assert recovered.step == "Interrupted; network runs as routed and 0 interface(s) re-plugged by recovery"
    assert recovered.status == OperationStatus.FAILED  # the rename did not happen, and the row says so
    assert conn.networkLookupByName("routed").isActive() and conn.networkLookupByName("routed").XMLDesc(0) == before


def test_a_rename_killed_after_defining_the_new_network_is_finished(demo_host, admin, demo_uri):
    conn = client.connect(demo_uri)
    routed = Network.objects.get(host=demo_host, name="routed")
    operation = _killed_after_undefine(routed, admin, conn, "routed2")
    conn.networkDefineXML(operation.checkpoint["renamed_xml"])  # the run got that far
    recovered = _lose_worker(operation)
    assert recovered.status == OperationStatus.SUCCEEDED, recovered.error
    assert recovered.step == "Interrupted; network runs as routed2 and 0 interface(s) re-plugged by recovery"
    assert conn.networkLookupByName("routed2").isActive() and "routed" not in conn.listDefinedNetworks()
    assert Network.objects.get(pk=routed.pk).name == "routed2"
