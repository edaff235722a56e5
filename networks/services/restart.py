"""Restarting a network as one watched Operation, re-plugging its running guests."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from networks import selectors
from networks.choices import AuditSource, OperationKind
from networks.hypervisor import restart as hv_restart
from networks.models import Network, Operation
from networks.operation_kinds import operation_kind

from .connections import host_connection
from .hosts import host_request_sync
from .networks import NETWORK_NAME_RE
from .operations import OperationRejected, Outcome, PartlyFailed, Progress, network_operation_request
from .permissions import authorize
from .sync import mirror_network
from .xmlcheck import check_network_xml


@dataclass(frozen=True)
class RestartPreview:
    guests: list
    interruption: str


def network_restart_preview(network: Network) -> RestartPreview:
    guests = list(selectors.running_guests_on_network(network))
    if network.forward_mode in {"bridge", "private", "vepa", "passthrough", "hostdev"}:
        text = "Guests stay connected: libvirt does not own this network's bridge or devices."
    elif network.stp:
        text = "About half a second without the network, then each guest waits the bridge's STP forward delay."
    else:
        text = "About half a second without the network; each guest is re-plugged right after it starts."
    return RestartPreview(guests, text)


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


@operation_kind(OperationKind.NETWORK_RESTART)
def network_restart_run(operation: Operation, progress: Progress) -> Outcome:
    conn = host_connection(operation.host)
    progress.step(20, f"Recording guest interfaces, then stopping and starting {operation.target_name}")

    def report(result: hv_restart.Reattached) -> None:
        how = f"re-plugged ({result.method}, {result.seconds:.2f} s)" if result.ok else f"FAILED: {result.error}"
        progress.log(f"{result.domain} {result.mac}: {how}")

    outcome = hv_restart.restart_network(conn, operation.target_name, operation.params.get("new_xml", ""), report)
    progress.step(90, "Updating the mirror")
    mirror_network(operation.host, outcome.after)
    result = {
        "down_seconds": round(outcome.down_seconds, 3),
        "interfaces": [asdict(r) for r in outcome.interfaces],
        "reconnected": sum(r.ok for r in outcome.interfaces),
        "failed": sum(not r.ok for r in outcome.interfaces),
        "rolled_back": outcome.rolled_back,
    }
    if outcome.rolled_back:
        raise PartlyFailed(f"The new config did not start; the previous one runs again: {outcome.error}", result)
    if result["failed"]:
        raise PartlyFailed(f"{result['failed']} guest interface(s) could not be re-plugged.", result)
    return Outcome(result, after_xml=outcome.after.live_xml)


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


@operation_kind(OperationKind.NETWORK_RENAME)
def network_rename_run(operation: Operation, progress: Progress) -> Outcome:
    conn = host_connection(operation.host)
    new_name = operation.params["new_name"]
    progress.step(30, f"Defining {new_name} and moving over from {operation.target_name}")
    outcome = hv_restart.rename_network(conn, operation.target_name, new_name, operation.params["move_guests"])
    for line in outcome.moved:
        progress.log(f"persistent config of {line} now names {new_name}")
    Network.objects.filter(host=operation.host, name=operation.target_name).update(name=new_name)
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
