"""The tasks themselves, called in-process: ids in, one service call, retry policy."""

from datetime import timedelta

from django.utils import timezone

from networks import tasks
from networks.choices import AuditSource, OperationStatus
from networks.models import Network, Operation
from networks.services import networks as network_services
from networks.services.operations import operation_claim


def test_the_periodic_sync_requests_one_sync_per_host_as_the_system(demo_host):
    tasks.sync_all_hosts.run()
    tasks.sync_all_hosts.run()
    pending = Operation.objects.filter(kind="host.sync", status=OperationStatus.QUEUED)
    assert pending.count() == 1
    assert pending.get().source == AuditSource.SYSTEM and pending.get().requested_by is None


def test_the_periodic_task_fails_operations_whose_worker_died(demo_host, admin):
    network = Network.objects.get(host=demo_host, name="default")
    operation = network_services.network_request_stop(network=network, actor=admin, source=AuditSource.WEB)
    operation_claim(operation.pk)
    Operation.objects.filter(pk=operation.pk).update(started_at=timezone.now() - timedelta(hours=2))
    tasks.sync_all_hosts.run()
    operation.refresh_from_db()
    assert operation.status == OperationStatus.FAILED and "worker" in operation.error


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
