"""Planning a desired-state document against hosts, and applying the plan as Operations.

The plan is computed from the mirror (pages never wait on a hypervisor). For each network
of the document and each host, the least disruptive way there: nothing, live updates
(net-update), a new persistent config for a stopped network, define + restart with the
running guests re-plugged, or a create. Networks a host has and the document lacks are kept,
or deleted with `prune`. Apply requests the existing kinds through their own request
services, so each is authorised, checked and audited as if asked for by hand.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.urls import reverse

from networks import selectors
from networks.hypervisor import xml
from networks.hypervisor.errors import HypervisorError
from networks.models import Host, Network, NetworkIp

from . import create, networks, restart, xmledit
from .desired import DesiredNetwork, DocumentRejected, for_host, network_config, parse_document, same_config
from .operations import OperationRejected
from .permissions import PermissionDenied, authorize, visible_hosts
from .xmlcheck import check_network_xml

MAX_CLASHES_SHOWN = 3  # per network: one is enough to refuse it, a few help to fix the document
CHANGES = {"live", "restart", "define", "create", "delete", "start", "autostart"}


@dataclass
class PlanItem:
    host: Host
    network: str
    action: str  # unchanged, live, define, restart, create, delete, start, autostart, conflict, refused, kept
    detail: str = ""
    updates: list[str] = field(default_factory=list)  # live: the net-update entries
    guests: list[str] = field(default_factory=list)  # restart: guests re-plugged; delete: guests cut off
    then: list[str] = field(default_factory=list)  # start / autostart on / autostart off after the action
    desired: DesiredNetwork | None = None
    current: Network | None = None

    @property
    def changes(self) -> bool:
        return self.action in CHANGES or bool(self.then)

    def as_dict(self) -> dict:
        return {
            "host": self.host.name, "network": self.network, "action": self.action, "detail": self.detail,
            "updates": self.updates, "guests": self.guests, "then": self.then,
        }  # fmt: skip


@dataclass
class Plan:
    items: list[PlanItem]

    @property
    def changes(self) -> int:
        return sum(item.changes for item in self.items)

    @property
    def summary(self) -> str:
        counts = {action: sum(item.action == action for item in self.items) for action in ("conflict", "refused")}
        unchanged = sum(item.action == "unchanged" for item in self.items)
        text = f"{self.changes} change(s), " if self.changes else "no changes: "
        text += f"{unchanged} network(s) unchanged"
        return text + "".join(f", {count} {action}" for action, count in counts.items() if count)


def resolve_hosts(actor, names) -> list[Host]:
    """The named hosts among those `actor` may see (None: kvmweb itself, every host); a host
    outside the actor's scope is as unknown as one that does not exist."""
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise DocumentRejected("Name the target hosts: a list of host names.")
    if len(names) > 200:
        raise DocumentRejected("At most 200 target hosts at once.")
    hosts = Host.objects.all() if actor is None else visible_hosts(actor)
    found = {host.name: host for host in hosts.filter(name__in=names)}
    for name in names:
        if name not in found:
            raise DocumentRejected(f"Unknown host {name[:60]!r}.")
    return [found[name] for name in dict.fromkeys(names)]


# ---------------------------------------------------------------- plan


def plan_document(document_text, hosts: list[Host], prune: bool = False, overwrite: bool = True) -> Plan:
    """`overwrite` False (copying a network): a host's network of the same name and another
    config is a conflict, not changed to the document's."""
    desired = parse_document(document_text)
    clashes = document_clashes(desired)
    items = []
    for host in hosts:
        items += plan_host(desired, host, prune, clashes, overwrite)
    return Plan(items)


