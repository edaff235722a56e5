"""The tasks themselves, called in-process: ids in, one service call, retry policy."""

from datetime import timedelta

from django.utils import timezone

from networks import tasks
from networks.choices import AuditSource, OperationStatus
from networks.models import AuditEvent, Host, Network, Operation
from networks.services import networks as network_services
from networks.services import operations
from networks.services.operations import operation_claim


def test_the_periodic_sync_requests_one_sync_per_host_as_the_system(demo_host):
    tasks.sync_all_hosts.run()
    tasks.sync_all_hosts.run()
    pending = Operation.objects.filter(kind="host.sync", status=OperationStatus.QUEUED)
    assert pending.count() == 1
    assert pending.get().source == AuditSource.SYSTEM and pending.get().requested_by is None


def test_the_recovery_task_ends_operations_whose_worker_stopped_beating(demo_host, admin, settings, monkeypatch):
    network = Network.objects.get(host=demo_host, name="default")
    lost = network_services.network_request_stop(network=network, actor=admin, source=AuditSource.WEB)
    alive = network_services.network_request_start(
        network=Network.objects.get(host=demo_host, name="isolated"), actor=admin, source=AuditSource.WEB
    )
    operation_claim(lost.pk)
    operation_claim(alive.pk)
    silent_since = timezone.now() - timedelta(seconds=settings.KVMWEB_OPERATION_STALE_SECONDS + 5)
    Operation.objects.filter(pk=lost.pk).update(heartbeat_at=silent_since)
    sent = []
    monkeypatch.setattr(tasks.recover_operation, "apply_async", lambda args, queue: sent.append((args, queue)))
    tasks.recover_operations.run()
    assert sent == [([lost.pk], "kvmweb")], "each lost operation is recovered on its host's queue"
    tasks.recover_operation.run(lost.pk)
    lost.refresh_from_db()
    alive.refresh_from_db()
    assert lost.status == OperationStatus.FAILED and "worker was lost" in lost.error
    assert alive.status == OperationStatus.RUNNING, "a worker that still beats keeps its operation"
    resync = Operation.objects.get(kind="host.sync", status=OperationStatus.QUEUED)
    assert str(lost.pk) in resync.message, "the host is re-read to show what the lost run left"


def test_the_recovery_task_sends_again_a_queued_operation_whose_message_is_old(demo_host, admin, settings, monkeypatch):
    network = Network.objects.get(host=demo_host, name="default")
    queued = network_services.network_request_start(network=network, actor=admin, source=AuditSource.WEB)
    old = timezone.now() - timedelta(seconds=settings.KVMWEB_REDISPATCH_SECONDS + 5)
    Operation.objects.filter(pk=queued.pk).update(dispatched_at=old)
    fresh = network_services.network_request_stop(network=network, actor=admin, source=AuditSource.WEB)
    Operation.objects.filter(pk=fresh.pk).update(dispatched_at=timezone.now())
    sent = []  # the broker is not what is tested here: tests/tasks/test_faults_* lose a real one
    monkeypatch.setattr(tasks.run_operation, "apply_async", lambda args, queue: sent.append(args))
    tasks.recover_operations.run()
    assert sent == [[queued.pk]]


def test_an_operation_that_waits_too_long_for_its_network_fails_clearly(demo_host, admin, settings):
    settings.KVMWEB_LOCK_RETRY_MAX = 0
    network = Network.objects.get(host=demo_host, name="default")
    running = network_services.network_request_stop(network=network, actor=admin, source=AuditSource.WEB)
    operation_claim(running.pk)
    waiting = network_services.network_request_start(network=network, actor=admin, source=AuditSource.WEB)
    tasks.run_operation.apply(args=[waiting.pk])
    waiting.refresh_from_db()
    assert waiting.status == OperationStatus.FAILED and "waiting" in waiting.error


def test_running_a_task_runs_the_operation(demo_host, admin, demo_uri):
    network = Network.objects.get(host=demo_host, name="isolated")
    operation = network_services.network_request_stop(network=network, actor=admin, source=AuditSource.WEB)
    tasks.run_operation.apply(args=[operation.pk])
    operation.refresh_from_db()
    assert operation.status == OperationStatus.SUCCEEDED


def test_a_lost_operation_of_a_host_with_its_own_worker_is_recovered_there(demo_host, admin, settings):
    Host.objects.filter(pk=demo_host.pk).update(queue="kvm-demo")
    network = Network.objects.get(host=demo_host, name="default")
    lost = network_services.network_request_stop(network=network, actor=admin, source=AuditSource.WEB)
    operation_claim(lost.pk)
    Operation.objects.filter(pk=lost.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    stale = timedelta(seconds=settings.KVMWEB_OPERATION_STALE_SECONDS)
    assert operations.operation_lost_queues(stale_after=stale) == {lost.pk: "kvm-demo"}


def test_a_worker_that_ends_an_operation_a_recoverer_already_ended_changes_nothing(demo_host, admin):
    network = Network.objects.get(host=demo_host, name="default")
    operation = network_services.network_request_stop(network=network, actor=admin, source=AuditSource.WEB)
    operation_claim(operation.pk)
    Operation.objects.filter(pk=operation.pk).update(status=OperationStatus.FAILED, error="recovered")
    operations._finish(operation, OperationStatus.SUCCEEDED, operations.Outcome())
    operation.refresh_from_db()
    assert (operation.status, operation.error) == (OperationStatus.FAILED, "recovered")
    assert not AuditEvent.objects.filter(action="network.stop.succeeded").exists()
