"""Restarting a network as one watched Operation, re-plugging its running guests."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from django.db import transaction

from networks import selectors
from networks.choices import AuditSource, OperationKind
from networks.hypervisor import networks as hv_networks
from networks.hypervisor import restart as hv_restart
from networks.hypervisor.errors import HypervisorError
from networks.models import Network, Operation
from networks.operation_kinds import operation_kind

from . import forwards
from .connections import host_connection
from .hosts import host_request_sync
from .networks import NETWORK_NAME_RE
from .operations import OperationRejected, Outcome, PartlyFailed, Progress, network_operation_request
from .permissions import authorize
from .sync import lock_host, mirror_network
from .xmlcheck import check_network_xml

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestartPreview:
    guests: list
    interruption: str
    forwards: list = field(default_factory=list)  # port forwards of the network's guests, re-applied after


def network_restart_preview(network: Network) -> RestartPreview:
    guests = list(selectors.running_guests_on_network(network))
    if network.forward_mode in {"bridge", "private", "vepa", "passthrough", "hostdev"}:
        text = "Guests stay connected: libvirt does not own this network's bridge or devices."
    elif network.stp:
        text = "About half a second without the network, then each guest waits the bridge's STP forward delay."
    else:
        text = "About half a second without the network; each guest is re-plugged right after it starts."
    return RestartPreview(guests, text, list(forwards.forwards_on_network(network)))


def network_request_restart(*, network: Network, actor, source: str, message: str = "", new_xml: str = "") -> Operation:
    """Restart, optionally making `new_xml` the persistent config first (rolled back if it fails)."""
    action = "network.xml_edit" if new_xml else "network.restart"  # a new config is an admin's change
    authorize(actor=actor, action=action, host=network.host, source=source, object_name=network.name)
    if not network.active:
        raise OperationRejected(f"{network.name} is not running: start it instead.")
    if new_xml:
        check_network_xml(network, new_xml)  # every rule of Edit XML, whoever calls this
    return network_operation_request(
        kind=OperationKind.NETWORK_RESTART,
        network=network,
        actor=actor,
        source=source,
        message=message,
        params={"new_xml": new_xml} if new_xml else {},
    )


def network_restart_recover(operation: Operation, progress: Progress) -> Outcome:
    """The worker died mid-restart: from the checkpoint, start the network if it is down and
    re-plug every recorded interface that has no port. Nothing is applied twice: a running
    network is not restarted, a connected interface is left alone."""
    state = operation.checkpoint
    if "running_xml" not in state:  # killed before it recorded anything: it had not stopped the network
        host_request_sync(host=operation.host, actor=None, source=AuditSource.TASK)
        return Outcome({"recovery": "network left as it was (not yet stopped)", "completed": False})
    conn = host_connection(operation.host)
    outcome, started = hv_restart.resume_restart(conn, state, _reporter(progress), progress.checkpoint)
    _mirror_after_restart(operation, outcome)
    replugged = sum(r.ok and r.method != "already connected" for r in outcome.interfaces)
    if outcome.network_running:
        what = "network started" if started else "network was running"
    else:
        what = "network could NOT be started"
    result = _restart_result(outcome)
    if outcome.network_running:
        result.update(_forwards_after_restart(operation, progress, conn))
    goal = outcome.network_running and not outcome.rolled_back and not result["failed"]
    summary = f"{what} and {replugged} interface(s) re-plugged"
    if outcome.rolled_back:
        summary += f" ({_rollback_text(operation, outcome)})"
    return Outcome({**result, "recovery": summary, "completed": goal}, after_xml=_live_xml(outcome))


@operation_kind(OperationKind.NETWORK_RESTART, recover=network_restart_recover)
def network_restart_run(operation: Operation, progress: Progress) -> Outcome:
    conn = host_connection(operation.host)
    progress.step(20, f"Recording guest interfaces, then stopping and starting {operation.target_name}")
    outcome = hv_restart.restart_network(
        conn,
        operation.target_name,
        operation.params.get("new_xml", ""),
        _reporter(progress),
        checkpoint=progress.checkpoint,  # written before the destroy: a killed worker is recovered from it
    )
    progress.step(90, "Updating the mirror")
    _mirror_after_restart(operation, outcome)
    result = _restart_result(outcome)
    if outcome.rolled_back or not outcome.network_running:
        raise PartlyFailed(_rollback_text(operation, outcome), result)
    result.update(_forwards_after_restart(operation, progress, conn))
    if result["failed"]:
        raise PartlyFailed(f"{result['failed']} guest interface(s) could not be re-plugged.", result)
    missing = forwards.forwards_not_in_place(result)
    if missing:
        raise PartlyFailed(f"{len(missing)} port forward(s) not in place after the restart.", result)
    return Outcome(result, after_xml=outcome.after.live_xml)


def _forwards_after_restart(operation: Operation, progress: Progress, conn) -> dict:
    """Re-apply and verify the port forwards of the network's guests once they are plugged in
    again. The network itself was restarted whatever happens here, so a failure is reported in
    the result, never raised past the restart."""
    progress.step(95, "Re-applying and verifying port forwards")
    try:
        report = forwards.forwards_after_restart(operation.host, operation.target_name, conn)
    except Exception as error:  # the firewall, a file, libvirt: say so, keep the restart's outcome
        logger.exception("Port forwards after the restart of operation %s", operation.pk)
        return {"forwards": [], "forwards_note": f"Port forwards could not be re-applied: {error}"}
    for row in report.get("forwards", []):
        progress.log(f"port forward #{row['id']} {row['forward']}: {row['state']}")
    if "forwards_note" in report:
        progress.log(report["forwards_note"])
    return report


def _reporter(progress: Progress):
    def report(result: hv_restart.Reattached) -> None:
        how = f"re-plugged ({result.method}, {result.seconds:.2f} s)" if result.ok else f"FAILED: {result.error}"
        progress.log(f"{result.domain} {result.mac}: {how}")

    return report


def _restart_result(outcome: hv_restart.RestartOutcome) -> dict:
    return {
        "down_seconds": round(outcome.down_seconds, 3),
        "interfaces": [asdict(r) for r in outcome.interfaces],
        "reconnected": sum(r.ok for r in outcome.interfaces),
        "failed": sum(not r.ok for r in outcome.interfaces),
        "rolled_back": outcome.rolled_back,
        "network_running": outcome.network_running,
        "runs": outcome.runs,
        "notes": list(outcome.notes),
    }


def _rollback_text(operation: Operation, outcome: hv_restart.RestartOutcome) -> str:
    """What a failed start left running, in one line (a row keeps only an error's first line)."""
    intended = "The new config" if operation.params.get("new_xml") else "The persistent config"
    failed = f"{intended} did not start ({outcome.error})" if outcome.error else "The restart was being rolled back"
    notes = "".join(f"; {note}" for note in outcome.notes)
    if not outcome.network_running:
        guests = ", ".join(sorted({r.domain for r in outcome.interfaces})) or "none"
        return f"{failed}; {operation.target_name} is DOWN: {notes.removeprefix('; ')}; guests left unplugged: {guests}"
    kept = " and its persistent config was kept" if outcome.runs == hv_restart.PREVIOUS_RUNNING else ""
    return f"{failed}; {operation.target_name} runs {outcome.runs} again{kept}{notes}"


def _mirror_after_restart(operation: Operation, outcome: hv_restart.RestartOutcome) -> None:
    if outcome.after is not None:
        mirror_network(operation.host, outcome.after)
    else:  # a transient network that could not be started again is gone
        host_request_sync(host=operation.host, actor=None, source=AuditSource.TASK)


def _live_xml(outcome: hv_restart.RestartOutcome) -> str:
    return outcome.after.live_xml if outcome.after is not None else ""


def network_request_rename(
    *, network: Network, new_name: str, move_guests: bool, actor, source: str, message: str = ""
) -> Operation:
    """Rename by defining the config under the new name; guests' interfaces follow on request."""
    authorize(actor=actor, action="network.rename", host=network.host, source=source, object_name=network.name)
    new_name = (new_name or "").strip()
    if not NETWORK_NAME_RE.match(new_name):
        raise OperationRejected("Network names use letters, digits, '.', '_' and '-' (at most 50).")
    if network.host.networks.filter(name=new_name).exists():
        raise OperationRejected(f"A network named {new_name!r} already exists on {network.host.name}.")
    if not network.persistent:
        raise OperationRejected("A transient network cannot be renamed: define it first.")
    running = list(selectors.running_guests_on_network(network))
    if running and not move_guests:
        names = ", ".join(guest.name for guest in running)
        raise OperationRejected(f"Running guests use {network.name} ({names}): ask to move their interfaces too.")
    return network_operation_request(
        kind=OperationKind.NETWORK_RENAME,
        network=network,
        actor=actor,
        source=source,
        message=message,
        params={"new_name": new_name, "move_guests": bool(move_guests)},
        before_xml=network.inactive_xml,
    )


def network_rename_recover(operation: Operation, progress: Progress) -> Outcome:
    """The worker died mid-rename: end with the network defined (and running, if it ran) under
    one name, from the config recorded before the old one was destroyed."""
    state = operation.checkpoint
    if "old_xml" not in state:
        host_request_sync(host=operation.host, actor=None, source=AuditSource.TASK)
        return Outcome({"recovery": "network left as it was (not yet renamed)", "completed": False})
    recovered = hv_restart.resume_rename(host_connection(operation.host), state)
    for line in recovered.moved:
        progress.log(f"persistent config of {line} now names {recovered.runs_as}")
    _mirror_renamed(operation, recovered.runs_as)
    failed = sum(not r.ok for r in recovered.replugged)
    replugged = sum(r.ok and r.method != "already connected" for r in recovered.replugged)
    runs = "runs" if recovered.running else "is defined"
    summary = f"network {runs} as {recovered.runs_as} and {replugged} interface(s) re-plugged"
    result = {
        "recovery": summary + (f", {failed} not" if failed else ""),
        "completed": recovered.runs_as == state["new_name"] and recovered.running == state["was_active"] and not failed,
        "runs_as": recovered.runs_as,
        "network_running": recovered.running,
        "moved": list(recovered.moved),
        "interfaces": [asdict(r) for r in recovered.replugged],
    }
    return Outcome(result)


@operation_kind(OperationKind.NETWORK_RENAME, recover=network_rename_recover)
def network_rename_run(operation: Operation, progress: Progress) -> Outcome:
    conn = host_connection(operation.host)
    new_name = operation.params["new_name"]
    progress.step(30, f"Defining {new_name} and moving over from {operation.target_name}")
    try:
        outcome = hv_restart.rename_network(
            conn,
            operation.target_name,
            new_name,
            operation.params["move_guests"],
            checkpoint=progress.checkpoint,  # the old config, before the old network is destroyed
        )
    except hv_restart.RenameUndoFailed as failure:
        _mirror_renamed(operation, failure.runs_as)
        raise PartlyFailed(str(failure), {"runs_as": failure.runs_as, "network_running": failure.running}) from None
    except HypervisorError:
        if operation.checkpoint:  # the host was changed (and put back): guests' configs may have moved
            host_request_sync(host=operation.host, actor=None, source=AuditSource.TASK)
        raise
    for line in outcome.moved:
        progress.log(f"persistent config of {line} now names {new_name}")
    _rename_row(operation.host, operation.target_name, new_name)
    mirror_network(operation.host, outcome.after)
    host_request_sync(host=operation.host, actor=None, source=AuditSource.TASK)  # guests' interfaces changed
    result = {
        "new_name": new_name,
        "moved": list(outcome.moved),
        "interfaces": [asdict(r) for r in outcome.replugged],
    }
    if any(not r.ok for r in outcome.replugged):
        raise PartlyFailed(f"Renamed to {new_name}, but some running guests could not be moved.", result)
    return Outcome(result, after_xml=outcome.after.inactive_xml)


def _mirror_renamed(operation: Operation, runs_as: str) -> None:
    """Make the mirror follow the network to the name it has now, and re-read the host."""
    old_name = operation.target_name
    if runs_as and runs_as != old_name:
        _rename_row(operation.host, old_name, runs_as)
    if runs_as:
        mirror_network(operation.host, hv_networks.get_network(host_connection(operation.host), runs_as))
    host_request_sync(host=operation.host, actor=None, source=AuditSource.TASK)


def _rename_row(host, old_name: str, new_name: str) -> None:
    """Rename the mirror's row under the host's lock, as every writer of the mirror: a sync
    writing the host meanwhile waits rather than writing the old name back over it."""
    with transaction.atomic():
        lock_host(host.pk)
        Network.objects.filter(host=host, name=old_name).update(name=new_name)