def plan_host(
    desired: list[DesiredNetwork], host: Host, prune: bool, clashes: dict[str, list[str]], overwrite: bool = True
) -> list[PlanItem]:
    current = {network.name: network for network in host.networks.all()}
    items = []
    for wanted in desired:
        network = current.get(wanted.name)
        problems = clashes.get(wanted.name, [])
        if network is None:
            item = _plan_create(host, wanted, problems)
        else:
            item = _plan_change(host, wanted, network, problems, overwrite)
        item.desired, item.current = wanted, network
        items.append(item)
    wanted_names = {wanted.name for wanted in desired}
    for name, network in sorted(current.items()):
        if name in wanted_names:
            continue
        items.append(_plan_delete(host, network) if prune else _kept(host, network))
    return items


def _kept(host: Host, network: Network) -> PlanItem:
    return PlanItem(host, network.name, "kept", "not in the document, kept", current=network)


def _plan_delete(host: Host, network: Network) -> PlanItem:
    """Stop and undefine; the running guests attached to it lose their network (as Undefine warns)."""
    guests = [guest.name for guest in selectors.running_guests_on_network(network)]
    detail = "not in the document: stopped and undefined"
    if guests:
        detail += f"; {len(guests)} running guest(s) lose their network"
    return PlanItem(host, network.name, "delete", detail, guests=guests, current=network)


def document_clashes(desired: list[DesiredNetwork]) -> dict[str, list[str]]:
    """Per network, why it clashes with another network of the same document: the same bridge
    (one libvirt creates) or overlapping subnets. Both are conflicts wherever they would be made."""
    found: dict[str, list[str]] = {}
    by_bridge: dict[str, list[str]] = {}
    holders: dict = {}  # subnet: the networks that have it
    for wanted in desired:
        root = xml.parse(wanted.xml)
        if _own_bridge(root):
            by_bridge.setdefault(_own_bridge(root), []).append(wanted.name)
        for subnet in _subnets(root):
            holders.setdefault(subnet, {})[wanted.name] = True  # an ordered set: messages in document order
    for bridge, names in by_bridge.items():
        for name in names:
            for other in names[: MAX_CLASHES_SHOWN + 1]:
                if other != name:
                    _note(found, name, f"the bridge {bridge} is also that of {other} in the document")
    _overlapping_subnets(holders, found)
    return found


def _overlapping_subnets(holders: dict, found: dict[str, list[str]]) -> None:
    """Two CIDR subnets overlap only when one holds the other, so each subnet looks up its own
    supernets (at most 128) instead of being compared with every other: linear in the document."""
    said = set()  # supernets whose networks were all told of a clash already
    for subnet, names in holders.items():
        for prefix in range(subnet.prefixlen, -1, -1):
            outer = subnet.supernet(new_prefix=prefix)
            others = holders.get(outer, {})
            for name in names:
                partner = _another(others, name)
                if partner:
                    _note(found, name, f"{subnet} overlaps {outer} of {partner} in the document")
            if outer == subnet or outer in said or not any(_another(names, other) for other in others):
                continue
            for other in others:
                partner = _another(names, other)
                if partner:
                    _note(found, other, f"{outer} overlaps {subnet} of {partner} in the document")
            said.add(outer)


def _another(names: dict, name: str) -> str:
    """A network of `names` other than `name` ("" if none): at most two looked at."""
    return next((other for other in names if other != name), "")


def _note(found: dict[str, list[str]], name: str, problem: str) -> None:
    problems = found.setdefault(name, [])
    if len(problems) < MAX_CLASHES_SHOWN and problem not in problems:
        problems.append(problem)


def _own_bridge(root) -> str:
    """The bridge the network names, if libvirt creates it (a host bridge can be shared)."""
    bridge, forward = root.find("bridge"), root.find("forward")
    libvirt_owns_bridge = forward is None or forward.get("mode", "nat") in {"nat", "route", "open"}
    return bridge.get("name", "") if bridge is not None and libvirt_owns_bridge else ""


def _plan_create(host: Host, wanted: DesiredNetwork, clashes: list[str]) -> PlanItem:
    problems = clashes + conflicts(host, wanted.xml, wanted.name)
    if problems:
        return PlanItem(host, wanted.name, "conflict", "; ".join(problems))
    state = "started" if wanted.active else "defined, not started"
    return PlanItem(host, wanted.name, "create", f"{state}, autostart {'on' if wanted.autostart else 'off'}")


