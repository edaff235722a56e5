"""Restarting a network without leaving its running guests cut off.

libvirt's destroy deletes the network's ports: every running guest's tap is left off the
bridge until its interface is plugged again (LIBVIRT.md, "Restart and re-attachment").
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
