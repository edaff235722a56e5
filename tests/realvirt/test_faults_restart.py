"""A worker killed in the middle of a restart, for real: a real Celery worker restarts a NAT
network with a real guest on the private libvirtd and is killed (SIGKILL, by its PID) the
moment the network is down. The next worker recovers the operation from its checkpoint:
the network runs again, the guest is re-plugged and reaches its gateway, and the operation
ends in a terminal state that says what recovery did."""

import os
import signal
import time

import pytest

from networks.choices import AuditSource, OperationStatus
from networks.models import Network, Operation
from networks.services.restart import network_request_restart

from .kvmweb_setup import guests_on_new_network, nat_network_xml, registered_host

pytestmark = [pytest.mark.realvirt, pytest.mark.worker]
NETWORK = "kvft"
STALE_SECONDS = 3
LOCK_WAIT = 0.05  # seconds: an isActive() slower than this waited for a destroy or start


@pytest.fixture
def guest(private_libvirtd, guest_image):
    network_xml = nat_network_xml(NETWORK, "kvft0", "10.86.0")
    with guests_on_new_network(private_libvirtd, guest_image, network_xml, ["ft-a"]) as booted:
        yield booted[0]


def _worker_env(daemon) -> dict:
    return {
        "KVMWEB_URI_PATHS_ALLOWED": str(daemon.socket_dir),
        "KVMWEB_HEARTBEAT_SECONDS": "1",
        "KVMWEB_OPERATION_STALE_SECONDS": str(STALE_SECONDS),
    }


def _has_checkpoint(operation_id: int) -> bool:
    return bool(Operation.objects.get(pk=operation_id).checkpoint)


def _kill_once_down(worker, operation_id: int, net, timeout: float = 60) -> bool:
    """Wait for the checkpoint in the row (the network must still run until it is there), then
    SIGKILL the worker the moment the network is inactive. libvirtd holds the network's lock
    through a destroy and a start, so a query may wait for both and only ever see it active:
    a slow answer also means "now". Returns whether the network was down at the kill."""
    deadline = time.monotonic() + timeout
    while True:
        active = net.isActive()  # read before the row: down now and no checkpoint after means down first
        if _has_checkpoint(operation_id):
            break
        assert active, "the network went down before the checkpoint was in the row"
        assert time.monotonic() < deadline, "the run never wrote its checkpoint"
        time.sleep(0.005)
    down = False
    while time.monotonic() < deadline:
        asked = time.monotonic()
        down = not net.isActive()
        if down or time.monotonic() - asked > LOCK_WAIT:
            break  # a slow answer waited for the destroy and the start: kill now, while it re-plugs
        time.sleep(0.002)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    return down


def _wait_until_terminal(operation_id: int, worker_log, timeout: float = 90) -> Operation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        operation = Operation.objects.get(pk=operation_id)
        if operation.is_terminal:
            return operation
        time.sleep(0.2)
    raise AssertionError(
        f"operation {operation_id} still {operation.status} ({operation.step}) after {timeout} s; "
        f"worker log:\n{worker_log.read_text()[-3000:]}"
    )


def _reaches_gateway(guest, daemon, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            guest.start_gateway_pings(daemon)
            time.sleep(1)
            if guest.stop_gateway_pings(daemon).replies > 0:
                return True
        except (OSError, RuntimeError):
            time.sleep(0.5)  # the guest itself is not reachable yet
    return False


def test_a_worker_killed_mid_restart_is_recovered_by_the_next_worker(
    transactional_db, redis_socket, start_celery_worker, private_libvirtd, guest
):
    conn = private_libvirtd.connect()
    net = conn.networkLookupByName(NETWORK)
    try:
        with registered_host(private_libvirtd, "kvm-ft") as (host, admin):
            worker, _log = start_celery_worker(redis_socket, "worker-killed", **_worker_env(private_libvirtd))
            network = Network.objects.get(host=host, name=NETWORK)
            operation = network_request_restart(network=network, actor=admin, source=AuditSource.WEB)
            killed_while_down = _kill_once_down(worker, operation.pk, net)
            assert Operation.objects.get(pk=operation.pk).status == OperationStatus.RUNNING
            time.sleep(STALE_SECONDS + 1.5)  # its heartbeat is silent for longer than the stale limit
            down_before_recovery = not net.isActive()

            # The next worker recovers lost operations as it starts.
            _next, log = start_celery_worker(redis_socket, "worker-next", **_worker_env(private_libvirtd))
            finished = _wait_until_terminal(operation.pk, log)
        print(f"\nkilled while down: {killed_while_down}; down at recovery: {down_before_recovery}; {finished.step}")
        assert finished.status == OperationStatus.SUCCEEDED, finished.error
        if down_before_recovery:
            assert finished.step == "Interrupted; network started and 1 interface(s) re-plugged by recovery"
        else:  # interrupted at another point: libvirtd finished the start the dead worker had asked for
            assert finished.step.startswith("Interrupted; network was running and ")
            assert finished.step.endswith(" re-plugged by recovery")
        assert finished.result["network_running"] and finished.result["failed"] == 0
        assert net.isActive()
        assert _reaches_gateway(guest, private_libvirtd), "the guest cannot reach its gateway after recovery"
    finally:
        conn.close()
