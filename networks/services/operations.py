"""Operations: request, claim, run, report progress, finish.

A request writes the row and an audit event, then enqueues the task once the
transaction commits. The worker claims the row with a conditional UPDATE while holding
the host's row lock, so two workers never run one operation and two operations on one
network never overlap. No transaction is held while libvirt is called.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Concat
from django.utils import timezone

from networks.choices import AuditSource, OperationKind, OperationStatus
from networks.hypervisor.errors import HypervisorError
from networks.models import Host, Network, Operation

from .audit import actor_name, audit_record
from .permissions import authorize, operation_action

logger = logging.getLogger(__name__)


class OperationBusy(Exception):
    """Another operation on the same network is running; try again shortly."""


class OperationRejected(Exception):
    """A request that breaks a rule; nothing was changed. The message says why."""


def host_lock_key(host: Host) -> str:
    return f"host:{host.pk}"


def network_lock_key(host: Host, network_name: str) -> str:
    return f"network:{host.pk}:{network_name}"


def operation_request(
    *,
    kind: str,
    host: Host,
    actor,
    source: str,
    lock_key: str,
    network: Network | None = None,
    target_name: str = "",
    params: dict | None = None,
    message: str = "",
    object_type: str = "network",
    before_xml: str = "",
) -> Operation:
    """Record the operation and its `requested` audit event; enqueue it on commit."""
    with transaction.atomic():
        operation = Operation.objects.create(
            kind=kind,
            host=host,
            host_name=host.name,
            network=network,
            target_name=target_name or (network.name if network else ""),
            lock_key=lock_key,
            params=params or {},
            requested_by=actor if actor is not None and actor.is_authenticated else None,
            requested_by_name=actor_name(actor),
            source=source,
            message=message[:500],
            step="Waiting for a worker",
        )
        audit_record(
            action=f"{kind}.requested",
            source=source,
            actor=actor,
            host=host,
            object_type=object_type,
            object_name=operation.target_name or host.name,
            message=message,
            operation=operation,
            before_xml=before_xml,
        )
        transaction.on_commit(lambda: enqueue(operation))
    return operation


def network_operation_request(
    *,
    kind: str,
    network: Network,
    actor,
    source: str,
    message: str = "",
    params: dict | None = None,
    before_xml: str | None = None,
) -> Operation:
    """An operation on an existing network: serialised with the network's other operations;
    the audit event's "before" is the persistent config unless given."""
    return operation_request(
        kind=kind,
        host=network.host,
        network=network,
        actor=actor,
        source=source,
        lock_key=network_lock_key(network.host, network.name),
        params=params,
        message=message,
        before_xml=network.inactive_xml or network.live_xml if before_xml is None else before_xml,
    )


def enqueue(operation: Operation) -> None:
    from networks import tasks  # tasks import services: import late to avoid a cycle

    queue = (operation.host.queue if operation.host else "") or settings.CELERY_TASK_DEFAULT_QUEUE
    tasks.run_operation.apply_async(args=[operation.pk], queue=queue)


def operation_claim(operation_id: int) -> Operation | None:
    """Mark a queued operation running. None if it is gone, already claimed or cancelled.

    Raises OperationBusy while another operation with the same lock key runs.
    """
    with transaction.atomic():
        operation = Operation.objects.filter(pk=operation_id).first()
        if operation is None or operation.status != OperationStatus.QUEUED:
            return None
        if operation.host_id:
            # Serialises claims per host, so the busy check and the update are one step.
            list(Host.objects.select_for_update().filter(pk=operation.host_id))
        busy = Operation.objects.filter(lock_key=operation.lock_key, status=OperationStatus.RUNNING)
        if busy.exclude(pk=operation.pk).exists():
            raise OperationBusy(f"Another operation on {operation.lock_key} is running")
        now = timezone.now()
        claimed = Operation.objects.filter(pk=operation.pk, status=OperationStatus.QUEUED).update(
            status=OperationStatus.RUNNING, started_at=now, step="Starting"
        )
    if not claimed:
        return None
    operation.refresh_from_db()
    return operation


