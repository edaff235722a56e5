"""Restarting a network without leaving its running guests cut off.

libvirt's destroy deletes the network's ports: every running guest's tap is left off the
bridge until its interface is plugged again (docs/libvirt.md, "Restarting a network").
So: record each running guest's live <interface> on the network, destroy, start, then
re-plug each one, least disruptive method first, and check libvirt has a port for it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import libvirt
from lxml import etree

from . import xml
from .client import libvirt_errors
from .errors import HypervisorError, Unsupported
from .networks import lookup

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
# Re-plug methods, least disruptive first.
BRIDGE_FLIP = "bridge-flip"  # to type='bridge' on the network's bridge and back: the guest sees nothing
DETACH_ATTACH = "detach-attach"  # hot-unplug and plug: the guest must DHCP again


@dataclass(frozen=True)
class AttachedInterface:
    """A running guest's interface on the network, as it was before the restart."""

    domain: str
    mac: str
    xml: str
    target_dev: str = ""


@dataclass(frozen=True)
class Reattached:
    domain: str
    mac: str
    ok: bool
    method: str = ""
    error: str = ""
    seconds: float = 0.0


def interfaces_on_network(conn: libvirt.virConnect, network: str) -> list[AttachedInterface]:
    """Live interfaces of running guests whose source is `network`."""
    found = []
    with libvirt_errors():
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            root = xml.parse(dom.XMLDesc(0))
            for iface in root.findall("devices/interface"):
                # type is 'bridge' or 'direct' in the live XML of bridge-mode and macvtap networks
                if iface.xpath("string(source/@network)") == network:
                    found.append(
                        AttachedInterface(
                            domain=dom.name(),
                            mac=iface.xpath("string(mac/@address)").lower(),
                            xml=xml.to_string(iface),
                            target_dev=iface.xpath("string(target/@dev)"),
                        )
                    )
    return found


def network_form(interface_xml: str) -> str:
    """The interface as its config has it: type='network' naming only its network (and
    portgroup), without the deleted port's id or the bridge/device libvirt filled in, so
    libvirt creates a fresh port on the restarted network."""
    iface = xml.parse(interface_xml)
    iface.set("type", "network")
    source = iface.find("source")
    kept = {key: source.get(key) for key in ("network", "portgroup") if source.get(key)}
    source.attrib.clear()
    source.attrib.update(kept)
    return xml.to_string(iface)


def bridge_form(interface_xml: str, bridge: str) -> str:
    """The same interface (MAC, model, PCI address, target) as type='bridge' on `bridge`."""
    iface = copy.deepcopy(xml.parse(interface_xml))
    iface.set("type", "bridge")
    source = iface.find("source")
    source.attrib.clear()
    source.set("bridge", bridge)
    return xml.to_string(iface)


def ports_by_mac(conn: libvirt.virConnect, network: str) -> dict[str, str]:
    """MAC → owning domain, for every port libvirt has on the network."""
    with libvirt_errors():
        net = lookup(conn, network)
        ports = net.listAllPorts()
    owners = {}
    for port in ports:
        root = etree.fromstring(port.XMLDesc(0).encode())
        owners[root.xpath("string(mac/@address)").lower()] = root.findtext("owner/name", "")
    return owners


def reattach(conn: libvirt.virConnect, network: str, bridge: str, iface: AttachedInterface) -> Reattached:
    """Plug one interface back in, trying each method until libvirt has a port for it."""
    errors = []
    for method in (BRIDGE_FLIP, DETACH_ATTACH):
        started = time.monotonic()
        try:
            with libvirt_errors():
                _replug(conn.lookupByName(iface.domain), iface, bridge, method)
                connected = ports_by_mac(conn, network).get(iface.mac) == iface.domain
        except HypervisorError as error:
            errors.append(f"{method}: {error}")
            continue
        if connected:
            return Reattached(iface.domain, iface.mac, True, method, seconds=time.monotonic() - started)
        errors.append(f"{method}: libvirt shows no port for {iface.mac} afterwards")
    return Reattached(iface.domain, iface.mac, False, error="; ".join(errors))


def _replug(dom: libvirt.virDomain, iface: AttachedInterface, bridge: str, method: str) -> None:
    if method == BRIDGE_FLIP:
        dom.updateDeviceFlags(bridge_form(iface.xml, bridge), LIVE)
        dom.updateDeviceFlags(network_form(iface.xml), LIVE)
    else:
        dom.detachDeviceFlags(_current_interface_xml(dom, iface.mac), LIVE)
        dom.attachDeviceFlags(network_form(iface.xml), LIVE)


def _current_interface_xml(dom: libvirt.virDomain, mac: str) -> str:
    root = xml.parse(dom.XMLDesc(0))
    for iface in root.findall("devices/interface"):
        if iface.xpath("string(mac/@address)").lower() == mac:
            return xml.to_string(iface)
    raise HypervisorError(f"{dom.name()} has no interface {mac} any more.")


@dataclass(frozen=True)
class RestartOutcome:
    after: object  # NetworkInfo of the network once running again
    interfaces: tuple[Reattached, ...]
    rolled_back: bool = False
    error: str = ""
    down_seconds: float = 0.0  # from destroy until the network runs again


def reattach_missing(conn, network: str, bridge: str, captured: list[AttachedInterface], report=None):
    """Re-plug every captured interface that has no port on the (running) network."""
    try:
        connected = ports_by_mac(conn, network)
    except Unsupported:
        why = "this host's libvirt driver cannot list network ports or re-plug interfaces"
        return tuple(Reattached(i.domain, i.mac, False, error=why) for i in captured)
    results = []
    for iface in captured:
        if connected.get(iface.mac) == iface.domain:
            results.append(Reattached(iface.domain, iface.mac, True, "already connected"))
            continue
        results.append(reattach(conn, network, bridge, iface))
        if report:
            report(results[-1])
    return tuple(results)


