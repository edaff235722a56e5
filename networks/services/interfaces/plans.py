"""Checking and previewing a guest interface change, and requesting its Operation: every
check runs against the mirror, and the preview says what the running guest will notice."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, replace

from django.db import transaction

from networks.choices import InterfaceScope, OperationKind
from networks.hypervisor import guests as hv_guests
from networks.hypervisor import xml
from networks.hypervisor.guests import InterfaceSettings
from networks.hypervisor.types import BandwidthLimit
from networks.models import Guest, Operation, PortForward

from .. import macs, pools
from ..netupdate.common import gather, invalid
from ..operations import host_lock_key, operation_request
from ..permissions import authorize
from . import checks

ADD, UPDATE, REMOVE = "add", "update", "remove"
ACTIONS = {ADD: "guest.interface_add", UPDATE: "guest.interface_update", REMOVE: "guest.interface_remove"}
KINDS = {
    ADD: OperationKind.GUEST_INTERFACE_ADD,
    UPDATE: OperationKind.GUEST_INTERFACE_UPDATE,
    REMOVE: OperationKind.GUEST_INTERFACE_REMOVE,
}

# What the running guest notices, in words the preview and the result share.
HOTPLUG = "Hot-plug: the guest sees a new NIC and must bring it up and ask DHCP for an address."
IN_PLACE = "In-place update, the guest sees nothing."
REPLUG = "Hot-unplug + plug: the guest sees a new NIC and must re-DHCP."
UNPLUG = "Hot-unplug: the guest loses this NIC at once."
CONFIG_ONLY = "Persistent config only: the guest sees it at its next start."
FALLBACK = (
    "If libvirt cannot make this change in place, the NIC is unplugged and plugged again (the guest sees a new NIC)."
)


@dataclass(frozen=True)
class InterfacePlan:
    """A checked change, ready to request: the XML before and after and what the guest notices."""

    action: str
    guest: Guest
    mac: str
    scope: str
    before_xml: str  # the interface as the mirror has it ("" when adding)
    after_xml: str  # the interface afterwards ("" when removing)
    effect: str
    summary: str
    replug: bool = False  # a live change needs detach + attach
    changes: dict | None = None  # an update's changed fields, JSON-friendly (the worker applies them)
    warnings: tuple[str, ...] = ()

    @property
    def diff(self) -> str:
        """The interface XML before and after as a unified diff (what the preview shows)."""
        lines = difflib.unified_diff(
            self.before_xml.splitlines(), self.after_xml.splitlines(), "before", "after", lineterm=""
        )
        return "\n".join(lines)


# ---------------------------------------------------------------- plans (validation + preview)


def interface_plan(*, action: str, guest: Guest, values, mac: str = "", actor=None) -> InterfacePlan:
    """What the add, update or remove will do, or a ValidationError naming each bad field."""
    if action == ADD:
        return _add_plan(guest, checks.request_values(values, checks.ADD_FIELDS), actor)
    if action == UPDATE:
        return _update_plan(guest, _target_mac(mac), checks.request_values(values, checks.UPDATE_FIELDS), actor)
    if action == REMOVE:
        return _remove_plan(guest, _target_mac(mac), checks.request_values(values, checks.REMOVE_FIELDS))
    raise ValueError(f"unknown interface action {action!r}")


def _target_mac(mac: str) -> str:
    return macs.normalise_mac(mac, "mac")


def _add_plan(guest: Guest, values: dict, actor) -> InterfacePlan:
    scope = checks.scope_of(values, guest)
    source, model, link, tags, inbound, outbound = gather(
        lambda: checks.source_of(values, guest, scope),
        lambda: checks.model_of(values),
        lambda: checks.link_of(values),
        lambda: checks.vlan_tags_of(values),
        lambda: checks.bandwidth_of(values, "inbound"),
        lambda: checks.bandwidth_of(values, "outbound"),
    )
    checks.check_vlan_support(tags, source)
    pool_warnings = pools.pool_interface_checks(
        guest=guest, network=source.network, values=values, inbound=inbound, outbound=outbound, joining=True
    )
    if pools.is_pool(source.network):
        model = ""  # a VF pool: the guest drives the VF itself
    mac, mac_notes = macs.new_mac(values, actor=actor, guest=guest)
    settings = InterfaceSettings(
        source.source_type, source.source, mac, model, source.portgroup, source.mode, link, tags, inbound, outbound
    )
    after = hv_guests.build_interface(settings)
    warnings = source.warnings + pool_warnings + mac_notes
    effect = HOTPLUG if scope != InterfaceScope.CONFIG else CONFIG_ONLY
    summary = f"Add {model or 'VF'} interface {mac} on {_source_text(settings)} to {guest.name} ({scope})"
    return InterfacePlan(ADD, guest, mac, scope, "", after, effect, summary, warnings=warnings)


def _current(guest: Guest, mac: str) -> tuple[InterfaceSettings, str]:
    """The interface as the mirror has it (the live XML of a running guest)."""
    element = hv_guests.find_interface(guest.xml, mac)
    if element is None:
        raise invalid("mac", f"{guest.name} has no interface {mac}.")
    return hv_guests.interface_settings(element), xml.to_string(element)


def _update_plan(guest: Guest, mac: str, values: dict, actor) -> InterfacePlan:
    current, current_xml = _current(guest, mac)
    if current.source_type not in checks.SOURCE_TYPES:
        raise invalid(
            "mac",
            f"{mac} is a {current.source_type or 'typeless'} interface: kvmweb changes network, bridge and macvtap "
            "interfaces only (it can remove this one).",
        )
    if checks.text(values, "mac") and macs.normalise_mac(values["mac"]) != mac:
        raise invalid("mac", "A MAC cannot be changed: remove the interface and add one with the new MAC.")
    values.pop("mac", None)
    scope = checks.scope_of(values, guest)
    wanted, source_warnings = _wanted(values, guest, scope, current, current_xml)
    source_warnings += _pool_warnings(guest, values, current, wanted)
    changes = _changes(current, wanted)
    if not changes:
        raise invalid("non_field_errors", "Nothing to change: the interface already has these settings.")
    after = hv_guests.build_interface(wanted, current_xml)
    replug = needs_replug(current, wanted)
    effect = _update_effect(scope, replug, current, wanted)
    summary = f"Change {', '.join(changes)} of {guest.name} interface {mac} ({scope})"
    warnings = source_warnings
    if scope != InterfaceScope.CONFIG and not replug:
        warnings += (FALLBACK,)
    return InterfacePlan(UPDATE, guest, mac, scope, current_xml, after, effect, summary, replug, changes, warnings)


def _wanted(values: dict, guest: Guest, scope: str, current: InterfaceSettings, current_xml: str):
    """The settings the interface will have, and the warnings about its source."""
    moving = any(name in values for name in checks.SOURCE_FIELDS)
    source, model, link, tags, inbound, outbound = gather(
        lambda: checks.source_of(values, guest, scope, current) if moving else None,
        lambda: checks.model_of(values, current),
        lambda: checks.link_of(values, current),
        lambda: checks.vlan_tags_of(values, current),
        lambda: checks.bandwidth_of(values, "inbound", current),
        lambda: checks.bandwidth_of(values, "outbound", current),
    )
    if source is None:
        source = checks.Source(current.source_type, current.source, current.portgroup, current.mode)
        if source.source_type == "network":
            source = replace(source, network=guest.host.networks.filter(name=current.source).first())
    if tags != current.vlan_tags or moving:
        checks.check_vlan_support(tags, source, current, current_xml)
    if pools.is_pool(source.network):
        model = ""  # a VF pool (as add): the guest drives the VF itself, with no emulated model
    wanted = InterfaceSettings(
        source.source_type, source.source, current.mac, model, source.portgroup, source.mode, link, tags, inbound,
        outbound,
    )  # fmt: skip
    return wanted, source.warnings


def _pool_warnings(guest: Guest, values: dict, current: InterfaceSettings, wanted: InterfaceSettings):
    """An interface moving onto (or staying on) an SR-IOV pool: the pool's refusals and warnings."""
    if wanted.source_type != "network":
        return ()
    network = guest.host.networks.filter(name=wanted.source).first()
    joining = (current.source_type, current.source) != (wanted.source_type, wanted.source)
    return pools.pool_interface_checks(
        guest=guest, network=network, values=values, inbound=wanted.inbound, outbound=wanted.outbound,
        joining=joining,
    )  # fmt: skip


