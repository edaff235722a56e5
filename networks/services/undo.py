"""Undoing a change from the audit log: the plan, the request, and the run.

An event records a network's XML before and after a change. Undo puts the before back:
the whole of it when the network has not changed since, or, when it has, only the event's
own entries (reservations, DNS records, ranges, portgroups...) put back one by one onto
today's XML, refused with the entry and the reason when one of them has moved since. The
result runs the least disruptive way: net-update entries on a running network, a define
and restart (guests re-plugged) when only a restart can apply it, a define when the
network is not running. The run works the plan out again against the host's XML.

An undo changes what the event changed, no more: the running network only (a live-only
net-update), the persistent config only (a define on a running network, a config-only
net-update or import), or both. When both were changed but the running network now differs
from its persistent config (a restart pending), the undo changes the config only unless the
same net-updates undo it on both sides, and the plan says so.

A guest interface change is undone by the opposite interface request (remove what was added,
add back what was removed, put back the old values of what was changed), made through the
interface service, which checks, previews and queues it as on the guest's page.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from lxml import etree

from networks.choices import ACTIVE_STATUSES, OperationKind
from networks.hypervisor import guests as hv_guests
from networks.hypervisor import networks as hv_networks
from networks.hypervisor import updates as hv_updates
from networks.hypervisor import xml
from networks.hypervisor.errors import HypervisorError, NotFound
from networks.hypervisor.types import NetworkInfo
from networks.models import AuditEvent, Guest, Host, Network, Operation
from networks.operation_kinds import operation_kind

from . import interfaces as iface
from . import pools
from .connections import host_connection
from .drift import xml_diff, xml_differs
from .interfaces import checks as iface_checks
from .operations import (
    OperationRejected,
    Outcome,
    PartlyFailed,
    Progress,
    network_lock_key,
    network_operation_request,
    operation_request,
)
from .permissions import REQUIRED_ROLE, authorize, can
from .restart import RestartPreview, network_restart_preview, network_restart_recover, network_restart_run
from .sync import mirror_network, remirror_on_failure
from .xmlcheck import LIVE_SECTIONS, check_network_xml, entry_key
from .xmledit import (
    LiveUpdate,
    XmlAnalysis,
    _same_any,
    _same_identity,
    analyse,
    apply_live_update,
    network_define_run,
    restore_if_lost,
    scope_xml,
)

# The kinds whose outcome events hold a network's XML before and after a config change.
UNDOABLE_KINDS = {
    OperationKind.NETWORK_UPDATE,
    OperationKind.NETWORK_BULK_IMPORT,
    OperationKind.NETWORK_XML_LIVE,
    OperationKind.NETWORK_DEFINE,
    OperationKind.NETWORK_RESTART,
    OperationKind.NETWORK_UNDO,  # undoing an undo puts the change back
    OperationKind.NETWORK_UNDEFINE,  # defined again from its config, if nothing took its name or UUID
}
# Why the other kinds cannot be undone here, and what to do instead.
NOT_UNDOABLE = {
    "network.start": "Starting a network changes no config: stop it instead.",
    "network.stop": "Stopping a network changes no config: start it instead.",
    "network.autostart": "Set autostart back on the network's page.",
    "network.create": "Creating a network is undone by undefining it (an admin's action on its page).",
    "network.rename": "Rename the network back on its page.",
    "guest": "Only a guest's interface changes are undone from the audit log: change the guest on its page.",
    "port_forward": "Port forwards are not undone from the audit log: edit or delete the forward on its page.",
    "host": "Host changes cannot be undone from the audit log.",
}
MESSAGE_MAX = 400  # the operation's message holds "Undoes event #N: " before it, in 500
METHODS = ("live", "restart", "define", "create")  # create: an undefined network defined again
SCOPES = ("live", "config", "both")
ONLY_CONFIG = (
    "The running network differs from its persistent config (a restart is pending, or it has running-only "
    "changes), and this undo cannot be applied the same way to both: only the persistent config is changed. "
    "The running network keeps this event's change until the network restarts."
)
ONLY_CONFIG_LIVE_UNDONE = (
    "The running network no longer has this event's change: only the persistent config is changed."
)
ONLY_LIVE = "The persistent config no longer has this event's change: only the running network is changed."


class UndoImpossible(OperationRejected):
    """This event cannot be undone (now); the message says why."""


@dataclass(frozen=True)
class UndoPlan:
    event: AuditEvent
    network: Network
    method: str  # live (net-update), restart, define, or create (an undefined network defined again)
    scope: str  # what the undo changes: live (the running network), config (the persistent one) or both
    target_xml: str  # the persistent config the undo leaves
    diff: str  # today's XML → the target
    live_updates: tuple[LiveUpdate, ...]
    restart: RestartPreview | None
    actions: tuple[str, ...]  # every permission the undo needs
    changed_since: bool  # the network changed after the event: only its own entries are reverted
    diff_then_event: str = ""  # the event's own change (then → at the event)
    diff_event_now: str = ""  # what changed after it (at the event → now)
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------- which event, which network


def _kind(event: AuditEvent) -> tuple[str, str]:
    """(operation kind, outcome) of an event's action, e.g. (network.update, succeeded)."""
    kind, _, outcome = event.action.rpartition(".")
    return kind, outcome


