"""A guest's network interfaces: read, build, attach, change and detach them.

libvirt keeps two definitions of a guest: the live one (while it runs) and the persistent
one (its config, used at the next start). Each change says which it touches (LIVE, CONFIG
or both). Drivers that cannot attach or update devices (the test driver) still let a
stopped guest's config change: kvmweb then redefines the guest with the edited config.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import libvirt
from lxml import etree

from . import hostdevs, xml
from .client import libvirt_errors
from .errors import HypervisorError, NotFound, Unsupported
from .types import BandwidthLimit

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
SCOPE_FLAGS = {"live": LIVE, "config": CONFIG, "both": LIVE | CONFIG}

# How a live change reached the running guest (the operation's result says which).
IN_PLACE = "update-device"  # updateDeviceFlags: the guest sees nothing (or only its link change)
REPLUG = "detach-attach"  # hot-unplug then plug: the guest sees a new NIC and must DHCP again
REDEFINE = "redefine"  # the stopped guest's config was defined again (no device API on the driver)
# The device calls, by what they do (a config-only change: "config").
CALL_METHODS = {"attachDeviceFlags": "hot-plug", "detachDeviceFlags": "hot-unplug", "updateDeviceFlags": IN_PLACE}
CONFIG_CHANGE = "config"

# libvirt answers these when it cannot make a change to a running device in place ("cannot
# modify network device model", "unable to change config on 'direct' network type"). A config
# it refuses outright (VIR_ERR_CONFIG_UNSUPPORTED: "vlan tag not supported for this connection
# type") is not among them: plugging it in anew would be refused too, after an unplug.
_CANNOT_IN_PLACE = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_UNSUPPORTED}
DETACH_WAIT_S = 10.0  # a guest acknowledges an unplug within a second when it can at all
# A replug whose guest is slower waits this much longer (the operation's heartbeat goes on)
# before it gives up: the NIC then goes whenever the guest lets it go.
DETACH_GRACE_S = 60.0
POLL_S = 0.1


class DetachPending(HypervisorError):
    """A replug's unplug the guest has not acknowledged: the NIC disappears when the guest
    releases it, and must then be plugged in again with `interface_xml`."""

    def __init__(self, message: str, interface_xml: str):
        super().__init__(message)
        self.interface_xml = interface_xml


class NicUnplugged(HypervisorError):
    """A replug unplugged the NIC, and neither the new nor the old one could be plugged back:
    `interface_xml` is the old one, to plug in by hand."""

    def __init__(self, message: str, interface_xml: str):
        super().__init__(message)
        self.interface_xml = interface_xml


@dataclass(frozen=True)
class InterfaceSettings:
    """What kvmweb sets on an `<interface>`; everything else of the element is kept."""

    source_type: str  # network, bridge or direct
    source: str  # network, bridge or host NIC name
    mac: str
    model: str = ""
    portgroup: str = ""
    mode: str = ""  # direct: bridge, vepa, private or passthrough
    link: str = ""  # up, down, or "" (libvirt's default: up)
    vlan_tags: tuple[int, ...] = ()
    inbound: BandwidthLimit | None = None
    outbound: BandwidthLimit | None = None


@dataclass(frozen=True)
class GuestDefinitions:
    """A guest's XML as the host has it now."""

    name: str
    active: bool
    persistent: bool
    live_xml: str  # the running definition ("" when stopped)
    config_xml: str  # the persistent definition ("" for a transient guest)

    @property
    def current_xml(self) -> str:
        return self.live_xml or self.config_xml


@dataclass(frozen=True)
class LiveChange:
    method: str  # IN_PLACE or REPLUG
    seconds: float
    interface_xml: str  # the live <interface> afterwards
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------- XML


def interface_settings(iface: etree._Element) -> InterfaceSettings:
    """The settings of an `<interface>` element, as kvmweb sets them."""
    source = iface.find("source")
    kind = iface.get("type", "")
    attrs = dict(source.attrib) if source is not None else {}
    # A running guest's interface on a bridge-mode or macvtap network shows type='bridge' or
    # 'direct' naming its network: it still belongs to the network.
    if attrs.get("network"):
        kind, name = "network", attrs["network"]
    else:
        name = attrs.get({"bridge": "bridge", "direct": "dev"}.get(kind, ""), "")
    return InterfaceSettings(
        source_type=kind,
        source=name,
        mac=iface.xpath("string(mac/@address)").lower(),
        model=iface.xpath("string(model/@type)"),
        portgroup=attrs.get("portgroup", ""),
        mode=attrs.get("mode", "") if kind == "direct" else "",
        link=iface.xpath("string(link/@state)"),
        vlan_tags=tuple(int(tag.get("id")) for tag in iface.findall("vlan/tag")),
        inbound=_bandwidth(iface.find("bandwidth/inbound")),
        outbound=_bandwidth(iface.find("bandwidth/outbound")),
    )


