"""Restart as an Operation, on the test driver (re-plugging itself is proved on the real daemon)."""

import pytest

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client
from networks.models import Network
from networks.services.operations import OperationRejected, operation_run
from networks.services.restart import network_request_restart, network_restart_preview


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