def _refuse_unless_undoable(event: AuditEvent) -> None:
    kind, outcome = _kind(event)
    if outcome == "denied" or event.object_type == "request":
        raise UndoImpossible("This event records a refused request: it changed nothing.")
    if kind in NOT_UNDOABLE or event.object_type in NOT_UNDOABLE:
        raise UndoImpossible(NOT_UNDOABLE.get(kind) or NOT_UNDOABLE[event.object_type])
    if kind not in UNDOABLE_KINDS or event.object_type != "network":
        raise UndoImpossible("Only changes to a network's config can be undone.")
    if outcome == "requested":
        outcome_event = _outcome_event(event)
        where = f": undo its outcome, event #{outcome_event.pk}" if outcome_event else " (it has not finished yet)"
        raise UndoImpossible(f"This event records the request, not the change{where}.")
    if outcome != "succeeded":
        raise UndoImpossible(f"This change {outcome}: only a change that succeeded can be undone.")


def _outcome_event(event: AuditEvent) -> AuditEvent | None:
    if event.operation_id is None:
        return None
    kind, _ = _kind(event)
    return AuditEvent.objects.filter(operation_id=event.operation_id, action=f"{kind}.succeeded").first()


def _undid_an_undefine(event: AuditEvent) -> bool:
    if _kind(event)[0] != OperationKind.NETWORK_UNDO or event.operation_id is None:
        return False
    return Operation.objects.filter(pk=event.operation_id, params__method="create").exists()


def _before_and_after(event: AuditEvent) -> tuple[str, str]:
    """The event's XML; a restart's outcome records only the after, its request the before."""
    before = event.before_xml
    if not before and event.operation_id is not None:
        kind, _ = _kind(event)
        requested = AuditEvent.objects.filter(operation_id=event.operation_id, action=f"{kind}.requested").first()
        before = requested.before_xml if requested else ""
    if not before or not event.after_xml:
        raise UndoImpossible("This event does not record the network's XML before and after the change.")
    return before, event.after_xml


def _network_of(event: AuditEvent, before: etree._Element) -> Network:
    network = Network.objects.select_related("host").filter(host_id=event.host_id, name=event.object_name).first()
    if network is None:
        raise UndoImpossible(
            f"{event.object_name} no longer exists on {event.host_name} (renamed or undefined since this event)."
        )
    uuid = before.findtext("uuid")
    if uuid and network.uuid and uuid != network.uuid:
        raise UndoImpossible(
            f"The network now named {network.name} is not the one this event changed (it was recreated or renamed)."
        )
    return network


# ---------------------------------------------------------------- the plan


def _root(network_xml: str) -> etree._Element:
    try:
        return xml.without_runtime_state(network_xml)
    except HypervisorError as error:
        raise UndoImpossible(f"The XML cannot be read ({error}).") from None


def _canonical(root: etree._Element) -> str:
    return etree.tostring(root, method="c14n", exclusive=True).decode()


def undo_plan(event: AuditEvent, *, on_host: NetworkInfo | None = None) -> UndoPlan | GuestUndoPlan:
    """What undoing `event` would do now, or UndoImpossible saying why it cannot. The run
    passes the network as the host has it; a request uses the mirror's."""
    if _is_guest_interface_event(event):
        return guest_undo_plan(event)
    _refuse_unless_undoable(event)
    if _kind(event)[0] == OperationKind.NETWORK_UNDEFINE:
        return _redefine_plan(event)
    if _undid_an_undefine(event):
        raise UndoImpossible(NOT_UNDOABLE["network.create"])
    before_xml, after_xml = _before_and_after(event)
    before, after = _root(before_xml), _root(after_xml)
    if _canonical(before) == _canonical(after):
        raise UndoImpossible("This change left the network's XML as it was: there is nothing to revert.")
    network = _network_of(event, before)
    state = on_host or network
    side, scope, notes = _choose_side(network, before, after, state, _scope_now(event_scope(event), state))
    method = _method(scope, state, side.analysis.live_possible)
    return UndoPlan(
        event=event,
        network=network,
        method=method,
        scope=scope,
        target_xml=side.target_xml,
        diff=xml_diff(xml.to_string(side.current), side.target_xml, "now", "after the undo"),
        live_updates=side.analysis.live_updates if method == "live" else (),
        restart=network_restart_preview(network) if method == "restart" else None,
        actions=_actions(method, side.analysis.live_updates),
        changed_since=side.changed_since,
        diff_then_event=xml_diff(xml.to_string(before), xml.to_string(after), "then", "at the event")
        if side.changed_since
        else "",
        diff_event_now=xml_diff(xml.to_string(after), xml.to_string(side.current), "at the event", "now")
        if side.changed_since
        else "",
        notes=notes + side.notes,
    )


# ---------------------------------------------------------------- which configs: the running one, the persistent one


def event_scope(event: AuditEvent) -> str:
    """Which of the network's configs the event changed, and so which one its XML shows:
    live, config or both (the operation's params say, for the kinds that may change one)."""
    kind, _ = _kind(event)
    operation = Operation.objects.filter(pk=event.operation_id).first() if event.operation_id else None
    params = operation.params if operation is not None else {}
    if kind == OperationKind.NETWORK_DEFINE:
        return "config"
    if kind == OperationKind.NETWORK_UPDATE:
        return _known_scope(params.get("scope"))
    if kind == OperationKind.NETWORK_BULK_IMPORT:  # the restart strategy puts the config's rows live too
        return "both" if params.get("strategy") == "restart" else _known_scope(params.get("scope"))
    if kind == OperationKind.NETWORK_UNDO:
        return undo_scope(params)
    return "both"  # an XML edit applied live or by a restart


