"""Ten operators add a reservation to the same network at once: with a real worker, the ten
updates run one after the other, none is lost, and each starts from the previous one's result."""

import threading
import time

import pytest
from django.db import connection
from rest_framework.test import APIClient

from networks.choices import AuditSource, OperationStatus
from networks.models import AuditEvent, Host, Network, Operation
from networks.services import hosts as host_services
from networks.services.operations import operation_run
from tests.factories import UserFactory

pytestmark = pytest.mark.worker
OPERATORS = 10


def _mac(index: int) -> str:
    return f"52:54:00:cc:00:{index:02x}"


def _add_reservation(network_id: int, user, index: int, responses: dict, start: threading.Barrier) -> None:
    api = APIClient()
    api.force_authenticate(user)
    body = {"mac": _mac(index), "ip": f"192.168.122.{150 + index}", "name": f"op{index}", "scope": "both"}
    try:
        start.wait()
        responses[index] = api.post(f"/api/networks/{network_id}/dhcp-hosts/", body, format="json")
    finally:
        connection.close()  # this thread's own database connection


def test_ten_concurrent_reservation_adds_run_one_after_the_other_and_none_is_lost(
    redis_socket, start_celery_worker, demo_uri
):
    admin = UserFactory(username="lead")
    host = host_services.host_create(name="demo", uri=demo_uri, actor=admin, source=AuditSource.WEB)
    assert operation_run(host.operations.get().pk).status == OperationStatus.SUCCEEDED
    start_celery_worker(redis_socket)
    network = Network.objects.get(host=host, name="default")
    operators = [UserFactory(username=f"operator{i}", role="operator") for i in range(OPERATORS)]

    responses: dict = {}
    start = threading.Barrier(OPERATORS)
    threads = [
        threading.Thread(target=_add_reservation, args=(network.pk, operators[i], i, responses, start))
        for i in range(OPERATORS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(responses) == list(range(OPERATORS))
    assert all(r.status_code == 202 for r in responses.values()), {i: r.content for i, r in responses.items()}

    ids = [r.json()["operation"]["id"] for r in responses.values()]
    operations = _wait_until_all_terminal(ids, timeout=120)
    assert all(op.status == OperationStatus.SUCCEEDED for op in operations), [(op.pk, op.error) for op in operations]
    _assert_one_after_the_other(operations)
    _assert_each_started_from_the_previous_result(operations)

    sync = host_services.host_request_sync(host=Host.objects.get(pk=host.pk), actor=admin, source=AuditSource.WEB)
    assert _wait_until_all_terminal([sync.pk], timeout=60)[0].status == OperationStatus.SUCCEEDED
    macs = set(network.dhcp_reservations.values_list("mac", flat=True))
    assert {_mac(i) for i in range(OPERATORS)} <= macs, "a reservation was lost on the host"


def _assert_one_after_the_other(operations: list[Operation]) -> None:
    ordered = sorted(operations, key=lambda op: op.started_at)
    for earlier, later in zip(ordered, ordered[1:], strict=False):
        assert earlier.finished_at <= later.started_at, f"#{earlier.pk} and #{later.pk} overlapped"


def _assert_each_started_from_the_previous_result(operations: list[Operation]) -> None:
    ordered = sorted(operations, key=lambda op: op.started_at)
    added_so_far: list[str] = []
    for operation in ordered:
        event = AuditEvent.objects.get(operation=operation, action="network.update.succeeded")
        own = _own_mac(event)
        for previous in added_so_far:
            assert previous in event.before_xml, f"#{operation.pk} did not start from {previous}'s change"
        assert own not in event.before_xml and own in event.after_xml
        added_so_far.append(own)


def _own_mac(event: AuditEvent) -> str:
    """The MAC this event's update added: in the after-XML, not in the before-XML."""
    added = [_mac(i) for i in range(OPERATORS) if _mac(i) in event.after_xml and _mac(i) not in event.before_xml]
    assert len(added) == 1, f"event {event.pk} added {added}"
    return added[0]


def _wait_until_all_terminal(ids: list[int], timeout: float) -> list[Operation]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        operations = list(Operation.objects.filter(pk__in=ids))
        if all(op.is_terminal for op in operations):
            return operations
        time.sleep(0.3)
    raise AssertionError(f"still running after {timeout} s: {[(op.pk, op.status) for op in operations]}")
