"""What a host's firewall should hold for its forwards, and what it holds: the rule set built
from libvirt (where each guest NIC sits, its reserved or leased IPv4), applied and checked by the
host worker through networks.forwarding.engine, and each forward's state recorded.

Which guests run is never decided here: the engine reads it from libvirt's status files under
its lock, the same source the hooks use, so a guest starting or stopping between a libvirt read
and the apply cannot make the worker install a stale set. libvirt is read only for where each
NIC sits and its addresses (reservations, leases)."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from networks.choices import ForwardMode, ForwardState
from networks.forwarding import rules as fw
from networks.forwarding.engine import HostPaths, forwards_apply, forwards_check
from networks.forwarding.rules import ForwardRule
from networks.hypervisor import domains
from networks.hypervisor import networks as hv_networks
from networks.hypervisor.errors import NotFound
from networks.models import GuestInterface, Host, Network, PortForward

from ..connections import in_host_worker
from .checks import FORWARDABLE_MODES, forward_address

logger = logging.getLogger(__name__)

WORKER_ENV = "KVMWEB_HOST_WORKER"  # set by scripts/host-worker.sh to the host's name
# States that mean the forward does what it should (or will, at its guest's next start).
GOOD_STATES = {ForwardState.PRESENT, ForwardState.GUEST_STOPPED, ForwardState.DISABLED}


@dataclass(frozen=True)
class ForwardPlan:
    """The rules of a host's enabled forwards that can be applied, and why the others cannot."""

    rules: tuple  # networks.forwarding.rules.ForwardRule
    not_applied: dict[int, tuple[str, str]]  # forward id → (ForwardState, reason)
    networks: dict[int, str]  # forward id → the libvirt network its guest NIC names
    # Forwards whose address is a lease, not a reservation: the hooks re-apply the address the
    # rules file holds, so these follow a new lease only when the host worker's periodic check
    # sees it and re-applies (networks.services.forwards.host_forwards_periodic_check).
    leased: frozenset[int] = field(default_factory=frozenset)


def host_forward_plan(host: Host, conn) -> ForwardPlan:
    """Read from libvirt where each forward's guest NIC sits and what IPv4 it has there
    (checks.forward_address: its reservation on that network for its MAC, else its newest lease)."""
    where = domains.interface_networks(conn)
    infos: dict[str, object] = {}
    rules, not_applied, networks, leased = [], {}, {}, set()
    for forward in PortForward.objects.filter(host=host).order_by("pk"):
        if not forward.enabled:
            not_applied[forward.pk] = (ForwardState.DISABLED, "disabled")
            continue
        network_name = where.get((forward.guest_name, forward.guest_mac.lower()), "")
        networks[forward.pk] = network_name
        info, why = _network_info(conn, network_name, infos, forward)
        address, reserved = _address_on(info, forward.guest_mac) if info is not None else ("", False)
        if not address:
            not_applied[forward.pk] = (ForwardState.NO_ADDRESS, why or "no reservation and no lease for its MAC")
            continue
        try:
            rules.append(ForwardRule(**_rule_fields(forward, address, info.bridge)))
        except ValueError as error:  # the rule module refuses what it would not hand to the firewall
            not_applied[forward.pk] = (ForwardState.MISSING, str(error))
            continue
        if not reserved:
            leased.add(forward.pk)
    return ForwardPlan(tuple(rules), not_applied, networks, frozenset(leased))


def _network_info(conn, name: str, cache: dict, forward: PortForward):
    if not name:
        return None, f"{forward.guest_name} has no NIC {forward.guest_mac} on a libvirt network"
    if name not in cache:
        try:
            cache[name] = hv_networks.get_network(conn, name)
        except NotFound:
            cache[name] = None
    info = cache[name]
    if info is None:
        return None, f"network {name} does not exist"
    if info.forward_mode not in FORWARDABLE_MODES:
        return None, f"network {name} is not NAT or routed"
    return info, ""


def _address_on(info, mac: str) -> tuple[str, bool]:
    """(address, reserved) of the NIC `mac` on the network `info`, as a request's warning chooses it."""
    reservations = [(h.mac or "", h.ip) for ip in info.ips if ip.family == "ipv4" for h in ip.dhcp_hosts]
    return forward_address(mac, reservations, [(lease.mac or "", lease.ip, lease.expires) for lease in info.leases])


def _rule_fields(forward: PortForward, address: str, bridge: str) -> dict:
    return {
        "forward_id": forward.pk,
        "protocol": forward.protocol,
        "host_address": forward.host_address or None,  # None: every address of the host
        "host_port_start": forward.host_port_start,
        "host_port_end": forward.host_port_end,
        "guest_name": forward.guest_name,
        "guest_mac": forward.guest_mac.lower(),
        "guest_address": address,
        "guest_port_start": forward.guest_port_start,
        "guest_port_end": forward.guest_port_end,
        "bridge": bridge,
        "source_cidrs": tuple(forward.source_cidrs),
    }