def undo_scope(params: dict) -> str:
    """The scope of an undo operation (one queued before undos had a scope: both, or config for a define)."""
    if "scope" in params:
        return _known_scope(params["scope"])
    return "config" if params.get("method") == "define" else "both"


def _known_scope(scope) -> str:
    return scope if scope in SCOPES else "both"


def _scope_now(scope: str, state) -> str:
    """The event's scope as it applies to the network now (stopped: its config only; transient: live only)."""
    if scope == "live":
        if not state.active:
            raise UndoImpossible(
                "Already undone: this change was made to the running network only, and the network has "
                "stopped since, which dropped it."
            )
        return "live"
    if not state.persistent:
        if scope == "config":
            raise UndoImpossible("This change was to the persistent config, which this network no longer has.")
        return "live"
    return "both" if scope == "both" and state.active else "config"


@dataclass(frozen=True)
class _Side:
    """The undo worked out on one config (the running or the persistent one)."""

    current: etree._Element
    target_xml: str
    analysis: XmlAnalysis
    changed_since: bool
    notes: tuple[str, ...]


class _AlreadyUndone(UndoImpossible):
    pass


def _choose_side(network: Network, before, after, state, scope: str) -> tuple[_Side, str, tuple[str, ...]]:
    """The side the undo is worked out on, the scope it runs with, and a note when that scope
    is not the event's."""
    inactive_xml = state.inactive_xml or state.live_xml
    if scope == "live":
        return _side(network, before, after, state.live_xml), "live", ()
    if scope == "config" or not xml_differs(state.live_xml, inactive_xml):
        return _side(network, before, after, inactive_xml), scope, ()
    # Both were changed, but the running network differs from its persistent config now.
    config = _side_unless_undone(network, before, after, inactive_xml)
    if config is None:
        live = _side_unless_undone(network, before, after, state.live_xml)
        if live is None:
            raise _AlreadyUndone("Already undone: neither the running network nor its config has this change.")
        return live, "live", (ONLY_LIVE,)
    try:
        live = _side_unless_undone(network, before, after, state.live_xml)
    except UndoImpossible:  # an entry moved on the running network only: the config can still be undone
        return config, "config", (ONLY_CONFIG,)
    if live is None:
        return config, "config", (ONLY_CONFIG_LIVE_UNDONE,)
    if config.analysis.live_possible and live.analysis.live_updates == config.analysis.live_updates:
        return config, "both", ()
    return config, "config", (ONLY_CONFIG,)


def _side_unless_undone(network: Network, before, after, current_xml: str) -> _Side | None:
    try:
        return _side(network, before, after, current_xml)
    except _AlreadyUndone:
        return None


def _side(network: Network, before, after, current_xml: str) -> _Side:
    """The undo on one config: the event's before when nothing changed since, else its own entries reverted."""
    current = _root(current_xml)
    if _canonical(current) == _canonical(before):
        raise _AlreadyUndone("Already undone: the network has its XML from before this event again.")
    changed_since = _canonical(current) != _canonical(after)
    target, notes = _revert_own_entries(before, after, current) if changed_since else (before, ())
    target_xml = xml.to_string(target)
    _check_target(network, target_xml)
    analysis = analyse(current_xml, target_xml)
    if analysis.unchanged:
        raise _AlreadyUndone("Already undone: the network no longer has this event's changes.")
    return _Side(current, target_xml, analysis, changed_since, notes)


def _check_target(network: Network, target_xml: str) -> None:
    """An old config may hold what today's rules refuse (a dnsmasq option, say): never restore it."""
    try:
        check_network_xml(network, target_xml)
    except OperationRejected as error:
        raise UndoImpossible(f"The config to restore breaks a rule of kvmweb: {error}") from None


def _method(scope: str, state, live_possible: bool) -> str:
    """Entries go by net-update, on the configs of the scope; the rest takes a define of the
    persistent config, and a restart when the running network was changed too."""
    if live_possible:
        return "live"
    if not state.persistent:
        raise UndoImpossible("This network is transient: only entries net-update can change are undone on it.")
    if scope == "live":
        raise UndoImpossible(
            "This change was made to the running network only, and undoing it there now takes more than "
            "net-update entries: restart the network to drop it."
        )
    return "restart" if scope == "both" else "define"


def _actions(method: str, updates) -> tuple[str, ...]:
    """network.undo, and what the change itself needs: an operator may undo an operator's
    reservation, never an admin's XML edit."""
    if method == "live":
        needed = sorted({f"network.update.{update.section}" for update in updates})
    else:
        needed = ["network.xml_edit"]
    return ("network.undo", *needed)


# ---------------------------------------------------------------- an undefined network, defined again


