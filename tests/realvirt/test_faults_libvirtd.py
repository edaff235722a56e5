"""libvirtd restarted or hung while kvmweb works on it: retryable failures retry and succeed
once it is back, the host shows unreachable meanwhile, and no call hangs on a hung daemon."""

from __future__ import annotations

import threading
import time

import pytest
from django.test import override_settings

from networks.choices import AuditSource, HostStatus, OperationStatus
from networks.hypervisor import client
from networks.hypervisor import networks as hv_networks
from networks.hypervisor.errors import HostUnreachable
from networks.models import Host, Network, Operation
from networks.operation_kinds import RetryPolicy
from networks.services import hosts as host_services
from networks.services import networks as network_services
from tests.factories import UserFactory

from .kvmweb_setup import nat_network_xml

pytestmark = [pytest.mark.realvirt, pytest.mark.worker]
CALL_TIMEOUT = 4


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _terminal(operation_id: int, timeout: float) -> Operation:
    return _wait(
        lambda: (op := Operation.objects.get(pk=operation_id)).is_terminal and op, timeout, f"operation {operation_id}"
    )


def test_a_libvirtd_restart_makes_the_host_unreachable_then_the_retries_succeed(
    new_private_libvirtd, redis_socket, start_celery_worker
):
    daemon = new_private_libvirtd()
    conn = daemon.connect()
    conn.networkDefineXML(nat_network_xml("faultnet", "virbr-fault", "10.83.0"))
    conn.close()
    admin = UserFactory(username="netops")
    socket_dir = str(daemon.socket_dir)
    start_celery_worker(redis_socket, KVMWEB_URI_PATHS_ALLOWED=socket_dir, KVMWEB_HOST_CALL_TIMEOUT=str(CALL_TIMEOUT))
    with override_settings(KVMWEB_URI_PATHS_ALLOWED=[socket_dir]):
        host = host_services.host_create(name="lvd", uri=daemon.uri, actor=admin, source=AuditSource.WEB)
    # The worker opens and caches its connection with this first sync.
    assert _terminal(host.operations.get().pk, 60).status == OperationStatus.SUCCEEDED
    network = Network.objects.get(host=host, name="faultnet")
    assert network.active is False

    daemon.stop_libvirtd()
    sync = host_services.host_request_sync(host=host, actor=admin, source=AuditSource.WEB)
    start = network_services.network_request_start(network=network, actor=admin, source=AuditSource.WEB)

    _wait(lambda: Host.objects.get(pk=host.pk).status == HostStatus.UNREACHABLE, 30, "the host to show unreachable")
    _wait(
        lambda: f"Attempt 1 of {RetryPolicy().attempts} failed" in Operation.objects.get(pk=sync.pk).log,
        30,
        "a failed attempt logged",
    )
    assert Operation.objects.get(pk=sync.pk).status == OperationStatus.QUEUED  # waiting to retry, not failed
    down_for = daemon.start_libvirtd()

    sync_done, start_done = _terminal(sync.pk, 60), _terminal(start.pk, 60)
    assert sync_done.status == OperationStatus.SUCCEEDED, sync_done.log
    assert start_done.status == OperationStatus.SUCCEEDED, start_done.log
    assert 2 <= sync_done.attempts <= 4, sync_done.log
    assert Host.objects.get(pk=host.pk).status == HostStatus.REACHABLE
    check = daemon.connect()
    try:
        assert check.networkLookupByName("faultnet").isActive() == 1
    finally:
        check.close()
    assert down_for < 10


def test_a_call_on_a_connection_whose_daemon_went_away_is_retryable_and_connect_reopens(new_private_libvirtd):
    daemon = new_private_libvirtd()
    rules = {"uri_paths_allowed": [str(daemon.socket_dir)], "call_timeout": CALL_TIMEOUT}
    client.disconnect(daemon.uri)
    try:
        conn = client.connect(daemon.uri, **rules)
        daemon.stop_libvirtd()
        # The event loop sees the socket close: the cached connection is known dead at once.
        _wait(lambda: not conn.isAlive(), 5, "the dead connection to be noticed")
        with pytest.raises(HostUnreachable) as raised:
            hv_networks.get_network(conn, "default")
        assert raised.value.retryable, raised.value
        daemon.start_libvirtd()
        again = client.connect(daemon.uri, **rules)
        assert again is not conn and again.isAlive()
        assert again.getLibVersion() > 0
    finally:
        client.disconnect(daemon.uri)


def test_a_hung_daemon_fails_a_call_within_the_keepalive_bound(new_private_libvirtd):
    daemon = new_private_libvirtd()
    client.disconnect(daemon.uri)
    conn = client.connect(daemon.uri, uri_paths_allowed=[str(daemon.socket_dir)], call_timeout=CALL_TIMEOUT)
    box = {}

    def call():
        started = time.monotonic()
        try:
            hv_networks.get_network(conn, "default")
        except Exception as error:
            box["error"] = error
        box["seconds"] = time.monotonic() - started

    daemon.freeze_libvirtd()
    try:
        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        thread.join(CALL_TIMEOUT + 6)
        assert not thread.is_alive(), "a call to a hung daemon is still waiting: nothing bounds it"
    finally:
        daemon.freeze_libvirtd(frozen=False)
        client.disconnect(daemon.uri)
    assert isinstance(box["error"], HostUnreachable) and box["error"].retryable, box
    assert "keepalive" in str(box["error"])
    assert box["seconds"] <= CALL_TIMEOUT + 2
