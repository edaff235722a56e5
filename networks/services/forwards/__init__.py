"""Port forwards: a host port (or range) forwarded to a port of a guest on a NAT or routed network.

A request checks the forward, saves the row (the desired state) and asks for an Operation in one
transaction. The operation runs on the host's own worker (the one consuming `Host.queue`, on the
hypervisor, as root): only it can reach the host's firewall. Every run applies the host's whole
set of forwards (networks.forwarding.engine), so a run repeated from the top changes nothing
more: recovering a lost run is running it again. Deleting removes the row in the request; the run
then applies the set without it, which removes its rules.

The host worker also looks at its host's forwards every KVMWEB_FORWARD_CHECK_SECONDS
(`host_forwards_periodic_check`, from its heartbeat): it records what the firewall holds (a
stopped guest, a failed hook, a flushed chain show on the pages) and asks for a re-apply when
what the host should hold has changed since the last apply (a new lease, a NIC on another
network). A guest interface run asks for one too (`after_guest_change`).

The checks live in `checks`, what the host should hold and does hold in `hostside`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from networks import operation_kinds
from networks.choices import ACTIVE_STATUSES, AuditSource, ForwardState, OperationKind
from networks.forwarding.rules import FirewallError
from networks.models import Host, Operation, PortForward

from ..connections import host_connection, in_host_worker
from ..operations import OperationRejected, Outcome, PartlyFailed, Progress, host_lock_key, operation_request
from ..permissions import authorize
from .checks import (
    COMMENT_MAX,
    SHIFTED_RANGE_MAX,
    SOURCE_CIDRS_MAX,
    ForwardSpec,
    ForwardWarning,
    check_forward,
    check_host_worker,
    forward_current_warnings,
    spec_of,
)
from .hostside import (
    GOOD_STATES,
    WORKER_ENV,
    applied_rules,
    apply_host_forwards,
    check_host_forwards,
    forwards_after_restart,
    forwards_not_in_place,
    forwards_on_network,
    forwards_report,
    host_forward_plan,
    host_forwards_overview,
    host_worker_present,
    installed_plan,
    live_state,
    plan_changes,
    rules_digest,
)

__all__ = [
    "COMMENT_MAX", "SHIFTED_RANGE_MAX", "SOURCE_CIDRS_MAX", "ForwardRequested", "ForwardSpec", "ForwardWarning",
    "after_guest_change", "forward_current_warnings", "forward_document", "forwards_after_restart",
    "forwards_not_in_place", "forwards_on_network", "host_forward_plan", "host_forwards_overview",
    "host_forwards_periodic_check", "host_worker_present", "in_host_worker", "live_state",
    "port_forward_request_create", "port_forward_request_delete", "port_forward_request_reapply",
    "port_forward_request_update",
]  # fmt: skip
OBJECT_TYPE = "port_forward"
FORWARD_KINDS = (
    OperationKind.PORT_FORWARD_CREATE,
    OperationKind.PORT_FORWARD_UPDATE,
    OperationKind.PORT_FORWARD_DELETE,
    OperationKind.PORT_FORWARD_REAPPLY,
)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForwardRequested:
    forward: PortForward
    operation: Operation
    warnings: tuple[ForwardWarning, ...] = ()


def forward_document(forward: PortForward) -> str:
    """The forward as the audit log keeps it before and after a change (JSON, one key a line)."""
    fields = {
        "id": forward.pk,
        "host": forward.host.name,
        "protocol": forward.protocol,
        "host_address": forward.host_address or "",
        "host_ports": forward.host_ports,
        "guest": forward.guest_name,
        "guest_mac": forward.guest_mac,
        "guest_ports": forward.guest_ports,
        "source_cidrs": list(forward.source_cidrs),
        "enabled": forward.enabled,
        "comment": forward.comment,
    }
    return json.dumps(fields, indent=1, sort_keys=True, ensure_ascii=False)


def _request(kind: str, forward: PortForward, actor, source: str, message: str, params: dict, before: str = ""):
    return operation_request(
        kind=kind,
        host=forward.host,
        actor=actor,
        source=source,
        lock_key=host_lock_key(forward.host),
        target_name=str(forward)[:255],
        params={"forward_id": forward.pk, "before": before, **params},
        message=message,
        object_type=OBJECT_TYPE,
        before_xml=before,
    )


def _lock_host(host: Host) -> None:
    """Inside a transaction: one forward request of a host at a time, so two requests for the
    same host port cannot both pass the overlap check before either is saved."""
    Host.objects.select_for_update().filter(pk=host.pk).first()


def port_forward_request_create(*, host: Host, spec: ForwardSpec, actor, source: str, message: str = ""):
    """Save a new forward and ask its host worker to apply it."""
    authorize(actor=actor, action="port_forward.create", host=host, source=source, object_name=host.name)
    with transaction.atomic():
        _lock_host(host)
        checked = check_forward(host, spec)  # under the lock: it sees every forward saved before
        forward = PortForward.objects.create(**checked.values, guest_address=checked.target.address or None)
        operation = _request(OperationKind.PORT_FORWARD_CREATE, forward, actor, source, message, {})
    return ForwardRequested(forward, operation, checked.warnings)


def port_forward_request_update(*, forward: PortForward, changes: dict, actor, source: str, message: str = ""):
    """Change a forward (`changes`: ForwardSpec field names) and apply the host's set again."""
    host = forward.host
    authorize(actor=actor, action="port_forward.update", host=host, source=source, object_name=str(forward))
    with transaction.atomic():
        _lock_host(host)
        forward = PortForward.objects.select_for_update().get(pk=forward.pk)
        checked = check_forward(host, spec_of(forward, **changes), exclude_pk=forward.pk)
        before = forward_document(forward)
        for name, value in checked.values.items():
            setattr(forward, name, value)
        forward.state = ForwardState.UNKNOWN  # what the host has is no longer known until the run
        forward.save()
        operation = _request(OperationKind.PORT_FORWARD_UPDATE, forward, actor, source, message, {}, before)
    return ForwardRequested(forward, operation, checked.warnings)