class PartlyFailed(Exception):
    """Part of an operation failed; `result` says which parts, and what else was done."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


class Progress:
    """What a running operation tells its watchers: percent, current step, log lines."""

    def __init__(self, operation: Operation):
        self.operation = operation

    def step(self, percent: int, text: str) -> None:
        Operation.objects.filter(pk=self.operation.pk).update(progress=max(0, min(100, percent)), step=text[:255])
        self.log(text)

    def log(self, line: str) -> None:
        stamped = f"{timezone.now():%H:%M:%S} {line}\n"
        Operation.objects.filter(pk=self.operation.pk).update(log=Concat("log", Value(stamped)))


class Outcome:
    """What a handler returns: a result for the row and XML for the audit event."""

    def __init__(self, result: dict | None = None, before_xml: str = "", after_xml: str = ""):
        self.result = result or {}
        self.before_xml = before_xml
        self.after_xml = after_xml


Handler = Callable[[Operation, Progress], Outcome]


def _handlers() -> dict[str, Handler]:
    from . import netupdate, networks, restart, sync, xmledit

    return {
        OperationKind.HOST_SYNC: sync.host_sync_run,
        OperationKind.NETWORK_START: networks.network_start_run,
        OperationKind.NETWORK_STOP: networks.network_stop_run,
        OperationKind.NETWORK_AUTOSTART: networks.network_autostart_run,
        OperationKind.NETWORK_UNDEFINE: networks.network_undefine_run,
        OperationKind.NETWORK_CREATE: networks.network_create_run,
        OperationKind.NETWORK_UPDATE: netupdate.network_update_run,
        OperationKind.NETWORK_BULK_IMPORT: netupdate.network_bulk_run,
        OperationKind.NETWORK_RESTART: restart.network_restart_run,
        OperationKind.NETWORK_RENAME: restart.network_rename_run,
        OperationKind.NETWORK_DEFINE: xmledit.network_define_run,
        OperationKind.NETWORK_XML_LIVE: xmledit.network_xml_live_run,
    }


def operation_run(operation_id: int) -> Operation | None:
    """Claim and run one operation; every outcome ends in a terminal row state."""
    operation = operation_claim(operation_id)
    if operation is None:
        return None
    progress = Progress(operation)
    progress.log(f"Running on worker for {operation.host_name}")
    try:
        outcome = _handlers()[operation.kind](operation, progress)
    except (HypervisorError, OperationRejected) as error:
        return _finish(operation, OperationStatus.FAILED, Outcome(), error=str(error))
    except PartlyFailed as error:
        return _finish(operation, OperationStatus.FAILED, Outcome(error.result), error=str(error))
    except Exception as error:  # an unexpected bug must still end the row, and say so
        logger.exception("Operation %s crashed", operation.pk)
        return _finish(operation, OperationStatus.FAILED, Outcome(), error=f"Internal error: {error!r}")
    return _finish(operation, OperationStatus.SUCCEEDED, outcome)


def _finish(operation: Operation, status: str, outcome: Outcome, error: str = "") -> Operation:
    operation.refresh_from_db()
    operation.status = status
    operation.finished_at = timezone.now()
    operation.result = outcome.result
    operation.error = error
    operation.progress = 100 if status == OperationStatus.SUCCEEDED else operation.progress
    operation.step = "Done" if status == OperationStatus.SUCCEEDED else "Failed"
    operation.save(update_fields=["status", "finished_at", "result", "error", "progress", "step"])
    Progress(operation).log(f"{status}: {error}" if error else status)
    audit_record(
        action=f"{operation.kind}.{status}",
        source=AuditSource.TASK,
        actor=operation.requested_by,
        host=operation.host,
        object_type="host" if operation.kind == OperationKind.HOST_SYNC else "network",
        object_name=operation.target_name or operation.host_name,
        message=operation.message,
        operation=operation,
        before_xml=outcome.before_xml,
        after_xml=outcome.after_xml,
        detail=error,
    )
    return operation


def operation_cancel(*, operation: Operation, actor, source: str) -> Operation:
    """Cancel an operation that no worker has claimed yet (who may request it may cancel it)."""
    authorize(actor=actor, action=operation_action(operation), host=operation.host, source=source,
              object_name=str(operation.pk))  # fmt: skip
    cancelled = Operation.objects.filter(pk=operation.pk, status=OperationStatus.QUEUED).update(
        status=OperationStatus.CANCELLED, finished_at=timezone.now(), step="Cancelled"
    )
    if not cancelled:
        raise OperationRejected("Only a queued operation can be cancelled; this one has already started or ended.")
    operation.refresh_from_db()
    audit_record(
        action=f"{operation.kind}.cancelled",
        source=source,
        actor=actor,
        host=operation.host,
        object_type="operation",
        object_name=str(operation.pk),
        operation=operation,
    )
    return operation


def operation_fail_lost(*, older_than: timedelta) -> int:
    """Fail operations left running by a worker that died; they would block their network."""
    cutoff = timezone.now() - older_than
    lost = Operation.objects.filter(status=OperationStatus.RUNNING, started_at__lt=cutoff)
    count = 0
    for operation in lost:
        _finish(operation, OperationStatus.FAILED, Outcome(), error="The worker running this operation was lost.")
        count += 1
    return count


def operation_fail_busy(operation_id: int) -> None:
    """Give up on an operation that waited too long for its network."""
    operation = Operation.objects.filter(pk=operation_id, status=OperationStatus.QUEUED).first()
    if operation is not None:
        Operation.objects.filter(pk=operation.pk).update(status=OperationStatus.RUNNING, started_at=timezone.now())
        _finish(operation, OperationStatus.FAILED, Outcome(), error="Gave up waiting for another operation to finish.")
