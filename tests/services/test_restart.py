"""Restart as an Operation, on the test driver (re-plugging itself is proved on the real daemon):
rollback, the checkpoint written before the destroy, and recovery of a run whose worker died."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client
from networks.hypervisor import restart as hv_restart
from networks.models import Network, Operation
from networks.services.operations import (
    OperationRejected,
    Progress,
    operation_claim,
    operation_recover_lost,
    operation_run,
)
from networks.services.restart import network_request_restart, network_restart_preview
from tests.conftest import run_to_end


def test_a_network_without_guests_restarts_cleanly(demo_host, admin, demo_uri):
    network = Network.objects.get(host=demo_host, name="routed")
    # Only build01 uses it, and build01 is shut off: nothing to re-plug.
    finished = operation_run(network_request_restart(network=network, actor=admin, source=AuditSource.WEB).pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    assert finished.result["interfaces"] == [] and finished.result["down_seconds"] >= 0
    assert client.connect(demo_uri).networkLookupByName("routed").isActive()


def test_a_driver_that_cannot_replug_is_reported_per_guest(demo_host, admin, demo_uri):
    network = Network.objects.get(host=demo_host, name="default")
    finished = operation_run(network_request_restart(network=network, actor=admin, source=AuditSource.WEB).pk)
    assert finished.status == OperationStatus.FAILED and "could not be re-plugged" in finished.error
    # ci01 is paused, not shut off: its interface is plugged back too.
    assert {i["domain"] for i in finished.result["interfaces"]} == {"web01", "ci01"}
    assert all("driver cannot" in i["error"] for i in finished.result["interfaces"])
    assert client.connect(demo_uri).networkLookupByName("default").isActive()


def test_the_preview_names_the_running_guests(demo_host):
    preview = network_restart_preview(Network.objects.get(host=demo_host, name="default"))
    assert "web01" in [g.name for g in preview.guests]


def test_a_stopped_network_or_foreign_xml_is_refused(demo_host, admin, demo_uri):
    network = Network.objects.get(host=demo_host, name="default")
    with pytest.raises(OperationRejected, match="names the network"):
        network_request_restart(network=network, actor=admin, source="web", new_xml="<network><name>x</name></network>")
    Network.objects.filter(pk=network.pk).update(active=False)
    network.refresh_from_db()
    with pytest.raises(OperationRejected, match="not running"):
        network_request_restart(network=network, actor=admin, source="web")


# ---------------------------------------------------------------- failures and interrupted runs


def _lose_worker(operation):
    """What a worker killed mid-run leaves: the row running, its heartbeat long silent."""
    Operation.objects.filter(pk=operation.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert operation_recover_lost(stale_after=timedelta(seconds=30)) == 1
    return Operation.objects.get(pk=operation.pk)


def _killed_after_checkpoint(network, admin, conn, new_xml=""):
    """Claim a restart and do what its run does up to the destroy (the checkpoint, then the
    destroy), as a worker killed right after it would leave it."""
    operation = operation_claim(network_request_restart(network=network, actor=admin, source="web", new_xml=new_xml).pk)
    Progress(operation).checkpoint(**hv_restart.restart_state(conn, network.name, new_xml))
    conn.networkLookupByName(network.name).destroy()
    return operation


def test_the_checkpoint_is_recorded_before_the_network_goes_down(demo_host, demo_uri):
    conn = client.connect(demo_uri)
    seen = []

    def checkpoint(**state):
        seen.append((conn.networkLookupByName("default").isActive(), state))

    hv_restart.restart_network(conn, "default", checkpoint=checkpoint)
    active_then, state = seen[0]
    assert active_then, "the checkpoint must be written while the network still runs"
    assert {i["domain"] for i in state["interfaces"]} == {"web01", "ci01"}
    assert "<name>default</name>" in state["running_xml"] and "<name>default</name>" in state["persistent_xml"]


def test_a_new_config_libvirt_refuses_is_rolled_back_and_the_network_runs(demo_host, admin, demo_uri):
    # A real refusal: without a UUID, libvirt takes the XML for a second network of that name.
    network = Network.objects.get(host=demo_host, name="routed")
    before = client.connect(demo_uri).networkLookupByName("routed").XMLDesc(0)
    new_xml = re.sub(r"<uuid>.*</uuid>", "", network.inactive_xml)
    finished = run_to_end(network_request_restart(network=network, actor=admin, source="web", new_xml=new_xml).pk)
    assert finished.status == OperationStatus.FAILED and "did not start" in finished.error
    assert "already exists" in finished.error and "routed runs its previous running config again" in finished.error
    assert finished.result["rolled_back"] and finished.result["network_running"]
    now = client.connect(demo_uri).networkLookupByName("routed")
    assert now.isActive() and now.XMLDesc(0) == before


def test_a_restart_interrupted_after_the_destroy_is_finished_by_recovery(demo_host, admin, demo_uri):
    conn = client.connect(demo_uri)
    operation = _killed_after_checkpoint(Network.objects.get(host=demo_host, name="routed"), admin, conn)
    assert not conn.networkLookupByName("routed").isActive()
    recovered = _lose_worker(operation)
    assert recovered.status == OperationStatus.SUCCEEDED, recovered.error
    assert recovered.step == "Interrupted; network started and 0 interface(s) re-plugged by recovery"
    assert conn.networkLookupByName("routed").isActive()
    assert Network.objects.get(host=demo_host, name="routed").active


def test_recovery_starts_the_new_config_if_the_run_had_defined_it(demo_host, admin, demo_uri):
    conn = client.connect(demo_uri)
    network = Network.objects.get(host=demo_host, name="routed")
    new_xml = network.inactive_xml.replace("</network>", "<domain name='recovered.test'/></network>")
    operation = _killed_after_checkpoint(network, admin, conn, new_xml)
    conn.networkDefineXML(new_xml)  # the run got that far
    recovered = _lose_worker(operation)
    assert recovered.status == OperationStatus.SUCCEEDED, recovered.error
    assert "recovered.test" in conn.networkLookupByName("routed").XMLDesc(0)


def test_recovery_leaves_a_running_network_alone_and_reports_unplugged_guests(demo_host, admin, demo_uri):
    conn = client.connect(demo_uri)
    network = Network.objects.get(host=demo_host, name="default")
    operation = operation_claim(network_request_restart(network=network, actor=admin, source="web").pk)
    Progress(operation).checkpoint(**hv_restart.restart_state(conn, "default"))
    # A pending edit: only a restart would make it live, so it shows whether recovery restarted.
    conn.networkDefineXML(network.inactive_xml.replace("</network>", "<domain name='pending.test'/></network>"))
    recovered = _lose_worker(operation)
    assert "pending.test" not in conn.networkLookupByName("default").XMLDesc(0)
    assert recovered.step.startswith("Interrupted; network was running and 0 interface(s) re-plugged")
    # The test driver cannot re-plug: the goal is not reached, and the row says so.
    assert recovered.status == OperationStatus.FAILED and recovered.result["failed"] == 2


def test_a_restart_killed_before_its_checkpoint_changes_nothing(demo_host, admin, demo_uri):
    network = Network.objects.get(host=demo_host, name="routed")
    operation = operation_claim(network_request_restart(network=network, actor=admin, source="web").pk)
    recovered = _lose_worker(operation)
    assert recovered.status == OperationStatus.FAILED
    assert recovered.step == "Interrupted; network left as it was (not yet stopped) by recovery"
    assert client.connect(demo_uri).networkLookupByName("routed").isActive()