def port_forward_request_delete(*, forward: PortForward, actor, source: str, message: str = "") -> Operation:
    """Remove the forward now (the desired state); its operation removes its rules from the host."""
    host = forward.host
    authorize(actor=actor, action="port_forward.delete", host=host, source=source, object_name=str(forward))
    check_host_worker(host)
    with transaction.atomic():
        before = forward_document(forward)
        params = {"description": str(forward)}
        operation = _request(OperationKind.PORT_FORWARD_DELETE, forward, actor, source, message, params, before)
        forward.delete()
    return operation


def port_forward_request_reapply(
    *, host: Host, forward: PortForward | None = None, actor, source: str, message: str = "", params=None
) -> Operation:
    """Apply the host's forwards again (all of them; `forward` names the one the user asked about)."""
    name = str(forward) if forward else host.name
    authorize(actor=actor, action="port_forward.reapply", host=host, source=source, object_name=name)
    check_host_worker(host)
    return operation_request(
        kind=OperationKind.PORT_FORWARD_REAPPLY,
        host=host,
        actor=actor,
        source=source,
        lock_key=host_lock_key(host),
        target_name=name[:255],
        params={"forward_id": forward.pk if forward else None, **(params or {})},
        message=message,
        object_type=OBJECT_TYPE,
    )


def after_guest_change(host: Host, guest_name: str) -> Operation | None:
    """A guest interface run changed `guest_name`'s NICs (or removed the guest): its forwards may
    point at a NIC that moved to another network or is gone, so the host's set is applied again
    (source system), by its host worker. Nothing when the guest has no forward or the host has
    no host worker queue (forwards cannot be applied there at all)."""
    if not host.queue or not PortForward.objects.filter(host=host, guest_name=guest_name).exists():
        return None
    return port_forward_request_reapply(
        host=host, actor=None, source=AuditSource.SYSTEM,
        message=f"{guest_name}'s interfaces changed: its port forwards follow them",
    )  # fmt: skip


def host_forwards_periodic_check(host: Host) -> dict | None:
    """The host worker's look at its own host's forwards, every KVMWEB_FORWARD_CHECK_SECONDS.

    Records each forward's state as the firewall holds it now (rules present, missing, guest
    stopped), so the pages follow a guest that stopped, a hook that failed or a flushed chain.
    When the rules the host should hold differ from those last applied (the rules file the hooks
    read): a guest without a reservation got another lease, a NIC moved to another network, a
    reservation changed outside kvmweb, it asks for a re-apply (source system); not again for
    the same rule set while no other forward operation came after it, so a re-apply that keeps
    failing is not asked for again and again.

    Skipped (None) where this is not the host's worker, when the host has no forward, and while
    a forward operation of the host is queued or running (it records the states itself).
    Returns {"states": …, "changes": [...], "reapply": operation id or None}."""
    if not in_host_worker(host) or not PortForward.objects.filter(host=host).exists():
        return None
    if Operation.objects.filter(host=host, kind__in=FORWARD_KINDS, status__in=ACTIVE_STATUSES).exists():
        return None
    conn = host_connection(host)
    plan = installed_plan(host, conn)
    checked = check_host_forwards(host, conn, plan=plan)
    applied = applied_rules()
    changes = plan_changes(host, plan, applied) if applied is not None else []
    operation = _reapply_for(host, plan, changes) if changes else None
    return {"states": checked.states, "changes": changes, "reapply": operation.pk if operation else None}


