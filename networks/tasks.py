"""Celery tasks: ids in, one service call, retry policy only."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from networks.services import hosts as host_services
from networks.services import operations


@shared_task(bind=True, acks_late=True, max_retries=None)
def run_operation(self, operation_id: int) -> None:
    try:
        operations.operation_run(operation_id)
    except operations.OperationBusy as busy:
        if self.request.retries >= settings.KVMWEB_LOCK_RETRY_MAX:
            operations.operation_fail_busy(operation_id)
            return
        operations.note_dispatched(operation_id)
        raise self.retry(exc=busy, countdown=settings.KVMWEB_LOCK_RETRY_SECONDS) from busy
    except operations.RetryLater as later:
        operations.note_dispatched(operation_id)
        raise self.retry(exc=later, countdown=later.delay) from later


@shared_task
def sync_all_hosts() -> None:
    host_services.hosts_sync_all()


@shared_task
def recover_operations() -> None:
    """Periodic, and at every worker start: recover operations whose worker died (each on a
    worker of its host's queue), and send again the queued ones whose broker message was lost."""
    stale_after = timedelta(seconds=settings.KVMWEB_OPERATION_STALE_SECONDS)
    for operation_id, queue in operations.operation_lost_queues(stale_after=stale_after).items():
        recover_operation.apply_async(args=[operation_id], queue=queue)
    operations.operation_redispatch(older_than=timedelta(seconds=settings.KVMWEB_REDISPATCH_SECONDS))


@shared_task
def recover_operation(operation_id: int) -> None:
    operations.operation_recover_lost(
        stale_after=timedelta(seconds=settings.KVMWEB_OPERATION_STALE_SECONDS), operation_id=operation_id
    )


@worker_ready.connect
def _recover_at_start(**_kwargs) -> None:
    # A worker that comes back after a crash recovers what the dead one left running.
    recover_operations.delay()


@worker_ready.connect
def _host_worker_heartbeat(**_kwargs) -> None:
    # Only a worker started by scripts/host-worker.sh on a hypervisor names its host.
    if settings.KVMWEB_HOST_WORKER:
        from networks.services.hostworker import host_worker_heartbeat_start, host_worker_watcher_start

        host_worker_heartbeat_start(host_name=settings.KVMWEB_HOST_WORKER)
        host_worker_watcher_start(host_name=settings.KVMWEB_HOST_WORKER)