def host_worker_present(host: Host, now=None) -> bool:
    """The host worker reported within three heartbeats."""
    if not host.queue or host.worker_seen_at is None:
        return False
    beat = settings.KVMWEB_HOST_WORKER_HEARTBEAT_SECONDS
    return (now or timezone.now()) - host.worker_seen_at <= timedelta(seconds=3 * beat)


def host_forwards_overview(host: Host) -> dict:
    """What a host's page shows of its forwards: the rows, and whether its host worker reports."""
    forwards = PortForward.objects.filter(host=host).select_related("host", "guest")
    return {"forwards": list(forwards), "worker": host_worker_present(host)}


def live_state(forward: PortForward, now=None) -> str:
    """The forward's state as a user should read it now: what the host worker last found, unless
    the host worker is silent (then nothing keeps the rules current: "host worker absent")."""
    if not host_worker_present(forward.host, now):
        return ForwardState.WORKER_ABSENT
    return forward.state


@dataclass(frozen=True)
class AppliedForwards:
    plan: ForwardPlan
    states: dict[int, str]  # forward id → ForwardState, for every forward of the host
    warnings: tuple[str, ...] = ()  # what the engine says still needs a hand (e.g. libvirtd not reloaded)


# Networks whose bridge libvirt makes and gives an address of the host (the guests' gateway):
# a forward on every address leaves traffic arriving from them alone (the engine's
# `guest_bridges`). A bridge-mode network's bridge (br0) is the host's LAN: forwards serve it.
GATEWAY_MODES = (ForwardMode.NONE, ForwardMode.NAT, ForwardMode.ROUTE, ForwardMode.OPEN)


def installed_plan(host: Host, conn) -> ForwardPlan:
    """The plan the host worker installs: host_forward_plan without the forwards on an address
    this host does not hold."""
    return _only_local_addresses(host_forward_plan(host, conn))


def guest_bridges(host: Host) -> tuple[str, ...]:
    """The bridges of the host's libvirt-made networks, as of the last sync (the forwards' own
    bridges, read from libvirt, are added by the engine)."""
    names = host.networks.filter(forward_mode__in=GATEWAY_MODES).exclude(bridge="").values_list("bridge", flat=True)
    kept = []
    for name in sorted(set(names)):
        try:
            kept.append(fw.check_bridge(name))
        except ValueError:
            logger.warning("Network bridge %r of %s is not an interface name: left out", name, host.name)
    return tuple(kept)


def apply_host_forwards(host: Host, conn) -> AppliedForwards:
    """Install the host's whole forward set and record what each forward now has (and the
    address its rules use). The engine decides which guests run, under its lock."""
    plan = installed_plan(host, conn)
    report = forwards_apply(list(plan.rules), guest_bridges=guest_bridges(host))
    states = _record_states(host, plan, report.states, applied=True)
    return AppliedForwards(plan, states, tuple(report.warnings))


def _only_local_addresses(plan: ForwardPlan) -> ForwardPlan:
    """Leave out forwards whose host address this host does not hold (kvmweb cannot tell from
    afar; the host worker, on the hypervisor, can)."""
    kept, not_applied = [], dict(plan.not_applied)
    for rule in plan.rules:
        if rule.host_address is None or _holds_address(rule.host_address):
            kept.append(rule)
        else:
            not_applied[rule.forward_id] = (ForwardState.MISSING, f"{rule.host_address} is not an address of this host")
    return ForwardPlan(tuple(kept), not_applied, plan.networks, plan.leased)


def _holds_address(address: str) -> bool:
    # Binding to an address succeeds only where the host (this network namespace) has it.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def check_host_forwards(host: Host, conn, forward_ids=None, *, plan: ForwardPlan | None = None) -> AppliedForwards:
    """What the host's firewall has for its forwards (or those of `forward_ids`), without changing
    it, recorded as each forward's state. A forward whose rules carry another address or bridge
    than the plan's reads as not in place (the engine compares each rule). A state recorded by an
    apply after this check began is newer than the check's, and is kept."""
    started = timezone.now()
    plan = plan or installed_plan(host, conn)
    rules = [rule for rule in plan.rules if forward_ids is None or rule.forward_id in forward_ids]
    found = forwards_check(rules)  # with the bridges the rules were last written with
    states = _record_states(host, plan, found.states, applied=False, since=started)
    return AppliedForwards(plan, states, tuple(found.warnings))


def _record_states(host: Host, plan: ForwardPlan, found: dict[int, str], *, applied: bool, since=None):
    """Write each forward's state (and, after an apply, the address its rules use: a check
    leaves the address of the rules as the last apply wrote it)."""
    now = timezone.now()
    addresses = {rule.forward_id: rule.guest_address for rule in plan.rules}
    states = {**{pk: state for pk, (state, _why) in plan.not_applied.items()}, **found}
    for pk, state in states.items():
        changes = {"state": state, "checked_at": now}
        if applied and pk in addresses:
            changes["guest_address"] = addresses[pk]
        rows = PortForward.objects.filter(pk=pk, host=host)
        if since is not None:
            rows = rows.filter(Q(checked_at__isnull=True) | Q(checked_at__lt=since))
        rows.update(**changes)
    return states


