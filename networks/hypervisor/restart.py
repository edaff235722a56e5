"""Restarting a network without leaving its running guests cut off.

libvirt's destroy deletes the network's ports: every running guest's tap is left off the
bridge until its interface is plugged again (docs/libvirt.md, "Restarting a network").
So: record each running guest's live <interface> on the network, destroy, start, then
re-plug each one, least disruptive method first, and check libvirt has a port for it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import libvirt
from lxml import etree

from . import xml
from .client import libvirt_errors
from .errors import HypervisorError, NotFound, Unsupported
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


# ---------------------------------------------------------------- restart

ROLLBACK_ATTEMPTS = 3  # tries of every way back before the network is reported down
ROLLBACK_WAIT = 0.5  # seconds before the second try, growing by as much before each next one
PREVIOUS_RUNNING = "its previous running config"
OLD_PERSISTENT = "its persistent config from before the restart"


@dataclass(frozen=True)
class RestartOutcome:
    after: object  # NetworkInfo of the network afterwards, running or not (None: a transient one is gone)
    interfaces: tuple[Reattached, ...]
    rolled_back: bool = False
    error: str = ""  # why the config meant to start did not
    down_seconds: float = 0.0  # from destroy until the network runs again
    network_running: bool = True
    runs: str = ""  # after a rollback: which config runs (PREVIOUS_RUNNING or OLD_PERSISTENT)
    notes: tuple[str, ...] = ()  # what the rollback could not do, in words


def restart_state(conn: libvirt.virConnect, name: str, new_xml: str = "") -> dict:
    """What a restart changes, read before it changes anything (JSON-friendly): enough to put
    the network back, or to finish the restart, if the process running it dies."""
    from .inventory import inactive_xml

    with libvirt_errors():
        net = lookup(conn, name)
        persistent, active, live = bool(net.isPersistent()), bool(net.isActive()), net.XMLDesc(0)
        return {
            "network": name,
            "persistent": persistent,
            "running_xml": xml.to_string(xml.without_runtime_state(live)) if active else "",
            "persistent_xml": inactive_xml(net, live) if persistent else "",
            "new_xml": new_xml,
            "interfaces": [asdict(iface) for iface in interfaces_on_network(conn, name)],
        }


def restart_network(
    conn: libvirt.virConnect, name: str, new_xml: str = "", report=None, checkpoint=None
) -> RestartOutcome:
    """Destroy and start the network, re-plugging its running guests. `new_xml`, if given,
    becomes the persistent config first; otherwise the persistent config (maybe changed
    since the start: "restart pending") is what starts. If it does not start, the network
    runs its previous running config again with its persistent config as it was (see
    _roll_back), and its guests are re-plugged. `checkpoint(**state)` is called with
    everything a recovery needs before the destroy, and again before a rollback."""
    state = restart_state(conn, name, new_xml)
    _record(checkpoint, **state)
    stopped_at = time.monotonic()
    with libvirt_errors():
        net = lookup(conn, name)
        if net.isActive():
            net.destroy()
    return _bring_up(conn, state, stopped_at, report, checkpoint, define_new=True)


def resume_restart(conn: libvirt.virConnect, state: dict, report=None, checkpoint=None) -> tuple[RestartOutcome, bool]:
    """Finish a restart whose process died after recording `state`: start the network if it is
    down (the config defined on the host: the new one if the run got to define it, else the
    recorded one), or finish the rollback it had begun; then re-plug every recorded interface
    without a port. A running network is not restarted. Returns the outcome and whether this
    call started the network."""
    net = _find(conn, state["network"])
    if net is None or not net.isActive():
        outcome = _bring_up(conn, state, time.monotonic(), report, checkpoint, define_new=False)
        return outcome, outcome.network_running
    rolled_back = bool(state.get("rolling_back"))
    notes = _restore_persistent(conn, state) if rolled_back else ()
    return _finish(conn, state, net, time.monotonic(), report, rolled_back=rolled_back, notes=notes), False


def _bring_up(conn, state: dict, stopped_at: float, report, checkpoint, define_new: bool) -> RestartOutcome:
    error, net = "", None
    if not state.get("rolling_back"):
        try:
            with libvirt_errors():
                net = _start_target(conn, state, define_new)
        except HypervisorError as failure:
            if not state["running_xml"]:
                raise  # it was not running: there is nothing to go back to
            error = _one_line(failure)
    if net is not None:
        return _finish(conn, state, net, stopped_at, report)
    _record(checkpoint, rolling_back=True)
    state = {**state, "rolling_back": True}
    net, runs, notes = _roll_back(conn, state)
    return _finish(conn, state, net, stopped_at, report, rolled_back=True, error=error, runs=runs, notes=notes)


def _start_target(conn, state: dict, define_new: bool) -> libvirt.virNetwork:
    """Start the config the restart is for: the new XML (defined first) or the persistent config."""
    new_xml = state["new_xml"] if define_new else ""
    if not state["persistent"]:  # a transient network vanished with its destroy
        return conn.networkCreateXML(new_xml or state["running_xml"])
    net = conn.networkDefineXML(new_xml) if new_xml else lookup(conn, state["network"])
    net.create()
    return net


def _roll_back(conn, state: dict) -> tuple[libvirt.virNetwork | None, str, tuple[str, ...]]:
    """Start the network again after its intended config failed. First choice: the config that
    was running, with the persistent config put back as it was (libvirt keeps a config defined
    while the network runs as its pending one), so the host is exactly as before. If that will
    not start, the old persistent config (when it differs). A few tries with short waits (a
    device or address may be released late). Returns (network or None, which config runs, notes)."""
    errors: list[str] = []
    for attempt in range(ROLLBACK_ATTEMPTS):
        if attempt:
            time.sleep(ROLLBACK_WAIT * attempt)
        errors = []
        for runs, start in _ways_back(state):
            try:
                with libvirt_errors():
                    net = start(conn, state)
            except HypervisorError as error:
                errors.append(f"{runs}: {_one_line(error)}")
                continue
            notes = _restore_persistent(conn, state) if runs == PREVIOUS_RUNNING else ()
            return net, runs, notes
    gave_up = f"it did not start again in {ROLLBACK_ATTEMPTS} tries ({'; '.join(errors)})"
    return None, "", (gave_up, *_restore_persistent(conn, state))  # a pending edit survives even this


def _ways_back(state: dict):
    yield PREVIOUS_RUNNING, _start_previous
    if state["persistent"] and _differs(state["persistent_xml"], state["running_xml"]):
        yield OLD_PERSISTENT, _start_old_persistent


def _start_previous(conn, state: dict) -> libvirt.virNetwork:
    net = _find(conn, state["network"])
    if net is not None and net.isActive():
        return net  # an earlier try started it
    if not state["persistent"]:
        return conn.networkCreateXML(state["running_xml"])
    net = conn.networkDefineXML(state["running_xml"])
    net.create()
    return net


def _start_old_persistent(conn, state: dict) -> libvirt.virNetwork:
    net = conn.networkDefineXML(state["persistent_xml"])
    if not net.isActive():
        net.create()
    return net


def _restore_persistent(conn, state: dict) -> tuple[str, ...]:
    """Make the persistent config what it was before the restart again (the running network
    keeps its live config; a pending edit stays pending)."""
    if not state["persistent"] or not _differs(state["persistent_xml"], state["running_xml"]):
        return ()
    try:
        with libvirt_errors():
            conn.networkDefineXML(state["persistent_xml"])
    except HypervisorError as error:
        return (f"its persistent config could not be put back and is now the running one ({_one_line(error)})",)
    return ()


def _finish(conn, state: dict, net, stopped_at: float, report, **outcome) -> RestartOutcome:
    from .inventory import read_network

    down = time.monotonic() - stopped_at
    captured = [AttachedInterface(**iface) for iface in state["interfaces"]]
    if net is None:
        left = _find(conn, state["network"])
        with libvirt_errors():
            after = read_network(left) if left is not None else None
        unplugged = tuple(Reattached(i.domain, i.mac, False, error="the network is down") for i in captured)
        return RestartOutcome(after, unplugged, down_seconds=down, network_running=False, **outcome)
    with libvirt_errors():
        after = read_network(net)
    interfaces = reattach_missing(conn, state["network"], after.bridge, captured, report)
    return RestartOutcome(after, interfaces, down_seconds=down, **outcome)


# ---------------------------------------------------------------- rename


@dataclass(frozen=True)
class RenameOutcome:
    after: object  # NetworkInfo of the network under its new name
    moved: tuple[str, ...]  # "guest mac" whose persistent config now names the new network
    replugged: tuple[Reattached, ...]


class RenameUndoFailed(HypervisorError):
    """A rename failed and so did putting the old network back. The message gives both
    errors and where the network is now; `runs_as` names it ('' if under neither name)."""

    def __init__(self, message: str, *, runs_as: str, running: bool):
        super().__init__(message)
        self.runs_as = runs_as
        self.running = running


def rename_state(conn: libvirt.virConnect, old_name: str, new_name: str, move_guests: bool) -> dict:
    """The old network as it is before a rename (JSON-friendly): its persistent XML, autostart,
    whether it runs and its guests' live interfaces, with the config to define under the new name."""
    from .inventory import inactive_xml

    with libvirt_errors():
        old = lookup(conn, old_name)
        old_xml = inactive_xml(old, old.XMLDesc(0))
        renamed = xml.parse(old_xml)
        renamed.find("name").text = new_name
        for uuid in renamed.findall("uuid"):  # a new UUID: libvirt refuses two networks with one
            renamed.remove(uuid)
        return {
            "old_name": old_name,
            "new_name": new_name,
            "old_xml": old_xml,
            "renamed_xml": xml.to_string(renamed),
            "was_active": bool(old.isActive()),
            "autostart": bool(old.autostart()),
            "move_guests": bool(move_guests),
            "interfaces": [asdict(iface) for iface in interfaces_on_network(conn, old_name)],
        }