def _redefine_plan(event: AuditEvent) -> UndoPlan:
    """The network the event undefined, defined again from the config it had (not started:
    whether it ran is not recorded), unless another network has its name or UUID now."""
    if not event.before_xml:
        raise UndoImpossible("This event does not record the network's XML before it was undefined.")
    root = _root(event.before_xml)
    name, uuid = root.findtext("name", ""), root.findtext("uuid", "")
    host = Host.objects.filter(pk=event.host_id).first()
    if host is None:
        raise UndoImpossible(f"The host {event.host_name or '(none)'} of this event is no longer in kvmweb.")
    if name != event.object_name:
        raise UndoImpossible("The XML this event records names another network: it is not defined again.")
    taken = host.networks.filter(name=name).first() or (uuid and host.networks.filter(uuid=uuid).first())
    if taken and taken.name == name and taken.uuid == uuid:
        raise UndoImpossible(f"Already undone: {name} is defined on {host.name} again.")
    if taken:
        what = "name" if taken.name == name else f"UUID (it is named {taken.name})"
        raise UndoImpossible(f"A network on {host.name} has this network's {what} now: it cannot be defined again.")
    bridge = root.find("bridge").get("name", "") if root.find("bridge") is not None else ""
    holder = host.networks.filter(bridge=bridge).first() if bridge else None
    if holder is not None:  # libvirt refuses the define then (the test driver does not)
        raise UndoImpossible(f"The network {holder.name} on {host.name} uses the bridge {bridge} now.")
    network = Network(host=host, name=name, uuid=uuid, persistent=True, active=False)
    target_xml = xml.to_string(root)
    _check_target(network, target_xml)
    return UndoPlan(
        event=event,
        network=network,
        method="create",
        scope="config",
        target_xml=target_xml,
        diff=xml_diff("", target_xml, "now (no such network)", "after the undo"),
        live_updates=(),
        restart=None,
        actions=("network.undo", "network.create"),
        changed_since=False,
        notes=("It is defined again, not started, with autostart off: start it on its page if it ran.",),
    )


def _redefine_run(operation: Operation, progress: Progress) -> Outcome:
    """Define the network again; libvirt's define would replace a network of that name, so
    define_network refuses one, and libvirt refuses one with its UUID."""
    progress.step(40, f"Defining {operation.target_name} again from its config before the undefine")
    with remirror_on_failure(operation) as guard:
        guard.touch()
        info = hv_networks.define_network(
            host_connection(operation.host), operation.params["xml"], start=False, autostart=False
        )
    network = mirror_network(operation.host, info)
    Operation.objects.filter(pk=operation.pk).update(network=network)
    return Outcome({"defined": True, "network_id": network.pk}, after_xml=info.inactive_xml)


def _recover_redefine(operation: Operation, progress: Progress) -> Outcome:
    """A define is one call: the host has the network again or not."""
    try:
        after = hv_networks.get_network(host_connection(operation.host), operation.target_name)
    except NotFound:
        return Outcome({"recovery": "the network was not defined again", "completed": False})
    mirror_network(operation.host, after)
    done = _canonical(_root(after.inactive_xml)) == _canonical(_root(operation.params["xml"]))
    what = "the network is defined again" if done else "a network of that name is on the host, with another config"
    return Outcome({"recovery": what, "completed": done}, after_xml=after.inactive_xml)


# ---------------------------------------------------------------- an older event: only its own entries


class _Conflict(UndoImpossible):
    pass


def _revert_own_entries(before, after, current) -> tuple[etree._Element, tuple[str, ...]]:
    """`current` with the event's entries put back as they were, or _Conflict naming the
    entry that moved since. The event's change must be entry by entry (no restart needed)."""
    own = analyse(xml.to_string(after), xml.to_string(before))
    if not own.live_possible:
        raise UndoImpossible(
            "The network changed since this event, and this event changed more than entries "
            "(it needed a restart): undoing it would also revert the later changes. Undo the later "
            "events first, or edit the XML."
        )
    target, notes = copy.deepcopy(current), []
    for update in own.live_updates:
        note = _revert(target, before, after, update)
        if note:
            notes.append(note)
    return target, tuple(notes)


def _revert(target, before, after, update: LiveUpdate) -> str:
    """Apply one entry of the reverse change to `target`; a note when it was already done."""
    section, index = update.section, update.parent_index
    if update.command == "delete":  # the event added it: take it out if it is still as added
        found = _find(target, section, index, update.fragment)
        if found is not None:
            found.getparent().remove(found)
            return ""
        _refuse_if_changed(target, section, index, update.fragment, "it added")
        return f"{_describe(update.fragment)}, which the event added, is already gone."
    if update.command == "add-last":  # the event removed it: put it back unless something took its place
        if _find(target, section, index, update.fragment) is not None:
            return f"{_describe(update.fragment)}, which the event removed, is already back."
        _refuse_clash(target, section, index, update.fragment, before)
        _container(target, section, index, before).append(_element(update.fragment))
        return ""
    # modify or replace: the event changed an entry; put the old version back if it is still as the event left it
    changed = update.old_fragment or _changed_version(after, before, section, index, update.fragment)
    found = _find(target, section, index, changed)
    if found is None:
        raise _Conflict(
            f"{_describe(changed)}, as this event left it, has changed or gone since: "
            "it cannot be put back without losing that later change."
        )
    parent = found.getparent()
    position = parent.index(found)
    parent.remove(found)
    _refuse_clash(target, section, index, update.fragment, before)
    parent.insert(position, _element(update.fragment))
    return ""


def _path(section: str) -> str:
    return dict(LIVE_SECTIONS)[section]


def _element(fragment: str) -> etree._Element:
    return xml.parse(fragment)