def _plan_change(host: Host, wanted: DesiredNetwork, network: Network, clashes: list[str], overwrite: bool) -> PlanItem:
    then = _state_steps(wanted, network)
    try:
        if same_config(wanted.xml, network_config(network)):
            return _unchanged_config(host, wanted, then)
    except HypervisorError as error:  # the mirror's XML, as the host sent it
        return PlanItem(host, wanted.name, "refused", f"The network's current XML cannot be read ({error}): sync.")
    if not overwrite:
        return PlanItem(host, wanted.name, "conflict", f"a different network named {wanted.name} exists on {host.name}")
    problems = clashes + conflicts(host, wanted.xml, wanted.name)
    if problems:
        return PlanItem(host, wanted.name, "conflict", "; ".join(problems))
    try:
        new_xml = for_host(wanted.xml, network_config(network))
        check_network_xml(network, new_xml)
        analysis = xmledit.analyse(network_config(network), new_xml)
    except OperationRejected as error:  # Edit XML's rules, on this host's network
        return PlanItem(host, wanted.name, "refused", str(error))
    if analysis.unchanged:  # the same entries, written in another order
        return _unchanged_config(host, wanted, then)
    if not network.active:
        return PlanItem(host, wanted.name, "define", "new persistent config (not running)", then=then)
    if analysis.live_possible and not network.drifted:
        updates = [f"{u.command} {u.section}: {_one_line(u.fragment)}" for u in analysis.live_updates]
        return PlanItem(host, wanted.name, "live", "net-update, no restart", updates=updates, then=then)
    # A restart pending (the running config is not the persistent one): net-update would edit
    # both from the persistent one's entries, and fail or leave the two apart; Edit XML restarts.
    preview = restart.network_restart_preview(network)
    pending = " (a restart was pending: the running config differs from the persistent one)" if network.drifted else ""
    return PlanItem(
        host, wanted.name, "restart", f"define + restart{pending}: {preview.interruption}",
        guests=[guest.name for guest in preview.guests], then=then,
    )  # fmt: skip


def _unchanged_config(host: Host, wanted: DesiredNetwork, then: list[str]) -> PlanItem:
    """Nothing to define; maybe a start or an autostart to set (the `then` steps)."""
    if not then:
        return PlanItem(host, wanted.name, "unchanged")
    return PlanItem(host, wanted.name, then[0].split()[0], "config unchanged", then=then)


def _state_steps(wanted: DesiredNetwork, network: Network) -> list[str]:
    """Start a stopped network the document wants running (a running one is never stopped:
    `active: false` means "do not start it"), and set autostart as the document says."""
    steps = []
    if wanted.active and not network.active:
        steps.append("start")
    if wanted.autostart != network.autostart and network.persistent:
        steps.append(f"autostart {'on' if wanted.autostart else 'off'}")
    return steps


def _one_line(fragment: str) -> str:
    return " ".join(fragment.split())


def conflicts(host: Host, network_xml: str, name: str) -> list[str]:
    """Why `network_xml` would clash with another network of `host`: its bridge, or an IPv4
    or IPv6 subnet overlapping one of theirs (from the mirror)."""
    root = xml.parse(network_xml)
    problems = []
    bridge = _own_bridge(root)
    if bridge:
        users = host.networks.exclude(name=name).filter(bridge=bridge).values_list("name", flat=True)
        problems += [f"the bridge {bridge} is used by {other}" for other in users]
    others = NetworkIp.objects.filter(network__host=host).exclude(network__name=name).select_related("network")
    for subnet in _subnets(root):
        for other in others:
            theirs = ipaddress.ip_interface(f"{other.address}/{other.prefix}").network
            if theirs.version == subnet.version and theirs.overlaps(subnet):
                problems.append(f"{subnet} overlaps {theirs} of {other.network.name}")
    return problems