def applied_rules() -> fw.RulesFile | None:
    """What the host worker last applied on this host: the rules file the hooks read (an empty
    one when there is none yet; None when it cannot be read, logged)."""
    path = HostPaths.from_settings().rules_file
    try:
        return fw.rules_from_json(path.read_text())
    except FileNotFoundError:
        return fw.RulesFile("", [], ())
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("The forward rules file %s cannot be read: %s", path, error)
        return None


def rules_digest(rules) -> str:
    """A short fingerprint of a rule set (the order does not count)."""
    rows = sorted(json.dumps(asdict(rule), sort_keys=True) for rule in rules)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def plan_changes(host: Host, plan: ForwardPlan, applied: fw.RulesFile) -> list[str]:
    """What differs between the rules the host should hold (`plan`) and those last applied: one
    line per forward, e.g. "#3: 10.20.0.150 on virbr2 → 10.20.0.160 on virbr2 (lease)", and one
    when the host's libvirt bridges changed. Empty: nothing."""
    wanted = {rule.forward_id: rule for rule in plan.rules}
    have = {rule.forward_id: rule for rule in applied.rules}
    lines = []
    bridges = set(fw.bridges_of(plan.rules, guest_bridges(host)))
    if have and bridges != set(applied.guest_bridges):
        lines.append(f"libvirt bridges: {', '.join(sorted(applied.guest_bridges))} → {', '.join(sorted(bridges))}")
    for pk in sorted(set(wanted) | set(have)):
        new, old = wanted.get(pk), have.get(pk)
        if new == old:
            continue
        if old is None:
            lines.append(f"#{pk}: not applied yet")
        elif new is None:
            lines.append(f"#{pk}: {plan.not_applied.get(pk, ('', 'removed'))[1] or 'removed'}")
        elif (new.guest_address, new.bridge) != (old.guest_address, old.bridge):
            how = " (lease)" if pk in plan.leased else ""
            lines.append(f"#{pk}: {old.guest_address} on {old.bridge} → {new.guest_address} on {new.bridge}{how}")
        else:
            lines.append(f"#{pk}: changed")
    return lines


def forwards_report(host: Host, applied: AppliedForwards, forward_ids=None) -> list[dict]:
    """One entry a forward (of `forward_ids`, or all): what it is, its state and why."""
    rows = []
    for forward in PortForward.objects.filter(host=host).order_by("pk"):
        if forward_ids is not None and forward.pk not in forward_ids:
            continue
        state = applied.states.get(forward.pk, ForwardState.UNKNOWN)
        why = applied.plan.not_applied.get(forward.pk, ("", ""))[1]
        rows.append(
            {
                "id": forward.pk,
                "forward": str(forward),
                "state": state,
                "guest_address": forward.guest_address or "",
                "network": applied.plan.networks.get(forward.pk, ""),
                **({"address_from": "lease"} if forward.pk in applied.plan.leased else {}),
                **({"reason": why} if why else {}),
            }
        )
    return rows


def forwards_on_network(network: Network):
    """The forwards whose guest NIC sits on `network`, as of the last sync (a restart's preview)."""
    macs = GuestInterface.objects.filter(network=network).exclude(mac="").values_list("mac", flat=True)
    return PortForward.objects.filter(host=network.host, guest_mac__in=[mac.lower() for mac in macs])


def forwards_after_restart(host: Host, network_name: str, conn) -> dict:
    """After a restart re-plugged its guests: apply the host's forwards again and verify those of
    the network's guests (their rules present). Outside the host worker nothing can be checked:
    the answer says so. Returns what the restart's result reports."""
    if not PortForward.objects.filter(host=host, enabled=True).exists():
        return {}
    plan = host_forward_plan(host, conn)
    ids = {pk for pk, name in plan.networks.items() if name == network_name}
    if not ids:
        return {}
    if not in_host_worker(host):
        note = (
            f"{len(ids)} port forward(s) of guests on {network_name} were not re-applied or verified: this "
            f"restart ran on a central worker, and only {host.name}'s host worker reaches its firewall. "
            "Re-apply them from the host's page once its host worker runs."
        )
        rows = [{**row, "verified": False} for row in forwards_report(host, _as_stored(host, plan), ids)]
        return {"forwards": rows, "forwards_note": note}
    applied = apply_host_forwards(host, conn)
    checked = check_host_forwards(host, conn, ids, plan=applied.plan)
    rows = [{**row, "verified": True} for row in forwards_report(host, checked, ids)]
    return {"forwards": rows, **({"forwards_warnings": list(applied.warnings)} if applied.warnings else {})}


def _as_stored(host: Host, plan: ForwardPlan) -> AppliedForwards:
    stored = dict(PortForward.objects.filter(host=host).values_list("pk", "state"))
    return AppliedForwards(plan, stored)


def forwards_not_in_place(report: dict) -> list[dict]:
    return [row for row in report.get("forwards", []) if row.get("verified") and row["state"] not in GOOD_STATES]