def rename_network(
    conn: libvirt.virConnect, old_name: str, new_name: str, move_guests: bool, checkpoint=None
) -> RenameOutcome:
    """libvirt cannot rename: undefine the old network and define its config under the new
    name (libvirt refuses a second definition of one bridge, so the old one must go first),
    start it if the old one ran, optionally point guests' interfaces at it (persistent
    config, and live for running guests). `checkpoint(**state)` receives the old network's
    config before it is destroyed, so it stays recoverable. On any failure the old network
    is defined, started and re-plugged again; if that fails too, RenameUndoFailed."""
    from .inventory import read_network

    state = rename_state(conn, old_name, new_name, move_guests)
    _record(checkpoint, **state)
    with libvirt_errors():
        old = lookup(conn, old_name)
        if state["was_active"]:
            old.destroy()
        old.undefine()
    moved: list[str] = []
    new = None
    try:
        with libvirt_errors():
            new = conn.networkDefineXML(state["renamed_xml"])
            if state["was_active"]:
                new.create()
            if move_guests:
                _move_persistent_interfaces(conn, old_name, new_name, moved)
    except HypervisorError as failure:
        _undo_rename(conn, new, state, failure)
        raise
    with libvirt_errors():
        replugged = tuple(_move_live(conn, new_name, iface) for iface in _captured(state)) if move_guests else ()
        if state["autostart"]:
            new.setAutostart(1)
        return RenameOutcome(read_network(new), tuple(moved), replugged)