def _bandwidth(element: etree._Element | None) -> BandwidthLimit | None:
    if element is None:
        return None
    values = {key: int(element.get(key)) for key in ("average", "peak", "burst", "floor") if element.get(key)}
    return BandwidthLimit(**values)


def build_interface(settings: InterfaceSettings, base_xml: str = "") -> str:
    """`<interface>` XML with `settings`, on top of `base_xml` (the interface as it is: its
    PCI address, target device, driver and the rest are kept) or from nothing."""
    iface = xml.parse(base_xml) if base_xml else etree.Element("interface")
    before = interface_settings(iface)
    moved = (before.source_type, before.source) != (settings.source_type, settings.source)
    iface.set("type", settings.source_type)
    _set_child(iface, "mac", {"address": settings.mac}, first=True)
    _set_source(iface, settings)
    if moved:
        _remove(iface, "virtualport")  # the old source's port profile; a network brings its own
    if settings.model:
        _set_child(iface, "model", {"type": settings.model})
    else:
        _remove(iface, "model")  # a VF pool's interface: the guest drives the VF itself
    if settings.link:
        _set_child(iface, "link", {"state": settings.link})
    else:
        _remove(iface, "link")
    _set_vlan(iface, settings.vlan_tags)
    _set_bandwidth(iface, settings.inbound, settings.outbound)
    return xml.to_string(iface)


def _set_source(iface: etree._Element, settings: InterfaceSettings) -> None:
    # Only what the definition names: a live source's portid and bridge are the running
    # port's, and a fresh port is made for the new source.
    if settings.source_type == "network":
        attrs = {"network": settings.source, "portgroup": settings.portgroup}
    elif settings.source_type == "bridge":
        attrs = {"bridge": settings.source}
    else:
        attrs = {"dev": settings.source, "mode": settings.mode or "bridge"}
    _set_child(iface, "source", {key: value for key, value in attrs.items() if value})


def _set_child(parent: etree._Element, tag: str, attrs: dict, first: bool = False) -> None:
    """Replace `parent`'s `tag` child (where it was) by one with exactly `attrs`."""
    old = parent.find(tag)
    new = etree.Element(tag, attrs)
    if old is not None:
        parent.replace(old, new)
    elif first:
        parent.insert(0, new)
    else:
        parent.append(new)


def _remove(parent: etree._Element, tag: str) -> None:
    for child in parent.findall(tag):
        parent.remove(child)


def _set_vlan(iface: etree._Element, tags: tuple[int, ...]) -> None:
    _remove(iface, "vlan")
    if not tags:
        return
    vlan = etree.SubElement(iface, "vlan", {"trunk": "yes"} if len(tags) > 1 else {})
    for tag in tags:
        etree.SubElement(vlan, "tag", id=str(tag))


def _set_bandwidth(iface: etree._Element, inbound: BandwidthLimit | None, outbound: BandwidthLimit | None) -> None:
    _remove(iface, "bandwidth")
    if not (inbound or outbound):
        return
    bandwidth = etree.SubElement(iface, "bandwidth")
    for tag, limit in (("inbound", inbound), ("outbound", outbound)):
        if limit is not None:
            attrs = {key: str(getattr(limit, key)) for key in ("average", "peak", "burst", "floor")}
            etree.SubElement(bandwidth, tag, {key: value for key, value in attrs.items() if value != "None"})


def find_interface(domain_xml: str, mac: str) -> etree._Element | None:
    """The `<interface>` of the guest XML whose MAC is `mac`, or None."""
    if not domain_xml:
        return None
    for iface in xml.parse(domain_xml).findall("devices/interface"):
        if iface.xpath("string(mac/@address)").lower() == mac:
            return iface
    return None


def interface_xml(domain_xml: str, mac: str) -> str:
    iface = find_interface(domain_xml, mac)
    return xml.to_string(iface) if iface is not None else ""