def _entries(root, section: str, index: int):
    """(element, its key) of one section's entries under the `<ip>` at `index` (-1: not under one)."""
    return [(element, entry_key(element, root)) for element in root.findall(_path(section))
            if entry_key(element, root)[0] == index]  # fmt: skip


def _find(root, section: str, index: int, fragment: str):
    wanted = _canonical(_element(fragment))
    return next((element for element, key in _entries(root, section, index) if key[1] == wanted), None)


def _same_entry(section: str, old, new) -> bool:
    """Whether two entries are versions of one (same MAC, IP or name of a reservation, same name of a portgroup...)."""
    if section == "forward-interface":
        return old.get("dev") == new.get("dev")
    return _same_any(section, old, new) if section == "ip-dhcp-host" else _same_identity(section, old, new)


def _refuse_if_changed(target, section: str, index: int, fragment: str, what: str) -> None:
    entry = _element(fragment)
    for element, _key in _entries(target, section, index):
        if _same_entry(section, element, entry):
            raise _Conflict(
                f"{_describe(fragment)}, which {what}, has changed since (now {_describe(element)}): "
                "undoing it would lose that later change."
            )


def _refuse_clash(target, section: str, index: int, fragment: str, before) -> None:
    entry = _element(fragment)
    for element, _key in _entries(target, section, index):
        if _same_entry(section, element, entry):
            raise _Conflict(
                f"{_describe(fragment)} cannot be put back: {_describe(element)} now holds its place "
                "(same MAC, address or name)."
            )
    if index >= 0 and _ip_address(target, index) != _ip_address(before, index):
        raise _Conflict(f"{_describe(fragment)} cannot be put back: the network's addresses have changed since.")


def _ip_address(root, index: int):
    ips = root.findall("ip")
    if index >= len(ips):
        return None
    return ips[index].get("family"), ips[index].get("address"), ips[index].get("prefix"), ips[index].get("netmask")


def _container(target, section: str, index: int, before) -> etree._Element:
    """Where an entry of `section` goes, created as the event's before had it when missing."""
    if index >= 0:
        ip = target.findall("ip")[index]
        return ip.find("dhcp") if ip.find("dhcp") is not None else etree.SubElement(ip, "dhcp")
    if section.startswith("dns-"):
        return target.find("dns") if target.find("dns") is not None else etree.SubElement(target, "dns")
    if section == "forward-interface":
        forward = target.find("forward")
        if forward is None:
            raise _Conflict("A forward interface cannot be put back: the network no longer forwards.")
        return forward
    return target


def _changed_version(after, before, section: str, index: int, old_fragment: str) -> str:
    """The entry that a modify changed `old_fragment` into: the one of `after` that is a
    version of it and is not in `before` (xmledit sends a modify only when it is unique)."""
    old = _element(old_fragment)
    kept = {key[1] for _entry, key in _entries(before, section, index)}
    for element, key in _entries(after, section, index):
        if key[1] not in kept and _same_entry(section, element, old):
            return xml.to_string(element)
    return old_fragment


def _describe(entry) -> str:
    element = _element(entry) if isinstance(entry, str) else entry
    attributes = " ".join(f"{name}={value}" for name, value in element.attrib.items())
    names = " ".join(child.text or "" for child in element if child.tag == "hostname")
    return f"<{element.tag} {attributes}{' ' + names if names else ''}>"


# ---------------------------------------------------------------- the request


def undo_preview(event: AuditEvent, actor, source: str) -> UndoPlan:
    """The plan, for someone allowed to carry it out (refusals audited)."""
    if _is_guest_interface_event(event):
        return guest_undo_preview(event, actor, source)
    host = Host.objects.filter(pk=event.host_id).first()
    if host is None:
        raise UndoImpossible(f"The host {event.host_name or '(none)'} of this event is no longer in kvmweb.")
    authorize(actor=actor, action="network.undo", host=host, source=source, object_name=event.object_name)
    plan = undo_plan(event)
    for action in plan.actions:
        authorize(actor=actor, action=action, host=host, source=source, object_name=plan.network.name)
    return plan


def undo_offered(event: AuditEvent, actor) -> tuple[UndoPlan | None, str]:
    """For the audit page: the plan when `actor` may carry it out, else why not (no audit:
    nothing was asked yet)."""
    try:
        plan = undo_plan(event)
    except UndoImpossible as error:
        return None, str(error)
    host = plan.guest.host if isinstance(plan, GuestUndoPlan) else plan.network.host
    missing = [action for action in plan.actions if not can(actor, action, host)]
    if missing:
        return None, f"Undoing this change needs the {REQUIRED_ROLE[missing[-1]]} role ({missing[-1]})."
    return plan, ""


def undo_request(event: AuditEvent, actor, source: str, message: str = "") -> Operation:
    """An Operation of kind network.undo, after every check: refusals raise UndoImpossible
    or PermissionDenied (audited) and queue nothing."""
    return undo_request_planned(event, actor, source, message)[0]


