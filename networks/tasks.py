"""Celery tasks: ids in, one service call, retry policy only."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from networks.services import hosts as host_services
from networks.services import operations


@shared_task(bind=True, acks_late=True, soft_time_limit=1800, time_limit=1900, max_retries=None)
def run_operation(self, operation_id: int) -> None:
    try:
        operations.operation_run(operation_id)
    except operations.OperationBusy as busy:
        if self.request.retries >= settings.KVMWEB_LOCK_RETRY_MAX:
            operations.operation_fail_busy(operation_id)
            return
        raise self.retry(exc=busy, countdown=settings.KVMWEB_LOCK_RETRY_SECONDS) from busy


@shared_task
def sync_all_hosts() -> None:
    host_services.hosts_sync_all()
