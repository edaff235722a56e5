"""What a host's firewall should hold for its forwards, and what it holds: the rule set built
from libvirt (where each guest NIC sits, its reserved or leased IPv4), applied and checked by the
host worker through networks.forwarding.engine, and each forward's state recorded."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from networks.choices import ForwardState
from networks.forwarding.engine import forwards_apply, forwards_check
from networks.forwarding.rules import ForwardRule
from networks.hypervisor import domains
from networks.hypervisor import networks as hv_networks
from networks.hypervisor.errors import NotFound
from networks.models import GuestInterface, Host, Network, PortForward

from .checks import FORWARDABLE_MODES

WORKER_ENV = "KVMWEB_HOST_WORKER"  # set by scripts/host-worker.sh to the host's name
# States that mean the forward does what it should (or will, at its guest's next start).
GOOD_STATES = {ForwardState.PRESENT, ForwardState.GUEST_STOPPED, ForwardState.DISABLED}


@dataclass(frozen=True)
class ForwardPlan:
    """The rules of a host's enabled forwards that can be applied, and why the others cannot."""

    rules: tuple  # networks.forwarding.rules.ForwardRule
    not_applied: dict[int, tuple[str, str]]  # forward id → (ForwardState, reason)
    networks: dict[int, str]  # forward id → the libvirt network its guest NIC names


def host_forward_plan(host: Host, conn) -> ForwardPlan:
    """Read from libvirt where each forward's guest NIC sits and what IPv4 it has there: its
    reservation on that network for its MAC, else its current lease."""
    where = domains.interface_networks(conn)
    infos: dict[str, object] = {}
    rules, not_applied, networks = [], {}, {}
    for forward in PortForward.objects.filter(host=host).order_by("pk"):
        if not forward.enabled:
            not_applied[forward.pk] = (ForwardState.DISABLED, "disabled")
            continue
        network_name = where.get((forward.guest_name, forward.guest_mac.lower()), "")
        networks[forward.pk] = network_name
        info, why = _network_info(conn, network_name, infos, forward)
        address = _address_on(info, forward.guest_mac) if info is not None else ""
        if not address:
            not_applied[forward.pk] = (ForwardState.NO_ADDRESS, why or "no reservation and no lease for its MAC")
            continue
        try:
            rules.append(ForwardRule(**_rule_fields(forward, address, info.bridge)))
        except ValueError as error:  # the rule module refuses what it would not hand to the firewall
            not_applied[forward.pk] = (ForwardState.MISSING, str(error))
    return ForwardPlan(tuple(rules), not_applied, networks)


def host_forward_rules(host: Host, conn) -> list:
    """The ForwardRules the host's worker installs for the host's forwards."""
    return list(host_forward_plan(host, conn).rules)


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


def _address_on(info, mac: str) -> str:
    mac = mac.lower()
    for ip in info.ips:
        if ip.family != "ipv4":
            continue
        for reserved in ip.dhcp_hosts:
            if reserved.mac.lower() == mac:
                return reserved.ip
    leases = [lease for lease in info.leases if lease.mac == mac and ":" not in lease.ip]
    newest = max(leases, key=lambda lease: lease.expires or 0, default=None)
    return newest.ip if newest else ""


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


def in_host_worker(host: Host) -> bool:
    """Whether this process is the host's own worker (started by scripts/host-worker.sh)."""
    return host.name == settings.KVMWEB_HOST_WORKER


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


def apply_host_forwards(host: Host, conn) -> AppliedForwards:
    """Install the host's whole forward set and record what each forward now has."""
    plan = _only_local_addresses(host_forward_plan(host, conn))
    running = domains.running_domain_names(conn)
    applied = forwards_apply(list(plan.rules), running_guests=running)
    return AppliedForwards(plan, _record_states(host, plan, applied))


def _only_local_addresses(plan: ForwardPlan) -> ForwardPlan:
    """Leave out forwards whose host address this host does not hold (kvmweb cannot tell from
    afar; the host worker, on the hypervisor, can)."""
    kept, not_applied = [], dict(plan.not_applied)
    for rule in plan.rules:
        if rule.host_address is None or _holds_address(rule.host_address):
            kept.append(rule)
        else:
            not_applied[rule.forward_id] = (ForwardState.MISSING, f"{rule.host_address} is not an address of this host")
    return ForwardPlan(tuple(kept), not_applied, plan.networks)


def _holds_address(address: str) -> bool:
    # Binding to an address succeeds only where the host (this network namespace) has it.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def check_host_forwards(host: Host, conn, forward_ids=None) -> AppliedForwards:
    """What the host's firewall has for its forwards (or those of `forward_ids`), without changing it."""
    plan = host_forward_plan(host, conn)
    rules = [rule for rule in plan.rules if forward_ids is None or rule.forward_id in forward_ids]
    found = forwards_check(rules, running_guests=domains.running_domain_names(conn))
    return AppliedForwards(plan, _record_states(host, plan, found))


def _record_states(host: Host, plan: ForwardPlan, found: dict[int, str]) -> dict[int, str]:
    now = timezone.now()
    addresses = {rule.forward_id: rule.guest_address for rule in plan.rules}
    states = {**{pk: state for pk, (state, _why) in plan.not_applied.items()}, **found}
    for pk, state in states.items():
        changes = {"state": state, "checked_at": now}
        if pk in addresses:
            changes["guest_address"] = addresses[pk]
        PortForward.objects.filter(pk=pk, host=host).update(**changes)
    return states


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
    apply_host_forwards(host, conn)
    checked = check_host_forwards(host, conn, ids)
    return {"forwards": [{**row, "verified": True} for row in forwards_report(host, checked, ids)]}


def _as_stored(host: Host, plan: ForwardPlan) -> AppliedForwards:
    stored = dict(PortForward.objects.filter(host=host).values_list("pk", "state"))
    return AppliedForwards(plan, stored)


def forwards_not_in_place(report: dict) -> list[dict]:
    return [row for row in report.get("forwards", []) if row.get("verified") and row["state"] not in GOOD_STATES]