def _changes(current: InterfaceSettings, wanted: InterfaceSettings) -> dict:
    """The fields that change, JSON-friendly: the worker applies these to the interface as
    it finds it on the host, leaving every other field as it is there."""
    changed = hv_guests.changed_fields(current, wanted)
    if any(name in changed for name in ("source_type", "source", "portgroup", "mode")):
        changed = [*dict.fromkeys(["source_type", "source", "portgroup", "mode", *changed])]
    return {name: _jsonable(getattr(wanted, name)) for name in changed}


def _jsonable(value):
    if isinstance(value, BandwidthLimit):
        return {key: val for key, val in asdict(value).items() if val is not None}
    if isinstance(value, tuple):
        return list(value)
    return value


def apply_changes(settings: InterfaceSettings, changes: dict) -> InterfaceSettings:
    """`settings` with the recorded `changes` (as _changes made them)."""
    values = {}
    for name, value in changes.items():
        if name in ("inbound", "outbound"):
            value = BandwidthLimit(**value) if value else None
        elif name == "vlan_tags":
            value = tuple(value)
        values[name] = value
    return replace(settings, **values)


def needs_replug(current: InterfaceSettings, wanted: InterfaceSettings) -> bool:
    """Whether libvirt must unplug the running NIC for this change: a new model, or a macvtap
    device or mode (libvirt moves a NIC between networks and bridges in place, and changes
    link, bandwidth and, on Open vSwitch, VLANs in place)."""
    if current.model != wanted.model:
        return True
    direct = "direct" in (current.source_type, wanted.source_type)
    return direct and (current.source_type, current.source, current.mode) != (
        wanted.source_type,
        wanted.source,
        wanted.mode,
    )