def with_interface_added(domain_xml: str, interface: str) -> str:
    root = xml.parse(domain_xml)
    devices = root.find("devices")
    if devices is None:
        devices = etree.SubElement(root, "devices")
    devices.append(xml.parse(interface))
    return xml.to_string(root)


def with_interface_replaced(domain_xml: str, mac: str, interface: str | None) -> str:
    """The guest XML with interface `mac` replaced by `interface` (None: removed)."""
    root = xml.parse(domain_xml)
    for iface in root.findall("devices/interface"):
        if iface.xpath("string(mac/@address)").lower() == mac:
            if interface is None:
                iface.getparent().remove(iface)
            else:
                iface.getparent().replace(iface, xml.parse(interface))
            return xml.to_string(root)
    raise NotFound(f"The guest has no interface {mac}.")


# ---------------------------------------------------------------- reading


def _domain(conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
    with libvirt_errors():
        return conn.lookupByName(name)


def read_definitions(conn: libvirt.virConnect, name: str) -> GuestDefinitions:
    dom = _domain(conn, name)
    with libvirt_errors():
        active, persistent = bool(dom.isActive()), bool(dom.isPersistent())
        live = dom.XMLDesc(0) if active else ""
        config = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if persistent else ""
    return GuestDefinitions(name, active, persistent, live, config)


def read_guest(conn: libvirt.virConnect, name: str):
    """The guest as a sync reads it (GuestInfo), for the mirror."""
    from .inventory import read_guest as read

    dom = _domain(conn, name)
    with libvirt_errors():
        return read(dom)


# ---------------------------------------------------------------- changes


def attach_interface(conn: libvirt.virConnect, name: str, interface: str, scope: str) -> str:
    """Add the interface to the running guest, its config, or both (one call: libvirt applies
    both or neither). Returns the method used."""
    return _device_call(
        conn, name, scope, "attachDeviceFlags", interface, partial(with_interface_added, interface=interface)
    )


def detach_interface(conn: libvirt.virConnect, name: str, mac: str, scope: str) -> str:
    """Remove interface `mac` from the running guest, its config, or both; a live unplug is
    waited for (the guest must release the device)."""
    definitions = read_definitions(conn, name)
    current = interface_xml(definitions.live_xml if scope != "config" else definitions.config_xml, mac)
    if not current:
        raise NotFound(f"{name} has no interface {mac}.")
    removed = partial(with_interface_replaced, mac=mac, interface=None)
    method = _device_call(conn, name, scope, "detachDeviceFlags", current, removed)
    if scope != "config":
        _wait_until_gone(conn, name, mac)
    return method


def update_config(conn: libvirt.virConnect, name: str, interface: str) -> str:
    """Replace the persistent definition of the interface (found by its MAC)."""
    mac = interface_settings(xml.parse(interface)).mac
    replaced = partial(with_interface_replaced, mac=mac, interface=interface)
    return _device_call(conn, name, "config", "updateDeviceFlags", interface, replaced)


def _device_call(conn, name: str, scope: str, call: str, device: str, edit_config: Callable[[str], str]) -> str:
    """One device call with the scope's flags. A config-only change on a driver without device
    calls (the test driver) defines the guest again with `edit_config(config XML)` instead,
    when the guest is stopped; a running guest's definition is not touched behind its back."""
    dom = _domain(conn, name)
    try:
        with libvirt_errors():
            getattr(dom, call)(device, SCOPE_FLAGS[scope])
    except Unsupported:
        with libvirt_errors():
            stopped = not dom.isActive()
        if scope != "config" or not stopped:
            raise
        definitions = read_definitions(conn, name)
        with libvirt_errors():
            conn.defineXML(edit_config(definitions.config_xml))
        return REDEFINE
    return CONFIG_CHANGE if scope == "config" else CALL_METHODS[call]


def change_live(
    conn: libvirt.virConnect, name: str, new_interface: str, *, replug: bool, checkpoint=None, log=None
) -> LiveChange:
    """Change a running guest's interface to `new_interface` (same MAC). In place first
    (updateDeviceFlags), unless `replug` says libvirt cannot (a new model, a macvtap mode);
    an in-place call that libvirt refuses, or that it reports done while the live XML does
    not show it, is followed by detach + attach keeping MAC, model, PCI address and target.
    `checkpoint(**state)` records the old interface before it is unplugged; `log(line)` hears
    of a slow unplug."""
    settings = interface_settings(xml.parse(new_interface))
    started = time.monotonic()
    notes: list[str] = []
    if not replug:
        outcome = _try_in_place(conn, name, new_interface, settings)
        if outcome is None:
            return LiveChange(IN_PLACE, time.monotonic() - started, _live_interface(conn, name, settings.mac))
        notes.append(outcome)
    try:
        replugged = replug_interface(conn, name, new_interface, checkpoint=checkpoint, log=log)
    except Unsupported as error:  # a driver without device calls at all (the test driver)
        raise Unsupported(f"{'; '.join(notes) or 'libvirt cannot change it'}; nor unplug it: {error}") from error
    notes.extend(replugged.notes)
    return replace(replugged, seconds=time.monotonic() - started, notes=tuple(notes))


def _try_in_place(conn, name: str, new_interface: str, settings: InterfaceSettings) -> str | None:
    """Update in place; None when the live XML shows the change, else why not."""
    dom = _domain(conn, name)
    try:
        with libvirt_errors():
            dom.updateDeviceFlags(new_interface, LIVE)
    except HypervisorError as error:
        if error.code not in _CANNOT_IN_PLACE:
            raise
        return f"in-place update refused: {error}"
    live = interface_settings(find_interface(dom_xml(conn, name), settings.mac))
    differences = changed_fields(live, settings)
    if differences:
        return f"in-place update reported success but the live XML still differs in {', '.join(differences)}"
    return None


def changed_fields(now: InterfaceSettings, wanted: InterfaceSettings) -> list[str]:
    """The settings that differ between two interfaces (an unset link counts as up)."""
    fields = ("source_type", "source", "portgroup", "model", "mode", "vlan_tags", "inbound", "outbound")
    differing = [field for field in fields if getattr(now, field) != getattr(wanted, field)]
    if (now.link or "up") != (wanted.link or "up"):
        differing.append("link")
    return differing


def replug_interface(
    conn: libvirt.virConnect, name: str, new_interface: str, *, checkpoint=None, log=None
) -> LiveChange:
    """Detach the running interface and attach `new_interface` in its place. If the attach
    fails, the old interface is attached again and the error raised; if that fails too,
    NicUnplugged says so. A guest that does not release the NIC in time: DetachPending."""
    mac = interface_settings(xml.parse(new_interface)).mac
    dom = _domain(conn, name)
    old = _live_interface(conn, name, mac)
    attach = _for_attach(new_interface, old)
    if checkpoint is not None:
        checkpoint(old_interface_xml=old, new_interface_xml=attach, replugging=True)
    started = time.monotonic()
    with libvirt_errors():
        dom.detachDeviceFlags(old, LIVE)
    _wait_for_release(conn, name, mac, attach, log)
    try:
        with libvirt_errors():
            dom.attachDeviceFlags(attach, LIVE)
    except HypervisorError as error:
        restore = _for_attach(old, old)
        try:
            with libvirt_errors():
                dom.attachDeviceFlags(restore, LIVE)
        except HypervisorError as second:
            raise NicUnplugged(
                f"The new interface was refused ({error}), and plugging the old one in again failed too ({second}): "
                f"the NIC is now unplugged; its XML:\n{restore}",
                restore,
            ) from second
        raise HypervisorError(f"The new interface was refused ({error}); the old one is plugged in again.") from error
    return LiveChange(REPLUG, time.monotonic() - started, _live_interface(conn, name, mac))


def _wait_for_release(conn, name: str, mac: str, attach: str, log=None) -> None:
    """Wait for the guest to release an unplugged NIC: DETACH_WAIT_S, then (saying so)
    DETACH_GRACE_S more. Giving up earlier would fail the change while the unplug is still
    pending, and the NIC would vanish later with nothing to plug it in again."""
    holds = _holds_interface(mac)
    if _released(conn, name, holds, DETACH_WAIT_S):
        return
    if log is not None:
        log(f"{name} has not released interface {mac} after {DETACH_WAIT_S:g} s: waiting {DETACH_GRACE_S:g} s more")
    if _released(conn, name, holds, DETACH_GRACE_S):
        return
    raise DetachPending(
        f"Detach pending: {name} has not released interface {mac} within {DETACH_WAIT_S + DETACH_GRACE_S:g} s; "
        "the NIC will disappear when the guest releases it; re-add it (virsh attach-device --live) with this "
        f"interface XML:\n{attach}",
        attach,
    )


def _released(conn, name: str, holds: Callable[[str], bool], timeout: float) -> bool:
    """Whether the running guest's live XML no longer holds the device (`holds(live_xml)`
    false), polled for up to `timeout` s."""
    deadline = time.monotonic() + timeout
    while holds(dom_xml(conn, name)):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def _holds_interface(mac: str) -> Callable[[str], bool]:
    return lambda live_xml: find_interface(live_xml, mac) is not None


def _holds_pci_device(pci_address: str) -> Callable[[str], bool]:
    return lambda live_xml: hostdevs.find_device(live_xml, pci_address) is not None


def _for_attach(interface: str, old_live: str) -> str:
    """The interface to plug: its definition as the running one had it (PCI address, target
    device) without what belonged to the unplugged device (port id, alias)."""
    iface = xml.parse(interface)
    old = xml.parse(old_live)
    for tag in ("address", "target"):
        if iface.find(tag) is None and old.find(tag) is not None:
            iface.append(copy.deepcopy(old.find(tag)))
    source = iface.find("source")
    if source is not None and iface.get("type") == "network":
        for runtime in ("portid", "bridge"):
            source.attrib.pop(runtime, None)
    _remove(iface, "alias")
    return xml.to_string(iface)


def dom_xml(conn: libvirt.virConnect, name: str) -> str:
    with libvirt_errors():
        return _domain(conn, name).XMLDesc(0)


def _live_interface(conn, name: str, mac: str) -> str:
    found = interface_xml(dom_xml(conn, name), mac)
    if not found:
        raise NotFound(f"{name} has no interface {mac} any more.")
    return found


def _wait_until_gone(conn, name: str, mac: str, timeout: float = DETACH_WAIT_S) -> None:
    """libvirt returns from a live detach once it asked the guest; the device goes when the
    guest lets it go."""
    if not _released(conn, name, _holds_interface(mac), timeout):
        raise HypervisorError(
            f"{name} has not released interface {mac} within {timeout:g} s (the guest must acknowledge an unplug)."
        )


def attach_again(conn: libvirt.virConnect, name: str, interface: str) -> bool:
    """Attach `interface` to the running guest unless it already has its MAC (a recovery
    after a worker died between detach and attach). Returns whether it attached."""
    mac = interface_settings(xml.parse(interface)).mac
    if find_interface(dom_xml(conn, name), mac) is not None:
        return False
    with libvirt_errors():
        _domain(conn, name).attachDeviceFlags(interface, LIVE)
    return True


# ---------------------------------------------------------------- PCI devices (hostdev)
# A `<hostdev>` or `<interface type='hostdev'>`, found by the host PCI address it holds
# (XML in hostdevs.py). The same device calls as interfaces, and the same redefinition of a
# stopped guest's config on a driver without them.


def attach_pci_device(conn: libvirt.virConnect, name: str, device: str, scope: str) -> str:
    """Give the guest the PCI device described by `device` (live, config or both)."""
    added = partial(hostdevs.with_device_added, device=device)
    return _device_call(conn, name, scope, "attachDeviceFlags", device, added)


def detach_pci_device(conn: libvirt.virConnect, name: str, pci_address: str, scope: str) -> str:
    """Take the device at host address `pci_address` back from the guest; a live unplug is
    waited for (the guest must release the device before the host can use it again)."""
    definitions = read_definitions(conn, name)
    current = hostdevs.find_device(definitions.live_xml if scope != "config" else definitions.config_xml, pci_address)
    if current is None:
        raise NotFound(f"{name} holds no PCI device {pci_address}.")
    removed = partial(hostdevs.with_device_removed, pci_address=pci_address)
    method = _device_call(conn, name, scope, "detachDeviceFlags", current.xml, removed)
    if scope != "config":
        _wait_until_released(conn, name, pci_address)
    return method


def _wait_until_released(conn, name: str, pci_address: str, timeout: float = DETACH_WAIT_S) -> None:
    """As _wait_until_gone, for a PCI device: the host gets it back once the guest lets it go."""
    if not _released(conn, name, _holds_pci_device(pci_address), timeout):
        raise HypervisorError(
            f"{name} has not released PCI device {pci_address} within {timeout:g} s "
            "(the guest must acknowledge an unplug)."
        )