def _reapply_for(host: Host, plan, changes: list[str]) -> Operation | None:
    digest = rules_digest(plan.rules)
    last = Operation.objects.filter(host=host, kind__in=FORWARD_KINDS).order_by("-pk").first()
    if last is not None and last.source == AuditSource.SYSTEM and last.params.get("rules_digest") == digest:
        return None  # the last apply was asked for this very set, and did not make it so: it says why
    logger.info("Port forwards of %s changed since they were applied: %s", host.name, "; ".join(changes))
    return port_forward_request_reapply(
        host=host, actor=None, source=AuditSource.SYSTEM, params={"rules_digest": digest},
        message=("The rules the host should hold changed since the last apply: " + "; ".join(changes))[:500],
    )  # fmt: skip


def _require_host_worker(host: Host) -> None:
    if not in_host_worker(host):
        raise OperationRejected(
            f"Port forwards of {host.name} are applied by its host worker (scripts/host-worker.sh {host.name} "
            f"on the hypervisor); this worker is not it ({WORKER_ENV} is "
            f"{settings.KVMWEB_HOST_WORKER or 'unset'}). Check that only the host worker consumes "
            f"queue {host.queue or '(none)'}."
        )


def _run(operation: Operation, progress: Progress) -> Outcome:
    host = operation.host
    _require_host_worker(host)
    conn = host_connection(host)
    progress.step(30, f"Applying the port forwards of {host.name}")
    try:
        applied = apply_host_forwards(host, conn)
    except (FirewallError, OSError) as error:
        raise OperationRejected(f"The host's firewall could not be changed: {error}") from None
    report = forwards_report(host, applied)
    _log_report(progress, report)
    result = {"forwards": report, "firewall_backend": host.firewall_backend}
    if applied.warnings:
        result["warnings"] = list(applied.warnings)
        for warning in applied.warnings:
            progress.log(f"Warning: {warning}")
    if operation.kind == OperationKind.PORT_FORWARD_DELETE:
        result["removed"] = operation.params.get("description", "")
    after = PortForward.objects.filter(pk=operation.params.get("forward_id")).first()
    outcome = Outcome(result, before_xml=operation.params.get("before", ""),
                      after_xml=forward_document(after) if after else "")  # fmt: skip
    _fail_unless_applied(operation, report, outcome)
    return outcome


def _log_report(progress: Progress, report: list[dict]) -> None:
    for row in report:
        why = f" ({row['reason']})" if "reason" in row else ""
        progress.log(f"#{row['id']} {row['forward']}: {row['state']}{why}")


def _fail_unless_applied(operation: Operation, report: list[dict], outcome: Outcome) -> None:
    """The run fails when the forward it is about (or, for a host-wide re-apply, any forward)
    is not in place; other forwards' troubles are reported, not failed on."""
    target = operation.params.get("forward_id")
    concerned = [row for row in report if target is None or row["id"] == target]
    bad = [row for row in concerned if row["state"] not in GOOD_STATES]
    if bad:
        names = "; ".join(f"#{row['id']} {row['forward']}: {row['state']}" for row in bad)
        raise PartlyFailed(f"{len(bad)} forward(s) not in place: {names}", outcome.result)


def _recover(operation: Operation, progress: Progress) -> Outcome:
    """A lost worker's run is simply run again: it applies the host's whole set, which changes
    nothing that is already in place (idempotent), so nothing is applied twice."""
    outcome = _run(operation, progress)
    outcome.result.update(recovery="port forwards re-applied", completed=True)
    return outcome


for _kind in FORWARD_KINDS:
    operation_kinds.operation_kind(_kind, lock=operation_kinds.HOST, recover=_recover)(_run)
