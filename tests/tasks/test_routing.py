"""Workers where they belong: a host's operations go to its queue (Host.queue), and only the
worker consuming that queue runs them. Two real host workers over one private Redis; each
reaches "its hypervisor" through KVMWEB_HOST_WORKER_URI (a test-driver file of its own), so a
mirror shows which worker synced it."""

import re
import time

import pytest

from networks.choices import AuditSource, OperationKind, OperationStatus
from networks.models import Host, Operation
from networks.services import hosts as host_services
from networks.services.operations import host_sync_request
from tests.factories import UserFactory

pytestmark = pytest.mark.worker


def _node(network: str, subnet: str) -> str:
    return (
        "<node><cpu><mhz>2900</mhz><model>x86_64</model><active>2</active><nodes>1</nodes><sockets>1</sockets>"
        "<cores>2</cores><threads>1</threads></cpu><memory>4194304</memory>"
        f"<network><name>{network}</name><bridge name='br-{network}'/>"
        f"<ip address='{subnet}.1' netmask='255.255.255.0'/></network></node>"
    )


def _finished(host: Host, timeout: float = 60) -> list[Operation]:
    """The host's operations once none is queued or running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        operations = list(Operation.objects.filter(host=host))
        if operations and all(op.is_terminal for op in operations):
            return operations
        time.sleep(0.2)
    raise AssertionError(f"operations of {host.name} still unfinished: {[op.status for op in operations]}")


def _until(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.2)


def _received(log_path) -> int:
    return len(re.findall(r"Task networks\.tasks\.run_operation\[[0-9a-f-]+\] received", log_path.read_text()))


def test_an_operation_for_a_host_is_consumed_only_by_its_worker(redis_socket, start_celery_worker, tmp_path):
    admin = UserFactory(username="netops")
    hosts = {}
    for name, network, subnet in (("kvm-x", "only-on-x", "10.61.0"), ("kvm-y", "only-on-y", "10.62.0")):
        (tmp_path / f"{name}.xml").write_text(_node(network, subnet))
        # The stored URI is how central workers would reach it: the built-in test:///default.
        hosts[name] = host_services.host_create(
            name=name, uri="test:///default", queue=name, actor=admin, source=AuditSource.WEB
        )
    logs = {}
    for name in hosts:
        _process, logs[name] = start_celery_worker(
            redis_socket, name=f"host-{name}", queues=name,
            KVMWEB_HOST_WORKER=name, KVMWEB_HOST_WORKER_URI=f"test://{tmp_path / name}.xml",
        )  # fmt: skip
    # Each host worker also watches its own host (its start requests a reconciliation sync,
    # or joins the one still queued).
    for host in hosts.values():
        _until(lambda host=host: Host.objects.get(pk=host.pk).watched_at is not None)
    for host in hosts.values():
        for _ in range(3):  # one after another: a sync already queued would be reused
            _finished(host)
            host_sync_request(host=host, actor=admin, source=AuditSource.WEB)
    x, y = (Host.objects.get(name=name) for name in hosts)
    operations = {host.name: _finished(host) for host in (x, y)}

    for host in (x, y):
        assert {op.status for op in operations[host.name]} == {OperationStatus.SUCCEEDED}
        assert sum(op.kind == OperationKind.HOST_SYNC for op in operations[host.name]) >= 4
    # Each mirror holds what only its own worker can see; test:///default's "default" network
    # would show if the other worker (reaching the host by its stored URI) had synced it.
    assert list(x.networks.values_list("name", flat=True)) == ["only-on-x"]
    assert list(y.networks.values_list("name", flat=True)) == ["only-on-y"]
    # And each worker received exactly its own host's operations.
    assert _received(logs["kvm-x"]) == len(operations["kvm-x"])
    assert _received(logs["kvm-y"]) == len(operations["kvm-y"])
    assert x.worker_seen_at and y.worker_seen_at