def _update_effect(scope: str, replug: bool, current: InterfaceSettings, wanted: InterfaceSettings) -> str:
    if scope == InterfaceScope.CONFIG:
        return CONFIG_ONLY
    if replug:
        return REPLUG
    notes = [IN_PLACE]
    if (wanted.link or "up") != (current.link or "up"):
        notes.append(f"Its link goes {wanted.link or 'up'} (the guest sees the carrier change).")
    if (wanted.source_type, wanted.source) != (current.source_type, current.source):
        notes.append(
            "It keeps the address it had until it renews its DHCP lease: renew it in the guest "
            "(or set the link down and up, which many guests answer with a new DHCP request)."
        )
    return " ".join(notes)


def _remove_plan(guest: Guest, mac: str, values: dict) -> InterfacePlan:
    _current_settings, current_xml = _current(guest, mac)
    scope = checks.scope_of(values, guest)
    effect = UNPLUG if scope != InterfaceScope.CONFIG else CONFIG_ONLY
    forwards = PortForward.objects.filter(host=guest.host, guest_mac=mac).count()
    warnings = (f"{forwards} port forward(s) lead to this NIC: they stop working.",) if forwards else ()
    summary = f"Remove interface {mac} from {guest.name} ({scope})"
    return InterfacePlan(REMOVE, guest, mac, scope, current_xml, "", effect, summary, warnings=warnings)


def _source_text(settings: InterfaceSettings) -> str:
    if settings.source_type == "network":
        group = f" (portgroup {settings.portgroup})" if settings.portgroup else ""
        return f"network {settings.source}{group}"
    if settings.source_type == "bridge":
        return f"bridge {settings.source}"
    return f"macvtap {settings.source} ({settings.mode})"


# ---------------------------------------------------------------- requests


def guest_interface_request(
    *,
    action: str,
    guest: Guest,
    values,
    actor,
    source: str,
    mac: str = "",
    message: str = "",
    undoes: int | None = None,
) -> Operation:
    """Authorize, check, and queue the Operation that makes the change. The check and the
    Operation are one transaction under the MAC lock: two requests for one MAC cannot both pass.
    `undoes`: the audit event this change undoes (kept in the params, which the pages link)."""  # fmt: skip
    authorize(actor=actor, action=ACTIONS[action], host=guest.host, source=source, object_name=guest.name)
    with transaction.atomic():
        if action == ADD:
            macs.lock_macs(guest.host)
        return _request(action, guest, values, actor, source, mac, message, undoes)


def _request(
    action: str, guest: Guest, values, actor, source: str, mac: str, message: str, undoes: int | None = None
) -> Operation:
    plan = interface_plan(action=action, guest=guest, values=values, mac=mac, actor=actor)
    params = {
        "mac": plan.mac, "scope": plan.scope, "summary": plan.summary, "replug": plan.replug,
        "warnings": list(plan.warnings),  # what the preview warned of, kept with the operation
    }  # fmt: skip
    if undoes is not None:
        params["undoes"] = undoes
    if action == ADD:
        params["interface_xml"] = plan.after_xml
    elif action == UPDATE:
        params["changes"] = plan.changes
    return operation_request(
        kind=KINDS[action],
        host=guest.host,
        actor=actor,
        source=source,
        lock_key=host_lock_key(guest.host),
        target_name=guest.name,
        params=params,
        message=message,
        object_type="guest",
        before_xml=guest.xml,
    )
