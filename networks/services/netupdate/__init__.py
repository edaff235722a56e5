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
from ..drift import xml_differs
from ..operations import OperationRejected, Outcome, PartlyFailed, Progress, network_operation_request
from ..permissions import authorize, scoped
from ..sync import mirror_network, remirror_on_failure
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


def _fleet_warnings(network: Network, section: str, plan: UpdatePlan, actor) -> tuple[str, ...]:
    """The same MAC or IP reserved on another network of the fleet (of the hosts `actor` may
    see: a warning must not tell of a host outside its scope): allowed, but worth a look."""
    if section != "ip-dhcp-host" or plan.command == "delete":
        return ()
    host = xml.parse(plan.fragment)
    elsewhere = DhcpReservation.objects.exclude(network=network).select_related("network__host")
    if actor is not None:
        elsewhere = scoped(elsewhere, actor, "network__host")
    found = elsewhere.filter(mac=host.get("mac", "-")) | elsewhere.filter(address=host.get("ip"))
    return tuple(
        f"{r.mac or r.host_id} → {r.address} is also reserved on {r.network.name}@{r.network.host.name}."
        for r in found[:5]
    )


def network_update_preview(
    *, network: Network, section: str, command: str, values: dict, key: str = "", scope: str = "both", actor=None
) -> Preview:
    """What the change will do, or a ValidationError saying why it cannot be made. Warnings
    name only hosts `actor` may see (None: kvmweb itself, every host)."""
    scope = effective_scope(scope, active=network.active, persistent=network.persistent)
    infos = _configs(network.live_xml, network.inactive_xml or network.live_xml, scope, active=network.active)
    plan = plan_update(section, command, values, key, infos)
    effect = predict_effect(section=section, forward_mode=network.forward_mode, active=network.active, scope=scope)
    warnings = plan.warnings + _fleet_warnings(network, section, plan, actor)
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
        network=network, section=section, command=command, values=values, key=key, scope=scope, actor=actor
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
    with remirror_on_failure(operation) as guard:
        guard.touch()
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
    present: int = 0  # rows the network already has exactly: reported, not sent again


def network_bulk_preview(*, network: Network, csv_text: str) -> BulkPreview:
    rows, _ = bulk.check_rows(bulk.parse_csv(csv_text), xml.parse_network(network.live_xml))
    valid = sum(row.ok for row in rows)
    present = sum(row.present for row in rows)
    return BulkPreview(
        rows=rows,
        valid=valid,
        invalid=len(rows) - valid - present,
        present=present,
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
    """One Operation that adds every valid row; invalid rows are reported, never sent, and
    rows the network already has are reported as already present (an import run again
    after an interruption sends only what is missing)."""
    authorize(actor=actor, action="network.bulk_import", host=network.host, source=source, object_name=network.name)
    if strategy not in bulk.STRATEGIES:
        raise invalid("strategy", f"Choose one of {', '.join(bulk.STRATEGIES)}.")
    preview = network_bulk_preview(network=network, csv_text=csv_text)
    if not preview.valid:
        if preview.present and not preview.invalid:
            raise invalid("csv", "Every row of this file is already on the network: nothing to import.")
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
            "present": [row.line for row in preview.rows if row.present],
            "scope": scope,
            "strategy": strategy,
            "summary": f"Import {preview.valid} DHCP reservations ({strategy})",
        },
        message=message,
        before_xml=network.inactive_xml if scope == "config" else network.live_xml,
    )


def _recover_bulk_import(operation: Operation, progress: Progress) -> Outcome:
    """A worker died part way through an import: the host says which rows it applied (a row
    present there counts, whatever the checkpoint says); the rest are reported not applied,
    and the same file imported again sends only those."""
    params, checkpoint = operation.params, operation.checkpoint
    conn = host_connection(operation.host)
    fresh = hv_networks.get_network(conn, operation.target_name)
    note = ""
    if checkpoint.get("restarting") and not fresh.active:  # killed between destroy and start
        fresh, note = _start_again(conn, operation, progress), "; the network was started again"
    infos = _configs(fresh.live_xml, fresh.inactive_xml, params["scope"], active=fresh.active)
    rows = [
        {"line": row["line"], "status": "applied" if all(bulk.is_present(_row_values(row), i) for i in infos)
         else "not applied"}
        for row in params["rows"]
    ]  # fmt: skip
    mirror_network(operation.host, fresh)
    missing = [r["line"] for r in rows if r["status"] != "applied"]
    restart_owed = params["strategy"] == "restart" and fresh.active and xml_differs(fresh.live_xml, fresh.inactive_xml)
    recovery = f"{len(rows) - len(missing)} of {len(rows)} rows found applied on the host{note}"
    if missing:
        recovery += f"; not applied: lines {_line_list(missing)} (import the file again to add them)"
    if restart_owed:
        recovery += "; the network still runs its old config: restart it"
    return Outcome(
        {"recovery": recovery, "completed": not missing and not restart_owed, "rows": rows,
         "skipped": params["skipped"], "checkpoint_sending": checkpoint.get("sending")},
        after_xml=fresh.live_xml,
    )  # fmt: skip


