"""Operations: request, claim, run, report progress, finish, retry and recover.

A request writes the row and an audit event, then enqueues the task once the
transaction commits. The worker claims the row with a conditional UPDATE while holding
the host's row lock, so two workers never run one operation, two operations on one
network never overlap, and a host-wide one (a sync) overlaps none of its host's. No
transaction is held while libvirt is called.

What each kind runs, locks, retries and recovers is declared next to its run function
(`networks.operation_kinds`); this module imports no service. The row is the truth: a
running operation beats a heartbeat, and one whose worker died is recovered from what
it recorded in `checkpoint`; a queued one whose broker message was lost is sent again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from networks import operation_kinds
from networks.choices import ACTIVE_STATUSES, AuditSource, OperationKind, OperationStatus
from networks.hypervisor.errors import HypervisorError, brief_message
from networks.models import Host, Network, Operation

from .audit import actor_name, audit_record
from .db_retry import drop_connection, retry_write
from .permissions import authorize, operation_action

logger = logging.getLogger(__name__)


class OperationBusy(Exception):
    """Another operation on the same network is running; try again shortly."""


class OperationRejected(Exception):
    """A request that breaks a rule; nothing was changed. The message says why."""


class RetryLater(Exception):
    """The host could not be reached; the operation is queued again and runs after `delay` seconds."""

    def __init__(self, delay: float):
        super().__init__(f"retry in {delay} s")
        self.delay = delay


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
    Operation.objects.filter(pk=operation.pk).update(dispatched_at=timezone.now())
    tasks.run_operation.apply_async(args=[operation.pk], queue=queue)


def operation_redispatch(*, older_than: timedelta) -> int:
    """Send again the queued operations whose message may be lost (a broker restarted or lost
    its data). A duplicate message is harmless: only one claim of a queued row succeeds."""
    cutoff = timezone.now() - older_than
    stale = Operation.objects.filter(status=OperationStatus.QUEUED).filter(
        Q(dispatched_at__lt=cutoff) | Q(dispatched_at__isnull=True, created_at__lt=cutoff)
    )
    count = 0
    for operation in stale.select_related("host"):
        enqueue(operation)
        count += 1
    return count


def note_dispatched(operation_id: int) -> None:
    """A task re-sent itself (waiting for a lock or a retry): its message exists."""
    Operation.objects.filter(pk=operation_id).update(dispatched_at=timezone.now())


def _blocking(operation: Operation):
    """Running operations this one may not overlap: on its host, a host-wide one excludes all."""
    running = Operation.objects.filter(status=OperationStatus.RUNNING).exclude(pk=operation.pk)
    if operation.host_id is None:
        return running.filter(lock_key=operation.lock_key)
    on_host = running.filter(host_id=operation.host_id)
    if operation_kinds.spec(operation.kind).lock == operation_kinds.HOST:
        return on_host
    return on_host.filter(Q(lock_key=operation.lock_key) | Q(lock_key__startswith="host:"))


def operation_claim(operation_id: int) -> Operation | None:
    """Mark a queued operation running. None if it is gone, already claimed or cancelled.

    Raises OperationBusy while an operation it may not overlap runs.
    """
    with transaction.atomic():
        operation = Operation.objects.filter(pk=operation_id).first()
        if operation is None or operation.status != OperationStatus.QUEUED:
            return None
        if operation.host_id:
            # Serialises claims per host, so the busy check and the update are one step.
            list(Host.objects.select_for_update().filter(pk=operation.host_id))
        busy = _blocking(operation).first()
        if busy is not None:
            raise OperationBusy(
                f"Waiting for operation #{busy.pk} ({busy.kind}) on {busy.target_name or busy.host_name}"
            )
        now = timezone.now()
        claimed = Operation.objects.filter(pk=operation.pk, status=OperationStatus.QUEUED).update(
            status=OperationStatus.RUNNING, started_at=now, heartbeat_at=now, step="Starting",
            attempts=F("attempts") + 1,
        )  # fmt: skip
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

    # Each write waits out a short database outage (db_retry): a worker that changed a host
    # must still be able to say so once the database is back.
    def step(self, percent: int, text: str) -> None:
        rows = Operation.objects.filter(pk=self.operation.pk)
        retry_write(lambda: rows.update(progress=max(0, min(100, percent)), step=text[:255]))
        self.log(text)

    def log(self, line: str) -> None:
        stamped = f"{timezone.now():%H:%M:%S} {line}\n"
        rows = Operation.objects.filter(pk=self.operation.pk)
        retry_write(lambda: rows.update(log=Concat("log", Value(stamped))))

    def checkpoint(self, **state) -> None:
        """Record what a recovery needs, BEFORE the destructive step it describes: written and
        committed at once, so a worker killed right after still leaves it in the row."""
        self.operation.checkpoint = {**self.operation.checkpoint, **state}
        rows = Operation.objects.filter(pk=self.operation.pk)
        retry_write(lambda: rows.update(checkpoint=self.operation.checkpoint))


class Outcome:
    """What a handler returns: a result for the row and XML for the audit event."""

    def __init__(self, result: dict | None = None, before_xml: str = "", after_xml: str = ""):
        self.result = result or {}
        self.before_xml = before_xml
        self.after_xml = after_xml


def operation_run(operation_id: int) -> Operation | None:
    """Claim and run one operation; every outcome ends in a terminal row state, or the row
    is queued again (RetryLater) when its host could not be reached and may be retried."""
    operation = operation_claim(operation_id)
    if operation is None:
        return None
    spec = operation_kinds.spec(operation.kind)
    progress = Progress(operation)
    progress.log(f"Running on worker for {operation.host_name} (attempt {operation.attempts})")
    try:
        with heartbeat(operation.pk):
            outcome = spec.run(operation, progress)
    except HypervisorError as error:
        if _may_retry(operation, spec, error):
            raise _requeue(operation, spec, progress, error) from None
        return _finish(operation, OperationStatus.FAILED, Outcome(), error=str(error))
    except OperationRejected as error:
        return _finish(operation, OperationStatus.FAILED, Outcome(), error=str(error))
    except PartlyFailed as error:
        return _finish(operation, OperationStatus.FAILED, Outcome(error.result), error=str(error))
    except Exception as error:  # an unexpected bug must still end the row, and say so
        logger.exception("Operation %s crashed", operation.pk)
        return _finish(operation, OperationStatus.FAILED, Outcome(), error=f"Internal error: {error!r}")
    return _finish(operation, OperationStatus.SUCCEEDED, outcome)


def _may_retry(operation: Operation, spec, error: HypervisorError) -> bool:
    # A run that recorded a checkpoint has changed the host: starting it again from the top
    # could apply a change twice, so only an untouched host is retried.
    return error.retryable and not operation.checkpoint and operation.attempts < spec.retry.attempts


def _requeue(operation: Operation, spec, progress: Progress, error: HypervisorError) -> RetryLater:
    delay = spec.retry.delay(operation.attempts)
    progress.log(
        f"Attempt {operation.attempts} of {spec.retry.attempts} failed: {brief_message(str(error))}; "
        f"trying again in {delay:g} s"
    )
    Operation.objects.filter(pk=operation.pk, status=OperationStatus.RUNNING).update(
        status=OperationStatus.QUEUED, step=f"Host unreachable: retrying in {delay:g} s", heartbeat_at=None
    )
    return RetryLater(delay)


@contextlib.contextmanager
def heartbeat(operation_id: int):
    """While the block runs, a thread marks the row alive every KVMWEB_HEARTBEAT_SECONDS; a row
    whose heartbeat stops belongs to a dead worker (operation_recover_lost)."""
    stop = threading.Event()

    def beat() -> None:
        rows = Operation.objects.filter(pk=operation_id, status=OperationStatus.RUNNING)
        try:
            while not stop.wait(settings.KVMWEB_HEARTBEAT_SECONDS):
                try:
                    rows.update(heartbeat_at=timezone.now())
                except Exception:  # the database is away: keep beating once it is back
                    drop_connection(connection)
        finally:
            connection.close()  # this thread's own database connection

    thread = threading.Thread(target=beat, name=f"heartbeat-{operation_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _finish(operation: Operation, status: str, outcome: Outcome, error: str = "", step: str = "") -> Operation:
    """End the row and audit the outcome, waiting out a short database outage (the host has
    changed already: the record of it must land)."""
    error = brief_message(error)  # shown on pages and the API: no quoted file lines, no huge echo
    retry_write(lambda: _finish_write(operation, status, outcome, error, step))
    return operation


def _finish_write(operation: Operation, status: str, outcome: Outcome, error: str, step: str) -> None:
    with transaction.atomic():
        operation.refresh_from_db()
        if operation.is_terminal:  # someone else ended it (a recoverer, a cancel): theirs stands
            logger.warning("Operation %s already ended %s; not marking it %s", operation.pk, operation.status, status)
            return
        operation.status = status
        operation.finished_at = timezone.now()
        operation.result = outcome.result
        operation.error = error
        operation.progress = 100 if status == OperationStatus.SUCCEEDED else operation.progress
        operation.step = step[:255] or ("Done" if status == OperationStatus.SUCCEEDED else "Failed")
        operation.log += f"{timezone.now():%H:%M:%S} {status}{': ' + error if error else ''}\n"
        operation.save(update_fields=["status", "finished_at", "result", "error", "progress", "step", "log"])
        audit_record(
            action=f"{operation.kind}.{status}",
            source=AuditSource.TASK,
            actor=operation.requested_by,
            host=operation.host,
            object_type=operation.kind.split(".")[0],  # host, network, guest, port_forward
            object_name=operation.target_name or operation.host_name,
            message=operation.message,
            operation=operation,
            before_xml=outcome.before_xml,
            after_xml=outcome.after_xml,
            detail=error,
        )


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


def _lost(stale_after: timedelta):
    cutoff = timezone.now() - stale_after
    running = Operation.objects.filter(status=OperationStatus.RUNNING)
    return running.filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)), cutoff


def operation_lost_queues(*, stale_after: timedelta) -> dict[int, str]:
    """Lost operations (their worker stopped beating), each with the queue whose workers reach
    its host: a host with its own worker is recovered there, never over another libvirt."""
    lost, _cutoff = _lost(stale_after)
    return {
        operation.pk: (operation.host.queue if operation.host else "") or settings.CELERY_TASK_DEFAULT_QUEUE
        for operation in lost.select_related("host")
    }


def operation_recover_lost(*, stale_after: timedelta, operation_id: int | None = None) -> int:
    """Recover running operations whose worker stopped beating (killed, or its machine died).

    A kind with a recovery step finishes the job from what the run recorded (the network
    started again, its guests re-plugged...); any other kind is failed as interrupted and its
    host re-read, so the mirror shows what the host really holds. Each ends in a terminal
    state that says what happened; none is left running forever.
    """
    lost, cutoff = _lost(stale_after)
    if operation_id is not None:
        lost = lost.filter(pk=operation_id)
    return sum(_recover(operation.pk, cutoff) for operation in lost)


RECOVERY_ATTEMPTS = 5  # passes of the recovery task that may find the host unreachable


def _recover(operation_id: int, cutoff) -> bool:
    # Only one recoverer takes a lost row: taking it makes its heartbeat fresh again.
    taken = (
        Operation.objects.filter(pk=operation_id, status=OperationStatus.RUNNING)
        .filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True))
        .update(heartbeat_at=timezone.now(), step="Recovering: its worker was lost")
    )
    if not taken:
        return False
    operation = Operation.objects.select_related("host").get(pk=operation_id)
    progress = Progress(operation)
    progress.log("The worker running this operation was lost; recovering from what it recorded")
    recover = operation_kinds.spec(operation.kind).recover
    if recover is None:
        _request_resync(operation)
        _finish(operation, OperationStatus.FAILED, Outcome(), error=INTERRUPTED_NO_RECOVERY, step="Interrupted")
        return True
    try:
        with heartbeat(operation.pk):
            outcome = recover(operation, progress)
    except HypervisorError as error:
        tries = operation.checkpoint.get("recovery_attempts", 0) + 1
        if error.retryable and tries < RECOVERY_ATTEMPTS:  # the host is away: the next pass tries again
            progress.log(f"Recovery attempt {tries} could not reach the host: {brief_message(str(error))}")
            progress.checkpoint(recovery_attempts=tries)
            Operation.objects.filter(pk=operation.pk).update(heartbeat_at=cutoff)
            return False
        _request_resync(operation)
        _finish(operation, OperationStatus.FAILED, Outcome(), error=f"Interrupted, and recovery failed: {error}")
        return True
    except Exception as error:  # recovery must still end the row, and say what it could not do
        logger.exception("Recovery of operation %s failed", operation.pk)
        _request_resync(operation)
        _finish(operation, OperationStatus.FAILED, Outcome(), error=f"Interrupted, and recovery failed: {error}")
        return True
    summary = f"Interrupted; {outcome.result.get('recovery', 'recovered')} by recovery"
    progress.log(summary)
    status = OperationStatus.SUCCEEDED if outcome.result.get("completed") else OperationStatus.FAILED
    _finish(operation, status, outcome, error="" if status == OperationStatus.SUCCEEDED else summary, step=summary)
    return True


INTERRUPTED_NO_RECOVERY = "Interrupted: its worker was lost; the host is synced again to show what it holds."


def _request_resync(operation: Operation) -> None:
    """The mirror may be stale after an interruption: re-read the host."""
    if operation.host is not None and operation.kind != OperationKind.HOST_SYNC:
        host_sync_request(
            host=operation.host, actor=None, source=AuditSource.SYSTEM,
            message=f"re-read after interrupted operation #{operation.pk}",
        )  # fmt: skip


def host_sync_request(*, host: Host, actor, source: str, message: str = "") -> Operation:
    """A sync of `host`: the one already waiting or running, else a new one. The caller has
    checked the actor may ask (hosts.host_request_sync), or is kvmweb itself."""
    pending = Operation.objects.filter(host=host, kind=OperationKind.HOST_SYNC, status__in=ACTIVE_STATUSES).first()
    if pending is not None:
        return pending
    return operation_request(
        kind=OperationKind.HOST_SYNC, host=host, actor=actor, source=source, lock_key=host_lock_key(host),
        target_name=host.name, object_type="host", message=message,
    )  # fmt: skip


def operation_fail_busy(operation_id: int) -> None:
    """Give up on an operation that waited too long for its network."""
    # Only a row still queued: a duplicate message may have claimed it meanwhile.
    taken = Operation.objects.filter(pk=operation_id, status=OperationStatus.QUEUED).update(
        status=OperationStatus.RUNNING, started_at=timezone.now()
    )
    if taken:
        operation = Operation.objects.get(pk=operation_id)
        _finish(operation, OperationStatus.FAILED, Outcome(), error="Gave up waiting for another operation to finish.")