def undo_request_planned(event: AuditEvent, actor, source: str, message: str = "") -> tuple[Operation, UndoPlan]:
    """undo_request, and the plan it was made from."""
    if not isinstance(message, str) or len(message) > MESSAGE_MAX:
        raise UndoImpossible(f"The message is text of at most {MESSAGE_MAX} characters.")
    if _is_guest_interface_event(event):
        return guest_undo_request(event, actor, source, message)
    plan = undo_preview(event, actor, source)
    params = {
        "undoes": event.pk,
        "method": plan.method,
        "scope": plan.scope,
        "xml": plan.target_xml,  # what the live, define and create runs apply
        "new_xml": plan.target_xml,  # what the restart (and its recovery) starts
    }
    with transaction.atomic():
        # Two confirms at once: the second waits here for the first's commit, then sees its operation.
        if plan.network.pk is None:  # an undefined network: no row to lock
            list(Host.objects.select_for_update().filter(pk=plan.network.host_id))
        else:
            list(Network.objects.select_for_update().filter(pk=plan.network.pk))
        _refuse_if_pending(event)
        if plan.method == "create":
            operation = operation_request(
                kind=OperationKind.NETWORK_UNDO, host=plan.network.host, actor=actor, source=source,
                lock_key=network_lock_key(plan.network.host, plan.network.name), target_name=plan.network.name,
                params=params, message=undo_message(event.pk, message),
            )  # fmt: skip
        else:
            operation = network_operation_request(
                kind=OperationKind.NETWORK_UNDO, network=plan.network, actor=actor, source=source, params=params,
                message=undo_message(event.pk, message), before_xml=scope_xml(plan.network, plan.scope),
            )  # fmt: skip
    return operation, plan


def _refuse_if_pending(event: AuditEvent) -> None:
    pending = Operation.objects.filter(status__in=ACTIVE_STATUSES, params__undoes=event.pk).first()
    if pending is not None:
        raise UndoImpossible(f"An undo of this event is already waiting or running (operation #{pending.pk}).")


def undo_message(event_id: int, message: str = "") -> str:
    return f"Undoes event #{event_id}" + (f": {message}" if message else "")


# ---------------------------------------------------------------- the run


def _replan_on_host(operation: Operation, progress: Progress) -> str:
    """The plan again against the host's XML now; the method and scope must not have changed
    (a live undo an operator asked for must never become a restart, nor a config-only one a
    change to the running network). Returns the XML the undo changes, as it is before."""
    conn = host_connection(operation.host)
    fresh = hv_networks.get_network(conn, operation.target_name)
    mirror_network(operation.host, fresh)
    event = AuditEvent.objects.get(pk=operation.params["undoes"])
    plan = undo_plan(event, on_host=fresh)
    asked = (operation.params["method"], undo_scope(operation.params))
    if (plan.method, plan.scope) != asked:
        raise UndoImpossible(
            f"The network changed since the request: this undo now needs a {_how(plan.method, plan.scope)} "
            f"instead of {_how(*asked)}. Ask for it again."
        )
    if plan.target_xml != operation.params["xml"]:
        progress.log("The host's XML changed since the request: the undo was worked out again against it")
        params = {**operation.params, "xml": plan.target_xml, "new_xml": plan.target_xml}
        Operation.objects.filter(pk=operation.pk).update(params=params)  # before any change: recovery reads it
        operation.params = params
    return scope_xml(fresh, plan.scope)


def _how(method: str, scope: str) -> str:
    return f"{method} ({scope})" if method == "live" else method


def _entries_run(operation: Operation, progress: Progress) -> Outcome:
    """net-update the undo's entries on the configs of its scope, worked out again against
    the host's XML (a live-only change is undone on the running network only, and so on)."""
    scope = undo_scope(operation.params)
    updater = hv_updates.NetworkUpdater(host_connection(operation.host), operation.target_name, scope)
    before = updater.read()
    analysis = analyse(scope_xml(before, scope), operation.params["xml"])
    if not analysis.live_possible:
        raise OperationRejected("The network changed since the request: this undo now needs a restart.")
    done = []
    with remirror_on_failure(operation) as guard:
        for number, update in enumerate(analysis.live_updates, start=1):
            progress.step(10 + int(80 * number / len(analysis.live_updates)), f"{update.command} {update.section}")
            guard.touch()
            try:
                apply_live_update(updater, progress, update, scope)
            except HypervisorError as error:
                raise PartlyFailed(
                    f"Stopped at {update.command} {update.section}: {error}", {"applied": done}
                ) from None
            done.append(f"{update.command} {update.section}")
    after = updater.read()
    mirror_network(operation.host, after)
    return Outcome({"applied": done, "scope": scope}, before_xml=scope_xml(before, scope),
                   after_xml=scope_xml(after, scope))  # fmt: skip


def _recover_entries(operation: Operation, progress: Progress) -> Outcome:
    """A worker died mid-undo: put back an entry it deleted but had not yet re-added, then
    say whether the host now has the whole undo."""
    scope = undo_scope(operation.params)
    updater = hv_updates.NetworkUpdater(host_connection(operation.host), operation.target_name, scope)
    replacing = operation.checkpoint.get("replacing")
    restored = bool(replacing) and restore_if_lost(updater, LiveUpdate(**replacing), scope)
    after = updater.read()
    mirror_network(operation.host, after)
    done = analyse(scope_xml(after, scope), operation.params["xml"]).unchanged
    what = "the undo is on the host" if done else "the undo is only partly on the host"
    if restored:
        what = f"an entry it had deleted to change was put back; {what}"
    return Outcome({"recovery": what, "completed": done}, after_xml=scope_xml(after, scope))


