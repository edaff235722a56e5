"""A sync requested through the API runs in a real worker over a real Redis."""

import time

import pytest
from lxml import etree
from rest_framework.test import APIClient

from networks.models import Host, Operation
from tests.conftest import REPO
from tests.factories import UserFactory

pytestmark = pytest.mark.worker


def _wait_until_finished(operation_id: int, timeout: float = 60) -> Operation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        operation = Operation.objects.get(pk=operation_id)
        if operation.is_terminal:
            return operation
        time.sleep(0.2)
    raise AssertionError(f"operation {operation_id} still {operation.status} after {timeout}s")


def test_a_sync_requested_through_the_api_completes_and_the_mirror_matches(celery_worker_process, demo_uri):
    api = APIClient()
    api.force_authenticate(UserFactory(username="bob"))
    created = api.post("/api/hosts/", {"name": "demo", "uri": demo_uri}, format="json")
    assert created.status_code == 201
    first = _wait_until_finished(created.json()["operation"]["id"])
    assert first.status == "succeeded", first.error

    response = api.post(f"/api/hosts/{created.json()['id']}/sync/")
    assert response.status_code == 202
    operation = _wait_until_finished(response.json()["operation"]["id"])
    assert operation.status == "succeeded", operation.error
    assert operation.started_at and operation.finished_at and "Updating the mirror" in operation.log

    # What the worker mirrored, against demo/fleet.xml read here with lxml (not kvmweb's reader).
    fleet = etree.parse(str(REPO / "demo" / "fleet.xml")).getroot()
    host = Host.objects.get(name="demo")
    assert host.status == "reachable"
    assert sorted(host.networks.values_list("name", flat=True)) == sorted(
        n.findtext("name") for n in fleet.findall("network")
    )
    assert sorted(host.guests.values_list("name", flat=True)) == sorted(
        d.findtext("name") for d in fleet.findall("domain")
    )
    default = fleet.find("network[name='default']")
    assert sorted(host.networks.get(name="default").dhcp_reservations.values_list("mac", "address")) == sorted(
        (h.get("mac"), h.get("ip")) for h in default.findall("ip/dhcp/host")
    )
    devices = [
        d.findtext("name") for d in fleet.findall("device") if d.find("capability").get("type") in {"pci", "net"}
    ]
    assert sorted(host.node_devices.values_list("name", flat=True)) == sorted(devices)


def test_changes_made_by_the_worker_persist_in_its_process(celery_worker_process, demo_uri):
    """The test driver keeps state per process: a stop then a sync must still see it stopped."""
    api = APIClient()
    api.force_authenticate(UserFactory(username="carol"))
    created = api.post("/api/hosts/", {"name": "demo", "uri": demo_uri}, format="json").json()
    _wait_until_finished(created["operation"]["id"])
    network = Host.objects.get(pk=created["id"]).networks.get(name="default")
    stop = api.post(f"/api/networks/{network.pk}/stop/", format="json").json()
    assert _wait_until_finished(stop["operation"]["id"]).status == "succeeded"
    sync = api.post(f"/api/hosts/{created['id']}/sync/").json()
    assert _wait_until_finished(sync["operation"]["id"]).status == "succeeded"
    network.refresh_from_db()
    assert network.active is False
