"""Network lifecycle: requests (validated, audited) and the runners the worker calls."""

from __future__ import annotations

import re
from dataclasses import asdict

from networks.choices import OperationKind
from networks.hypervisor import networks as hv_networks
from networks.hypervisor import restart as hv_restart
from networks.models import Network, Operation
from networks.operation_kinds import operation_kind

from .connections import host_connection
from .operations import OperationRejected, Outcome, PartlyFailed, Progress, network_operation_request
from .permissions import authorize
from .sync import mirror_network, remirror_on_failure

NETWORK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$")


def _request(kind: str, network: Network, actor, source: str, message: str, params: dict | None = None) -> Operation:
    return network_operation_request(
        kind=kind,
        network=network,
        actor=actor,
        source=source,
        params=params,
        message=message,
    )


def network_request_start(*, network: Network, actor, source: str, message: str = "") -> Operation:
    authorize(actor=actor, action="network.start", host=network.host, source=source, object_name=network.name)
    return _request(OperationKind.NETWORK_START, network, actor, source, message)


def network_request_stop(*, network: Network, actor, source: str, message: str = "") -> Operation:
    authorize(actor=actor, action="network.stop", host=network.host, source=source, object_name=network.name)
    return _request(OperationKind.NETWORK_STOP, network, actor, source, message)


def network_request_autostart(*, network: Network, enabled: bool, actor, source: str, message: str = "") -> Operation:
    authorize(actor=actor, action="network.autostart", host=network.host, source=source, object_name=network.name)
    if not network.persistent:
        raise OperationRejected("A transient network cannot be marked autostart; define it first.")
    return _request(OperationKind.NETWORK_AUTOSTART, network, actor, source, message, {"enabled": bool(enabled)})


def network_request_undefine(*, network: Network, actor, source: str, message: str = "") -> Operation:
    authorize(actor=actor, action="network.undefine", host=network.host, source=source, object_name=network.name)
    return _request(OperationKind.NETWORK_UNDEFINE, network, actor, source, message)


# ---------------------------------------------------------------- runners (worker side)


def _connect(operation: Operation, progress: Progress):
    progress.step(10, f"Connecting to {operation.host_name}")
    return host_connection(operation.host)


def _current_xml(conn, name: str) -> str:
    return hv_networks.get_network(conn, name).inactive_xml


@operation_kind(OperationKind.NETWORK_START)
def network_start_run(operation: Operation, progress: Progress) -> Outcome:
    """Start the network, then re-plug running guests that were attached to it while it was down."""
    conn = _connect(operation, progress)
    progress.step(40, f"Starting network {operation.target_name}")
    with remirror_on_failure(operation) as guard:
        guard.touch()
        info = hv_networks.start_network(conn, operation.target_name)
        captured = hv_restart.interfaces_on_network(conn, operation.target_name)
        if captured:
            progress.step(60, f"Re-plugging {len(captured)} guest interface(s)")
        replugged = hv_restart.reattach_missing(conn, operation.target_name, info.bridge, captured)
    for item in replugged:
        progress.log(f"{item.domain} {item.mac}: {item.method if item.ok else 'not re-plugged: ' + item.error}")
    mirror_network(operation.host, info)
    result = {"active": info.active, "interfaces": [asdict(item) for item in replugged]}
    failed = [item for item in replugged if not item.ok and "driver cannot" not in item.error]
    if failed:
        raise PartlyFailed(f"The network runs, but {len(failed)} guest interface(s) could not be re-plugged.", result)
    return Outcome(result, after_xml=info.live_xml)


@operation_kind(OperationKind.NETWORK_STOP)
def network_stop_run(operation: Operation, progress: Progress) -> Outcome:
    conn = _connect(operation, progress)
    before = hv_networks.get_network(conn, operation.target_name)
    progress.step(40, f"Stopping network {operation.target_name}")
    with remirror_on_failure(operation) as guard:
        guard.touch()
        info = hv_networks.stop_network(conn, operation.target_name)
    if info.persistent:
        mirror_network(operation.host, info)
    else:
        operation.host.networks.filter(name=operation.target_name).delete()  # transient: gone
    return Outcome({"active": False}, before_xml=before.live_xml, after_xml=info.inactive_xml)


@operation_kind(OperationKind.NETWORK_AUTOSTART)
def network_autostart_run(operation: Operation, progress: Progress) -> Outcome:
    conn = _connect(operation, progress)
    enabled = bool(operation.params.get("enabled"))
    progress.step(40, f"Setting autostart {'on' if enabled else 'off'}")
    with remirror_on_failure(operation) as guard:
        guard.touch()
        info = hv_networks.set_network_autostart(conn, operation.target_name, enabled)
    mirror_network(operation.host, info)
    return Outcome({"autostart": info.autostart})


@operation_kind(OperationKind.NETWORK_UNDEFINE)
def network_undefine_run(operation: Operation, progress: Progress) -> Outcome:
    conn = _connect(operation, progress)
    before_xml = _current_xml(conn, operation.target_name)
    progress.step(40, f"Stopping and undefining {operation.target_name}")
    with remirror_on_failure(operation) as guard:  # a failed undefine may have stopped it
        guard.touch()
        hv_networks.undefine_network(conn, operation.target_name)
    operation.host.networks.filter(name=operation.target_name).delete()
    return Outcome({"undefined": True}, before_xml=before_xml)


@operation_kind(OperationKind.NETWORK_CREATE)
def network_create_run(operation: Operation, progress: Progress) -> Outcome:
    conn = _connect(operation, progress)
    params = operation.params
    progress.step(40, f"Defining network {operation.target_name}")
    with remirror_on_failure(operation) as guard:  # define undoes itself, unless its undo fails
        guard.touch()
        info = hv_networks.define_network(
            conn, params["xml"], start=params["start"], autostart=params["autostart"],
            keep_defined=params.get("keep_defined", False),
        )  # fmt: skip
    network = mirror_network(operation.host, info)
    Operation.objects.filter(pk=operation.pk).update(network=network)
    return Outcome({"active": info.active, "network_id": network.pk}, after_xml=info.inactive_xml)
