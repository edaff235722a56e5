"""Renaming a network: the checks, and a failure that leaves the host as it was (test driver)."""

import pytest

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client
from networks.models import Network
from networks.services.operations import OperationRejected, operation_run
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
