"""Live network edits with virNetworkUpdate: validate, preview, request, run.

Each section's `plan()` checks a change against a network's parsed XML and returns the
exact fragment and parentIndex to send. The request checks it against the mirror (a bad
change gets field errors and no Operation); the worker checks it again against the XML it
has just read from the host, so a stale mirror never makes libvirt overwrite the wrong entry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.core.exceptions import ValidationError

from networks.choices import OperationKind
from networks.hypervisor import networks as hv_networks
from networks.hypervisor import restart as hv_restart
from networks.hypervisor import updates as hv_updates
from networks.hypervisor import xml
from networks.hypervisor.errors import HypervisorError
from networks.hypervisor.types import NetworkInfo
from networks.models import DhcpReservation, Network, Operation
from networks.operation_kinds import operation_kind

from ..connections import host_connection
from ..operations import OperationRejected, Outcome, PartlyFailed, Progress, network_operation_request
from ..permissions import authorize
from ..sync import mirror_network
from . import bulk
from .common import UpdatePlan, invalid
from .dhcp import DhcpHostSection, DhcpRangeSection
from .dns import DnsHostSection, DnsSrvSection, DnsTxtSection
from .effects import Effect, predict_effect
from .ports import ForwardInterfaceSection, PortgroupSection

SECTIONS = {
    handler.section: handler
    for handler in (
        DhcpHostSection(),
        DhcpRangeSection(),
        DnsHostSection(),
        DnsTxtSection(),
        DnsSrvSection(),
        PortgroupSection(),
        ForwardInterfaceSection(),
    )
}
SCOPES = ("both", "config", "live")


@dataclass(frozen=True)
class Preview:
    plan: UpdatePlan
    scope: str
    effect: Effect
    warnings: tuple[str, ...]


def update_action(section: str) -> str:
    """The permission a net-update of `section` needs (forward interfaces are an admin's)."""
    return f"network.update.{section}" if section in SECTIONS else "network.update.unknown"


def effective_scope(scope: str, *, active: bool, persistent: bool) -> str:
    """The scope that will really apply; an inactive network can only change its config."""
    if scope not in SCOPES:
        raise invalid("scope", f"Choose one of {', '.join(SCOPES)}.")
    if not active:
        if scope == "live":
            raise invalid("scope", "The network is not running: choose the persistent config.")
        return "config"
    if not persistent:
        if scope == "config":
            raise invalid("scope", "A transient network has no persistent config: choose the running network.")
        return "live"
    return scope


def plan_update(section: str, command: str, values: dict, key: str, info_by_scope: list[NetworkInfo]) -> UpdatePlan:
    """Check the change against every config it will touch; they must agree on the entry."""
    handler = SECTIONS.get(section)
    if handler is None:
        raise invalid("section", f"Unknown section {section!r}.")
    if command not in handler.commands:
        raise invalid("command", f"libvirt cannot {command} a {section} entry; allowed: {', '.join(handler.commands)}.")
    plans = [handler.plan(command, values, info, key) for info in info_by_scope]
    if any((p.fragment, p.parent_index) != (plans[0].fragment, plans[0].parent_index) for p in plans):
        raise ValidationError(
            "The running and persistent configs of this network differ here: apply the change to one at a time."
        )
    warnings = tuple(dict.fromkeys(w for p in plans for w in p.warnings))
    first = plans[0]
    return UpdatePlan(first.section, first.command, first.fragment, first.parent_index, first.summary, warnings)


def _configs(live_xml: str, inactive_xml: str, scope: str, **state) -> list[NetworkInfo]:
    live = xml.parse_network(live_xml, inactive_xml, **state)
    if scope == "live" or inactive_xml == live_xml:
        return [live]
    config = xml.parse_network(inactive_xml, inactive_xml, **state)
    return [config] if scope == "config" else [live, config]


def _fleet_warnings(network: Network, section: str, values: dict, plan: UpdatePlan) -> tuple[str, ...]:
    """The same MAC or IP reserved on another network of the fleet: allowed, but worth a look."""
    if section != "ip-dhcp-host" or plan.command == "delete":
        return ()
    host = xml.parse(plan.fragment)
    elsewhere = DhcpReservation.objects.exclude(network=network).select_related("network__host")
    found = elsewhere.filter(mac=host.get("mac", "-")) | elsewhere.filter(address=host.get("ip"))
    return tuple(
        f"{r.mac or r.host_id} → {r.address} is also reserved on {r.network.name}@{r.network.host.name}."
        for r in found[:5]
    )


def network_update_preview(
    *, network: Network, section: str, command: str, values: dict, key: str = "", scope: str = "both"
) -> Preview:
    """What the change will do, or a ValidationError saying why it cannot be made."""
    scope = effective_scope(scope, active=network.active, persistent=network.persistent)
    infos = _configs(network.live_xml, network.inactive_xml or network.live_xml, scope, active=network.active)
    plan = plan_update(section, command, values, key, infos)
    effect = predict_effect(section=section, forward_mode=network.forward_mode, active=network.active, scope=scope)
    warnings = plan.warnings + _fleet_warnings(network, section, values, plan)
    if effect.lost_on_restart:
        warnings += ("A running-only change is lost at the network's next restart.",)
    return Preview(plan, scope, effect, warnings)


def network_request_update(
    *,
    network: Network,
    section: str,
    command: str,
    values: dict,
    actor,
    source: str,
    key: str = "",
    scope: str = "both",
    message: str = "",
) -> Operation:
    authorize(actor=actor, action=update_action(section), host=network.host, source=source, object_name=network.name)
    preview = network_update_preview(
        network=network, section=section, command=command, values=values, key=key, scope=scope
    )
    return network_operation_request(
        kind=OperationKind.NETWORK_UPDATE,
        network=network,
        actor=actor,
        source=source,
        params={
            "section": section,
            "command": command,
            "values": {k: v for k, v in values.items() if v not in (None, "")},
            "key": key,
            "scope": preview.scope,
            "summary": preview.plan.summary,
        },
        message=message,
        before_xml=network.inactive_xml if preview.scope == "config" else network.live_xml,
    )


@operation_kind(OperationKind.NETWORK_UPDATE)
def network_update_run(operation: Operation, progress: Progress) -> Outcome:
    params = operation.params
    progress.step(10, f"Connecting to {operation.host_name}")
    conn = host_connection(operation.host)
    progress.step(25, f"Reading {operation.target_name} and checking the change again")
    fresh = hv_networks.get_network(conn, operation.target_name)
    scope = params["scope"]
    infos = _configs(fresh.live_xml, fresh.inactive_xml, scope, active=fresh.active)
    try:
        plan = plan_update(params["section"], params["command"], params["values"], params.get("key", ""), infos)
    except ValidationError as error:
        raise OperationRejected(f"The network changed since the request: {_flatten(error)}") from None
    progress.step(50, f"{plan.summary} ({scope})")
    after = hv_updates.update_network(
        conn,
        operation.target_name,
        command=plan.command,
        section=plan.section,
        fragment=plan.fragment,
        parent_index=plan.parent_index,
        scope=scope,
    )
    progress.step(90, "Updating the mirror")
    mirror_network(operation.host, after)
    before_xml, after_xml = (
        (fresh.inactive_xml, after.inactive_xml) if scope == "config" else (fresh.live_xml, after.live_xml)
    )
    return Outcome({"summary": plan.summary, "scope": scope}, before_xml=before_xml, after_xml=after_xml)


def _flatten(error: ValidationError) -> str:
    if hasattr(error, "error_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in error.message_dict.items())
    return " ".join(error.messages)


# ---------------------------------------------------------------- bulk import of reservations


@dataclass(frozen=True)
class BulkPreview:
    rows: list[bulk.BulkRow]
    valid: int
    invalid: int
    seconds_by_strategy: dict[str, float]
    live_effect: Effect


def network_bulk_preview(*, network: Network, csv_text: str) -> BulkPreview:
    rows, _ = bulk.check_rows(bulk.parse_csv(csv_text), xml.parse_network(network.live_xml))
    valid = sum(row.ok for row in rows)
    return BulkPreview(
        rows=rows,
        valid=valid,
        invalid=len(rows) - valid,
        seconds_by_strategy={
            s: bulk.predicted_seconds(valid, forward_mode=network.forward_mode, strategy=s) for s in bulk.STRATEGIES
        },
        live_effect=predict_effect(
            section="ip-dhcp-host", forward_mode=network.forward_mode, active=network.active, scope="both"
        ),
    )


def network_request_bulk_import(
    *, network: Network, csv_text: str, strategy: str, actor, source: str, message: str = ""
) -> Operation:
    """One Operation that adds every valid row; invalid rows are reported, never sent."""
    authorize(actor=actor, action="network.bulk_import", host=network.host, source=source, object_name=network.name)
    if strategy not in bulk.STRATEGIES:
        raise invalid("strategy", f"Choose one of {', '.join(bulk.STRATEGIES)}.")
    preview = network_bulk_preview(network=network, csv_text=csv_text)
    if not preview.valid:
        raise invalid("csv", "No row of this file can be imported.")
    scope = effective_scope(
        "both" if strategy == "live" else "config", active=network.active, persistent=network.persistent
    )
    return network_operation_request(
        kind=OperationKind.NETWORK_BULK_IMPORT,
        network=network,
        actor=actor,
        source=source,
        params={
            "rows": [{"line": row.line, **row.values} for row in preview.rows if row.ok],
            "skipped": [{"line": row.line, "errors": row.errors} for row in preview.rows if not row.ok],
            "scope": scope,
            "strategy": strategy,
            "summary": f"Import {preview.valid} DHCP reservations ({strategy})",
        },
        message=message,
        before_xml=network.live_xml,
    )


@operation_kind(OperationKind.NETWORK_BULK_IMPORT)
def network_bulk_run(operation: Operation, progress: Progress) -> Outcome:
    """Apply the rows one by one over one connection, each checked against the fresh XML."""
    params, scope = operation.params, operation.params["scope"]
    conn = host_connection(operation.host)
    fresh = hv_networks.get_network(conn, operation.target_name)
    info = _configs(fresh.live_xml, fresh.inactive_xml, scope, active=fresh.active)[-1]
    results, total = [], len(params["rows"])
    updater = hv_updates.NetworkUpdater(conn, operation.target_name, scope)
    for number, row in enumerate(params["rows"], start=1):
        outcome, plan = _bulk_apply_row(updater, row, info)
        results.append(outcome)
        if plan is not None:  # later rows are checked against this one too
            info = bulk.with_host(info, plan.parent_index, xml.parse_dhcp_host(xml.parse(plan.fragment)))
        if number % 10 == 0 or number == total:
            progress.step(5 + int(85 * number / total), f"{number} of {total} rows")
    failed = [r for r in results if r["status"] != "added"]
    result = {"added": total - len(failed), "failed": len(failed), "rows": results, "skipped": params["skipped"]}
    if params["strategy"] == "restart" and fresh.active:
        progress.step(92, f"Restarting {operation.target_name} and re-plugging its guests")
        restarted = hv_restart.restart_network(conn, operation.target_name)
        result["interfaces"] = [asdict(r) for r in restarted.interfaces]
        result["down_seconds"] = round(restarted.down_seconds, 3)
        if any(not r.ok for r in restarted.interfaces):
            raise PartlyFailed("The reservations were saved, but some guests could not be re-plugged.", result)
    after = updater.read()
    mirror_network(operation.host, after)
    if failed:
        raise PartlyFailed(f"{len(failed)} of {total} rows failed; the others were applied.", result)
    return Outcome(result, before_xml=fresh.live_xml, after_xml=after.live_xml)


def _bulk_apply_row(updater: hv_updates.NetworkUpdater, row: dict, info: NetworkInfo):
    """Apply one row; returns its result and, if it was added, its plan."""
    values = {k: v for k, v in row.items() if k != "line"}
    try:
        plan = DhcpHostSection().plan("add-last", values, info)
        updater.apply(command="add-last", section=plan.section, fragment=plan.fragment, parent_index=plan.parent_index)
    except ValidationError as error:
        return {"line": row["line"], "status": "failed", "error": _flatten(error)}, None
    except HypervisorError as error:
        return {"line": row["line"], "status": "failed", "error": str(error)}, None
    return {"line": row["line"], "status": "added"}, plan