RUNS = {"live": _entries_run, "restart": network_restart_run, "define": network_define_run, "create": _redefine_run}


def _recover_define(operation: Operation, progress: Progress) -> Outcome:
    """A define is one call: the host has the undo or not, and says which."""
    after = hv_networks.get_network(host_connection(operation.host), operation.target_name)
    mirror_network(operation.host, after)
    done = analyse(after.inactive_xml, operation.params["xml"]).unchanged
    return Outcome({"recovery": "the undo is on the host" if done else "the undo was not applied",
                    "completed": done}, after_xml=after.inactive_xml)  # fmt: skip


RECOVERIES = {
    "live": _recover_entries,
    "restart": network_restart_recover,
    "define": _recover_define,
    "create": _recover_redefine,
}


def _undo_recover(operation: Operation, progress: Progress) -> Outcome:
    outcome = RECOVERIES[operation.params["method"]](operation, progress)
    said = {
        "undoes": operation.params["undoes"],
        "method": operation.params["method"],
        "scope": undo_scope(operation.params),
    }
    outcome.result = {**said, **outcome.result}
    return outcome


@operation_kind(OperationKind.NETWORK_UNDO, recover=_undo_recover)
def network_undo_run(operation: Operation, progress: Progress) -> Outcome:
    progress.step(5, f"Checking the undo of event #{operation.params['undoes']} against the host's XML")
    method = operation.params["method"]
    if method == "create":  # the network is not on the host: the define checks what the plan did
        undo_plan(AuditEvent.objects.get(pk=operation.params["undoes"]))
        before_xml = ""
    else:
        before_xml = _replan_on_host(operation, progress)
    said = {"undoes": operation.params["undoes"], "method": method, "scope": undo_scope(operation.params)}
    try:
        outcome = RUNS[method](operation, progress)
    except PartlyFailed as failure:
        failure.result = {**said, **failure.result}
        raise
    outcome.result = {**said, **outcome.result}
    outcome.before_xml = outcome.before_xml or before_xml  # a restart's outcome records only the after
    return outcome


# ---------------------------------------------------------------- guest interfaces


# Each guest interface change, and the change that undoes it.
GUEST_UNDOS = {
    OperationKind.GUEST_INTERFACE_ADD: iface.REMOVE,
    OperationKind.GUEST_INTERFACE_UPDATE: iface.UPDATE,
    OperationKind.GUEST_INTERFACE_REMOVE: iface.ADD,
}


@dataclass(frozen=True)
class GuestUndoPlan:
    """Undoing a guest interface change: the interface request that undoes it, and its preview."""

    event: AuditEvent
    guest: Guest
    action: str  # add, update or remove: the request made
    values: dict  # the request's values
    interface: iface.InterfacePlan  # the preview: the interface XML before and after
    actions: tuple[str, ...]
    notes: tuple[str, ...] = ()
    method = "interface"

    @property
    def mac(self) -> str:
        return self.interface.mac

    @property
    def scope(self) -> str:
        return self.interface.scope

    @property
    def diff(self) -> str:
        return self.interface.diff


def _is_guest_interface_event(event: AuditEvent) -> bool:
    return event.object_type == "guest" and _kind(event)[0] in GUEST_UNDOS


def guest_undo_plan(event: AuditEvent) -> GuestUndoPlan:
    """The interface request that undoes a guest interface event, checked against the mirror,
    or UndoImpossible saying why it cannot be undone now."""
    kind, outcome = _kind(event)
    if outcome == "denied":
        raise UndoImpossible("This event records a refused request: it changed nothing.")
    if outcome == "requested":
        raise UndoImpossible("This event records the request, not the change: undo its outcome event.")
    if outcome != "succeeded":
        raise UndoImpossible(f"This change {outcome}: only a change that succeeded can be undone.")
    operation = Operation.objects.filter(pk=event.operation_id).first() if event.operation_id else None
    params = operation.params if operation is not None else {}
    mac, event_scope_ = params.get("mac"), params.get("scope")
    if not isinstance(mac, str) or event_scope_ not in SCOPES or not event.before_xml or not event.after_xml:
        raise UndoImpossible("This event does not record the interface's MAC, scope and the guest's XML.")
    guest = _guest_of(event)
    scope = _guest_scope_now(guest, event_scope_)
    action = GUEST_UNDOS[kind]
    values = _guest_undo_values(kind, guest, mac, event, params.get("changes"))
    values["scope"] = scope
    try:
        preview = iface.interface_plan(action=action, guest=guest, values=dict(values), mac=mac)
    except ValidationError as error:
        raise UndoImpossible(f"The undo cannot be requested: {' '.join(error.messages)}") from None
    notes = (
        (f"Made to {guest.name}'s persistent config only: the guest was running then, is stopped now.",)
        if (scope != event_scope_)
        else ()
    )
    return GuestUndoPlan(event, guest, action, values, preview, ("network.undo", iface.ACTIONS[action]), notes)


def _guest_of(event: AuditEvent) -> Guest:
    guest = Guest.objects.select_related("host").filter(host_id=event.host_id, name=event.object_name).first()
    if guest is None:
        raise UndoImpossible(f"The guest {event.object_name} is no longer on {event.host_name or 'its host'}.")
    uuid = xml.parse(event.before_xml).findtext("uuid")
    if uuid and guest.uuid and uuid != guest.uuid:
        raise UndoImpossible(f"The guest now named {guest.name} is not the one this event changed.")
    return guest