def restart_network(conn: libvirt.virConnect, name: str, new_xml: str = "", report=None) -> RestartOutcome:
    """Destroy and start the network, re-plugging its running guests. `new_xml`, if given,
    becomes the persistent config first; otherwise the persistent config (maybe changed
    since the start: "restart pending") is what starts. If it does not start, the config
    that was running is defined and started again, and its guests re-plugged: a network
    is never left stopped by kvmweb."""
    from .inventory import read_network

    with libvirt_errors():
        net = lookup(conn, name)
        persistent = bool(net.isPersistent())
        running_xml = xml.to_string(xml.without_runtime_state(net.XMLDesc(0))) if net.isActive() else ""
        captured = interfaces_on_network(conn, name)
        stopped_at = time.monotonic()
        if net.isActive():
            net.destroy()
    error, rolled_back = "", False
    try:
        with libvirt_errors():
            if not persistent:  # a transient network vanished with its destroy
                net = conn.networkCreateXML(new_xml or running_xml)
            else:
                if new_xml:
                    net = conn.networkDefineXML(new_xml)
                net.create()
    except HypervisorError as failure:
        if not running_xml:
            raise
        error, rolled_back = str(failure), True
        with libvirt_errors():
            net = conn.networkDefineXML(running_xml) if persistent else conn.networkCreateXML(running_xml)
            if not net.isActive():
                net.create()
    down = time.monotonic() - stopped_at
    with libvirt_errors():
        after = read_network(net)
    interfaces = reattach_missing(conn, name, after.bridge, captured, report)
    return RestartOutcome(after, interfaces, rolled_back, error, down)


@dataclass(frozen=True)
class RenameOutcome:
    after: object  # NetworkInfo of the network under its new name
    moved: tuple[str, ...]  # "guest mac" whose persistent config now names the new network
    replugged: tuple[Reattached, ...]


def rename_network(conn: libvirt.virConnect, old_name: str, new_name: str, move_guests: bool) -> RenameOutcome:
    """libvirt cannot rename: undefine the old network and define its config under the new
    name (with a new UUID: libvirt refuses two definitions of one bridge), start it if the
    old one ran, optionally point guests' interfaces at it (persistent config, and live for
    running guests). On any failure the old network is defined, started and re-plugged again."""
    from .inventory import inactive_xml, read_network

    with libvirt_errors():
        old = lookup(conn, old_name)
        old_xml = inactive_xml(old, old.XMLDesc(0))
        renamed = xml.parse(old_xml)
        renamed.find("name").text = new_name
        for uuid in renamed.findall("uuid"):
            renamed.remove(uuid)
        was_active, autostart = bool(old.isActive()), bool(old.autostart())
        captured = interfaces_on_network(conn, old_name)
        if was_active:
            old.destroy()
        old.undefine()
    moved: list[str] = []
    new = None
    try:
        with libvirt_errors():
            new = conn.networkDefineXML(xml.to_string(renamed))
            if was_active:
                new.create()
            if move_guests:
                _move_persistent_interfaces(conn, old_name, new_name, moved)
    except HypervisorError:
        _restore_old(conn, new, old_xml, (old_name, new_name), captured, was_active, autostart)
        raise
    with libvirt_errors():
        replugged = tuple(_move_live(conn, new_name, iface) for iface in captured) if move_guests else ()
        if autostart:
            new.setAutostart(1)
        return RenameOutcome(read_network(new), tuple(moved), replugged)


def _restore_old(conn, new, old_xml: str, names: tuple[str, str], captured, was_active, autostart) -> None:
    """Undo a rename: guests' configs back, the new network gone, the old one as it was."""
    old_name, new_name = names
    with libvirt_errors():
        _move_persistent_interfaces(conn, new_name, old_name, [])
        if new is not None:
            if new.isActive():
                new.destroy()
            new.undefine()
        old = conn.networkDefineXML(old_xml)
        if autostart:
            old.setAutostart(1)
        if was_active:
            old.create()
    if was_active:
        reattach_missing(conn, old_name, xml.parse_network(old.XMLDesc(0)).bridge, captured)


def _move_persistent_interfaces(conn: libvirt.virConnect, old_name: str, new_name: str, moved: list[str]) -> None:
    """Point every persistent guest interface on `old_name` at `new_name`, noting each in `moved`."""
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT):
        config = xml.parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        for iface in config.findall("devices/interface"):
            source = iface.find("source")
            if source is not None and source.get("network") == old_name:
                source.set("network", new_name)
                dom.updateDeviceFlags(xml.to_string(iface), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
                moved.append(f"{dom.name()} {iface.xpath('string(mac/@address)').lower()}")


def _move_live(conn: libvirt.virConnect, new_name: str, iface: AttachedInterface) -> Reattached:
    """Point a running guest's interface at the renamed network; libvirt plugs it into its bridge."""
    live = xml.parse(network_form(iface.xml))
    live.find("source").set("network", new_name)
    moved = AttachedInterface(iface.domain, iface.mac, xml.to_string(live), iface.target_dev)
    started = time.monotonic()
    try:
        conn.lookupByName(iface.domain).updateDeviceFlags(moved.xml, LIVE)
    except libvirt.libvirtError:
        return reattach(conn, new_name, xml.parse_network(conn.networkLookupByName(new_name).XMLDesc(0)).bridge, moved)
    ok = ports_by_mac(conn, new_name).get(iface.mac) == iface.domain
    error = "" if ok else "libvirt shows no port for it on the renamed network"
    return Reattached(iface.domain, iface.mac, ok, "update-source", error, time.monotonic() - started)
