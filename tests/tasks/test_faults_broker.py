"""Redis loses its data while operations are queued: none is lost, each runs exactly once.

The Operation row is the truth: beat's recovery task re-sends queued operations whose
broker message is gone, and a claim makes a duplicate message harmless.
"""

import subprocess
import sys
import time

import pytest
import redis

from networks.choices import AuditSource, OperationStatus
from networks.models import AuditEvent, Host, Network, Operation
from networks.services import hosts as host_services
from networks.services import networks as network_services
from networks.services.operations import operation_run
from tests.conftest import REPO, _stop, _wait_for

pytestmark = pytest.mark.worker


def _queued_messages(broker) -> int:
    return redis.Redis(unix_socket_path=str(broker.socket)).llen("kvmweb")


@pytest.fixture
def beat(tmp_path, private_redis):
    """Factory: start `celery beat` (a schedule file in tmp) with the worker's settings."""
    started = []

    def start(**env):
        log_path = tmp_path / "beat.log"
        log = log_path.open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "kvmweb", "beat", "--loglevel", "INFO",
             "--schedule", str(tmp_path / "beat-schedule")],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append((process, log))
        _wait_for(lambda: "beat: Starting" in log_path.read_text() or process.poll() is not None, 30, "beat")
        assert process.poll() is None, log_path.read_text()
        return process

    yield start
    for process, log in started:
        _stop(process)
        log.close()


def test_queued_operations_survive_a_broker_that_lost_its_data(
    private_redis, start_celery_worker, beat, demo_uri, admin
):
    host = host_services.host_create(name="demo", uri=demo_uri, actor=admin, source=AuditSource.WEB)
    assert operation_run(host.operations.get().pk).status == OperationStatus.SUCCEEDED
    networks = Network.objects.filter(host=host, name__in=["isolated", "routed", "dualstack"])
    assert networks.count() == 3
    requested = [
        network_services.network_request_autostart(network=network, enabled=True, actor=admin, source=AuditSource.WEB)
        for network in networks
    ]
    requested.append(
        network_services.network_request_stop(
            network=Network.objects.get(host=host, name="default"), actor=admin, source=AuditSource.WEB
        )
    )
    requested.append(host_services.host_request_sync(host=Host.objects.get(pk=host.pk), actor=admin,
                                                     source=AuditSource.WEB))  # fmt: skip
    # The initial sync's message is there too (already run in this process: harmless).
    assert _queued_messages(private_redis) == len(requested) + 1

    private_redis.stop()
    private_redis.start()
    assert _queued_messages(private_redis) == 0, "the fresh Redis should hold nothing"

    settings_env = {"KVMWEB_REDISPATCH_SECONDS": "5", "KVMWEB_RECOVERY_INTERVAL": "1", "KVMWEB_SYNC_INTERVAL": "3600"}
    _, worker_log = start_celery_worker(private_redis.url, **settings_env)
    beat(**_worker_env(worker_log, private_redis.url, settings_env))

    finished = _wait_until_all_terminal([op.pk for op in requested], timeout=60)
    for operation in finished:
        assert operation.status == OperationStatus.SUCCEEDED, (operation.kind, operation.error, operation.log)
        assert operation.attempts == 1, f"{operation.kind} was claimed {operation.attempts} times"
        succeeded = AuditEvent.objects.filter(operation=operation, action=f"{operation.kind}.succeeded")
        assert succeeded.count() == 1, f"{operation.kind} reported success {succeeded.count()} times"
    assert Network.objects.get(host=host, name="default").active is False
    assert all(Network.objects.filter(host=host, name__in=["isolated", "routed", "dualstack"])
               .values_list("autostart", flat=True))  # fmt: skip


def _worker_env(worker_log, broker_url: str, extra: dict) -> dict:
    """The environment the worker got (same database, same settings) for beat."""
    import os

    from tests.conftest import _database_url

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "kvmweb.settings",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": broker_url,
        "KVMWEB_DATA_DIR": str(worker_log.parent),
        "KVMWEB_SECRET_KEY": "worker-test",
        **extra,
    }


def _wait_until_all_terminal(ids: list[int], timeout: float) -> list[Operation]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        operations = list(Operation.objects.filter(pk__in=ids).order_by("pk"))
        if all(op.is_terminal for op in operations):
            return operations
        time.sleep(0.3)
    stuck = {op.pk: (op.kind, op.status, op.step) for op in operations if not op.is_terminal}
    raise AssertionError(f"operations still not finished after {timeout} s: {stuck}")