def _start_again(conn, operation: Operation, progress: Progress) -> NetworkInfo:
    info = hv_networks.start_network(conn, operation.target_name)
    captured = hv_restart.interfaces_on_network(conn, operation.target_name)
    for item in hv_restart.reattach_missing(conn, operation.target_name, info.bridge, captured):
        progress.log(f"{item.domain} {item.mac}: {item.method if item.ok else 'not re-plugged: ' + item.error}")
    return hv_networks.get_network(conn, operation.target_name)


def _line_list(lines: list[int]) -> str:
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in bulk.line_ranges(lines))


def _row_values(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "line"}


@operation_kind(OperationKind.NETWORK_BULK_IMPORT, recover=_recover_bulk_import)
def network_bulk_run(operation: Operation, progress: Progress) -> Outcome:
    """Apply the rows one by one over one connection, each checked against the fresh XML.

    Before each row is sent the checkpoint records it and the rows applied so far, so a
    worker killed part way leaves at most that one row unknown, and the recovery asks the
    host about it. Whatever stops the run, the network is mirrored again before it ends."""
    params, scope = operation.params, operation.params["scope"]
    conn = host_connection(operation.host)
    fresh = hv_networks.get_network(conn, operation.target_name)
    updater = hv_updates.NetworkUpdater(conn, operation.target_name, scope)
    with remirror_on_failure(operation) as guard:
        result = _bulk_apply_rows(updater, progress, guard, params["rows"], _configs(
            fresh.live_xml, fresh.inactive_xml, scope, active=fresh.active)[-1])  # fmt: skip
        result["skipped"] = params["skipped"]
        if params["strategy"] == "restart" and fresh.active:
            progress.step(92, f"Restarting {operation.target_name} and re-plugging its guests")
            progress.checkpoint(restarting=True)
            restarted = hv_restart.restart_network(conn, operation.target_name)
            result["interfaces"] = [asdict(r) for r in restarted.interfaces]
            result["down_seconds"] = round(restarted.down_seconds, 3)
            if any(not r.ok for r in restarted.interfaces):
                raise PartlyFailed("The reservations were saved, but some guests could not be re-plugged.", result)
        after = updater.read()
    mirror_network(operation.host, after)
    if result["failed"]:
        total = len(params["rows"])
        raise PartlyFailed(f"{result['failed']} of {total} rows failed; the others were applied.", result)
    if scope == "config" and params["strategy"] != "restart":  # the running network is unchanged: record the config
        return Outcome(result, before_xml=fresh.inactive_xml, after_xml=after.inactive_xml)
    return Outcome(result, before_xml=fresh.live_xml, after_xml=after.live_xml)


def _bulk_apply_rows(updater, progress: Progress, guard, rows: list[dict], info: NetworkInfo) -> dict:
    results, applied, total = [], [], len(rows)
    for number, row in enumerate(rows, start=1):
        if bulk.is_present(_row_values(row), info):  # put there since the preview, or by an earlier run
            results.append({"line": row["line"], "status": "already present"})
            continue
        progress.checkpoint(sending=row["line"], applied_lines=bulk.line_ranges(applied))
        guard.touch()
        outcome, plan = _bulk_apply_row(updater, row, info)
        results.append(outcome)
        if plan is not None:  # later rows are checked against this one too
            applied.append(row["line"])
            info = bulk.with_host(info, plan.parent_index, xml.parse_dhcp_host(xml.parse(plan.fragment)))
        if number % 10 == 0 or number == total:
            progress.step(5 + int(85 * number / total), f"{number} of {total} rows")
    progress.checkpoint(sending=None, applied_lines=bulk.line_ranges(applied))
    failed = sum(r["status"] == "failed" for r in results)
    present = sum(r["status"] == "already present" for r in results)
    return {"added": len(applied), "failed": failed, "already_present": present, "rows": results}


def _bulk_apply_row(updater: hv_updates.NetworkUpdater, row: dict, info: NetworkInfo):
    """Apply one row; returns its result and, if it was added, its plan."""
    values = _row_values(row)
    try:
        plan = DhcpHostSection().plan("add-last", values, info)
        updater.apply(command="add-last", section=plan.section, fragment=plan.fragment, parent_index=plan.parent_index)
    except ValidationError as error:
        return {"line": row["line"], "status": "failed", "error": _flatten(error)}, None
    except HypervisorError as error:
        return {"line": row["line"], "status": "failed", "error": str(error)}, None
    return {"line": row["line"], "status": "added"}, plan