def _undo_rename(conn, new, state: dict, failure: HypervisorError) -> None:
    """Put the old network back; if that fails, keep the network under one of its names and
    raise RenameUndoFailed naming both errors."""
    try:
        _restore_old(conn, new, state)
    except HypervisorError as undo_error:
        runs_as, running = _run_under_either(conn, state)
        message = (
            f"Renaming failed: {_one_line(failure)}; putting {state['old_name']} back failed too: "
            f"{_one_line(undo_error)}; {_where(state, runs_as, running)}"
        )
        raise RenameUndoFailed(message, runs_as=runs_as, running=running) from failure


def _restore_old(conn, new, state: dict) -> None:
    """Undo a rename: guests' configs back, the new network gone, the old one as it was."""
    old_name, new_name = state["old_name"], state["new_name"]
    with libvirt_errors():
        _move_persistent_interfaces(conn, new_name, old_name, [])
        if new is not None:
            if new.isActive():
                new.destroy()
            new.undefine()
        old = conn.networkDefineXML(state["old_xml"])
        if state["autostart"]:
            old.setAutostart(1)
        if state["was_active"]:
            old.create()
    _replug_under(conn, state, old_name)


def _run_under_either(conn, state: dict) -> tuple[str, bool]:
    """After a failed undo: get the network defined, and running if it ran, under the new name,
    else the old one. Returns (name, running); ('', False) if neither could be defined."""
    new_name = state["new_name"]
    for name, config in ((new_name, state["renamed_xml"]), (state["old_name"], state["old_xml"])):
        try:
            with libvirt_errors():
                net = _find(conn, name) or conn.networkDefineXML(config)
        except HypervisorError:
            continue
        if not state["was_active"] or _started(net):
            _follow_quietly(conn, state, name)
            return name, state["was_active"]
        if name != new_name:
            return name, False  # defined, but it will not start
        _undefine_quietly(net)  # frees the bridge name for the old definition
    return "", False