def _guest_scope_now(guest: Guest, scope: str) -> str:
    """The event's scope as it applies to the guest now (stopped: its config only). The mirror
    holds a running guest's running XML: a config-only change cannot be checked against it."""
    if guest.is_running:
        if scope == "config":
            raise UndoImpossible(
                f"This change was made to the persistent config of {guest.name} while it runs, which kvmweb's "
                "mirror does not show: change the interface on the guest's page."
            )
        return scope
    if scope == "live":
        raise UndoImpossible(f"Already undone: this change was to the running {guest.name} only, which has stopped.")
    return "config"


def _guest_undo_values(kind: str, guest: Guest, mac: str, event: AuditEvent, changes) -> dict:
    """The values of the request that undoes `kind`, from the guest XML the event records."""
    now = hv_guests.find_interface(guest.xml, mac)
    if kind == OperationKind.GUEST_INTERFACE_REMOVE:
        if now is not None:
            raise UndoImpossible(f"Already undone: {guest.name} has an interface {mac} again.")
        return _add_back_values(guest, _event_interface(event.before_xml, mac))
    if now is None:
        raise UndoImpossible(f"{guest.name} no longer has the interface {mac}: it was removed or moved since.")
    then = _event_interface(event.after_xml, mac)
    if hv_guests.interface_settings(now) != hv_guests.interface_settings(then):
        raise UndoImpossible(
            f"The interface {mac} of {guest.name} has changed since this event: undoing it would lose that change."
        )
    if kind == OperationKind.GUEST_INTERFACE_ADD:
        return {}
    if not isinstance(changes, dict) or not changes:
        raise UndoImpossible("This event does not record which of the interface's settings it changed.")
    old = _settings_values(guest, _event_interface(event.before_xml, mac))
    unknown = [name for name in changes if name not in old]
    if unknown:
        raise UndoImpossible(f"The old value of {unknown[0]!r} cannot be put back by kvmweb.")
    return {name: old[name] for name in changes}


def _event_interface(guest_xml: str, mac: str) -> etree._Element:
    element = hv_guests.find_interface(guest_xml, mac)
    if element is None:
        raise UndoImpossible(f"The XML this event records has no interface {mac}.")
    return element


def _add_back_values(guest: Guest, element: etree._Element) -> dict:
    values = _settings_values(guest, element)
    return {name: value for name, value in values.items() if value not in ("", [], None)}


def _settings_values(guest: Guest, element: etree._Element) -> dict:
    """The interface's settings as request values; UndoImpossible for one kvmweb cannot request."""
    settings = hv_guests.interface_settings(element)
    if settings.source_type not in iface_checks.SOURCE_TYPES:
        raise UndoImpossible(f"The interface was a {settings.source_type or 'typeless'} interface, which kvmweb "
                             "cannot add or change.")  # fmt: skip
    pool = settings.source_type == "network" and pools.is_pool(guest.host.networks.filter(name=settings.source).first())
    if not settings.model and not pool:  # a request without a model gets virtio: not what it had
        raise UndoImpossible("The interface had no model, which a request cannot ask for.")
    limits = {}
    for name in ("inbound", "outbound"):
        limit = getattr(settings, name)
        if limit is not None and limit.floor is not None:
            raise UndoImpossible(f"The interface had an {name} floor, which kvmweb does not set.")
        limits[name] = {key: value for key, value in asdict(limit).items() if value is not None} if limit else None
    return {
        "source_type": settings.source_type, "source": settings.source, "portgroup": settings.portgroup,
        "mode": settings.mode, "model": settings.model, "mac": settings.mac, "link": settings.link,
        "vlan_tags": list(settings.vlan_tags), **limits,
    }  # fmt: skip


def guest_undo_request(event: AuditEvent, actor, source: str, message: str) -> tuple[Operation, GuestUndoPlan]:
    """The interface Operation that undoes the event, through the interface service (which
    authorizes, checks and previews it again)."""
    plan = guest_undo_preview(event, actor, source)
    with transaction.atomic():
        list(Guest.objects.select_for_update().filter(pk=plan.guest.pk))
        _refuse_if_pending(event)
        try:
            operation = iface.guest_interface_request(
                action=plan.action, guest=plan.guest, values=dict(plan.values), mac=plan.mac, actor=actor,
                source=source, message=f"Undoes event #{event.pk}: {message or plan.interface.summary}",
                undoes=event.pk,
            )  # fmt: skip
        except ValidationError as error:
            raise UndoImpossible(f"The undo cannot be requested: {' '.join(error.messages)}") from None
    return operation, plan


def guest_undo_preview(event: AuditEvent, actor, source: str) -> GuestUndoPlan:
    host = Host.objects.filter(pk=event.host_id).first()
    if host is None:
        raise UndoImpossible(f"The host {event.host_name or '(none)'} of this event is no longer in kvmweb.")
    for action in ("network.undo", *GUEST_ACTIONS_NEEDED[_kind(event)[0]]):
        authorize(actor=actor, action=action, host=host, source=source, object_name=event.object_name)
    return guest_undo_plan(event)


GUEST_ACTIONS_NEEDED = {kind: (iface.ACTIONS[action],) for kind, action in GUEST_UNDOS.items()}