def _subnets(root) -> list:
    info = xml.parse_network(xml.to_string(root))
    return [ipaddress.ip_interface(f"{ip.address}/{ip.prefix}").network for ip in info.ips]


# ---------------------------------------------------------------- apply


@dataclass
class ApplyResult:
    plan: Plan
    results: list[dict]

    @property
    def summary(self) -> str:
        if not self.plan.changes:
            return self.plan.summary
        requested = sum(bool(result["operations"]) for result in self.results)
        refused = sum(result["status"] == "refused" for result in self.results)
        return f"{requested} item(s) requested, {refused} refused; {self.plan.summary}"


def apply_document(
    document_text, hosts: list[Host], *, prune: bool = False, overwrite: bool = True, actor, source: str
) -> ApplyResult:
    """network.apply is authorised on every host first (audited, refused or not); then each
    item goes through its own request service, with its own check and audit."""
    for host in hosts:
        authorize(actor=actor, action="network.apply", host=host, source=source)
    plan = plan_document(document_text, hosts, prune, overwrite)
    return ApplyResult(plan, [_apply_item(item, actor, source) for item in plan.items])


def _apply_item(item: PlanItem, actor, source: str) -> dict:
    result = {**item.as_dict(), "operations": [], "status": "unchanged" if not item.changes else "requested"}
    if item.action in {"conflict", "refused", "kept"}:
        result["status"] = "skipped"
        return result
    message = "desired-state apply"
    try:
        for request in _requests(item):
            operation = request(actor=actor, source=source, message=message)
            result["operations"].append(
                {
                    "id": operation.pk,
                    "kind": operation.kind,
                    "url": reverse("networks:operation_detail", args=[operation.pk]),
                }
            )
    except (OperationRejected, PermissionDenied, ValidationError) as error:
        result["status"] = "refused"
        result["reason"] = _reason(error)
    return result


def _reason(error) -> str:
    if isinstance(error, ValidationError):
        return " ".join(error.messages)
    return str(error)


def _requests(item: PlanItem):
    """The request calls of one item, in order (operations on one network run one after another)."""
    wanted, network = item.desired, item.current
    if item.action == "delete":
        yield lambda **kw: networks.network_request_undefine(network=network, **kw)
        return
    if item.action == "create":
        yield lambda **kw: create.network_request_create_from_xml(
            host=item.host, network_xml=wanted.xml, start=wanted.active, autostart=wanted.autostart, **kw
        )
        return
    if item.action in {"live", "define", "restart"}:
        new_xml = for_host(wanted.xml, network_config(network))
        if item.action == "restart":
            yield lambda **kw: restart.network_request_restart(network=network, new_xml=new_xml, **kw)
        else:
            yield lambda **kw: xmledit.network_request_xml_change(
                network=network, new_xml=new_xml, apply=item.action, **kw
            )
    for step in item.then:
        yield _state_request(step, network)


def _state_request(step: str, network: Network):
    if step == "start":
        return lambda **kw: networks.network_request_start(network=network, **kw)
    enabled = step == "autostart on"
    return lambda **kw: networks.network_request_autostart(network=network, enabled=enabled, **kw)


def plan_lines(plan: Plan) -> list[str]:
    """The plan as text: one line per item, its live updates, guests and steps below it."""
    lines = []
    for item in plan.items:
        lines.append(f"{item.host.name:<16} {item.network:<24} {item.action:<10} {item.detail}".rstrip())
        lines += [f"{'':<16}   live: {update}" for update in item.updates]
        if item.guests:
            guests = "guests cut off" if item.action == "delete" else "guests re-plugged"
            lines.append(f"{'':<16}   {guests}: {', '.join(item.guests)}")
        if item.then:
            lines.append(f"{'':<16}   then: {', '.join(item.then)}")
    lines.append(plan.summary)
    return lines