def _where(state: dict, runs_as: str, running: bool) -> str:
    if not runs_as:
        return "the network is not defined under either name; its old config is kept in the operation's checkpoint"
    if running:
        return f"the network runs as {runs_as}"
    if state["was_active"]:
        return f"the network is defined as {runs_as} but NOT running"
    return f"the network is defined as {runs_as} (it was not running)"


def _follow_quietly(conn, state: dict, name: str) -> None:
    """Point guests' configs and live interfaces at the network under `name`, as far as possible."""
    other = state["new_name"] if name == state["old_name"] else state["old_name"]
    try:
        with libvirt_errors():
            _move_persistent_interfaces(conn, other, name, [])
        _replug_under(conn, state, name)
    except HypervisorError:
        pass  # the sync the service requests after a failure shows the guests as they are


@dataclass(frozen=True)
class RenameRecovery:
    runs_as: str
    running: bool
    moved: tuple[str, ...]
    replugged: tuple[Reattached, ...]


def resume_rename(conn: libvirt.virConnect, state: dict) -> RenameRecovery:
    """Finish a rename whose process died after recording `state`: the network ends defined
    (and running, if it ran) under one name (the new one if the run got to define it, else
    the old one from the recorded config), guests' configs and live interfaces following it."""
    old_name, new_name = state["old_name"], state["new_name"]
    old, new = _find(conn, old_name), _find(conn, new_name)
    with libvirt_errors():
        if new is not None and not (old is not None and old.isActive()):
            name, net, spare = new_name, new, old
        else:
            name, net, spare = old_name, old or conn.networkDefineXML(state["old_xml"]), new
        if spare is not None and not spare.isActive():
            spare.undefine()  # two definitions of one bridge: only the test driver allows it
        if state["was_active"] and not net.isActive():
            net.create()
        if state["autostart"]:
            net.setAutostart(1)
        moved: list[str] = []
        if name == old_name or state["move_guests"]:
            _move_persistent_interfaces(conn, new_name if name == old_name else old_name, name, moved)
        running = bool(net.isActive())
    return RenameRecovery(name, running, tuple(moved), _replug_under(conn, state, name))


def _replug_under(conn, state: dict, name: str) -> tuple[Reattached, ...]:
    """Re-plug every recorded interface without a port on the network `name` (under the new
    name, live interfaces still naming the old network are pointed at it)."""
    captured = _captured(state)
    if not captured:
        return ()
    with libvirt_errors():
        net = lookup(conn, name)
        if not net.isActive():
            return tuple(Reattached(i.domain, i.mac, False, error=f"{name} is not running") for i in captured)
        bridge = xml.parse_network(net.XMLDesc(0)).bridge
    if name == state["old_name"]:
        return reattach_missing(conn, name, bridge, captured)
    try:
        connected = ports_by_mac(conn, name)
    except Unsupported:
        why = "this host's libvirt driver cannot list network ports or re-plug interfaces"
        return tuple(Reattached(i.domain, i.mac, False, error=why) for i in captured)
    return tuple(
        Reattached(i.domain, i.mac, True, "already connected")
        if connected.get(i.mac) == i.domain
        else _move_live(conn, name, i)
        for i in captured
    )


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


# ---------------------------------------------------------------- helpers


def _record(checkpoint, **state) -> None:
    if checkpoint is not None:
        checkpoint(**state)


def _captured(state: dict) -> list[AttachedInterface]:
    return [AttachedInterface(**iface) for iface in state["interfaces"]]


def _find(conn, name: str) -> libvirt.virNetwork | None:
    try:
        with libvirt_errors():
            return lookup(conn, name)
    except NotFound:
        return None


def _started(net: libvirt.virNetwork) -> bool:
    try:
        with libvirt_errors():
            if not net.isActive():
                net.create()
    except HypervisorError:
        return False
    return True


def _undefine_quietly(net: libvirt.virNetwork) -> None:
    try:
        with libvirt_errors():
            net.undefine()
    except HypervisorError:
        pass  # the caller tries the other name, and reports what it finds


def _differs(a: str, b: str) -> bool:
    """Whether two network configs differ beyond what libvirt adds while one runs."""
    if not a or not b:
        return bool(a or b)
    return xml.to_string(xml.without_runtime_state(a)) != xml.to_string(xml.without_runtime_state(b))


def _one_line(error) -> str:
    """An error on one line: rows and pages keep only an error's first line."""
    return " ".join(str(error).split())
