"""Reading a whole host in bulk: facts, networks, guests and node devices."""

from __future__ import annotations

import libvirt

from . import xml
from .client import libvirt_errors
from .errors import HypervisorError
from .types import DhcpLease, GuestInfo, HostFacts, HostInventory, NetworkInfo, NodeDeviceInfo

_DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


def version_string(number: int) -> str:
    """libvirt's packed version (major * 1,000,000 + minor * 1,000 + micro) as text."""
    return f"{number // 1_000_000}.{number // 1_000 % 1_000}.{number % 1_000}"


def read_host(conn: libvirt.virConnect) -> HostInventory:
    """Everything kvmweb mirrors about a host. Optional parts that fail become warnings."""
    warnings: list[str] = []
    with libvirt_errors():
        networks = _read_each(conn.listAllNetworks(), read_network, "network", warnings)
        guests = _read_each(conn.listAllDomains(), read_guest, "guest", warnings)
    return HostInventory(
        facts=read_facts(conn, warnings),
        networks=networks,
        guests=guests,
        devices=read_devices(conn, warnings),
        warnings=tuple(warnings),
    )


# Codes libvirt gives a call on an object removed since it was listed.
_GONE = {libvirt.VIR_ERR_NO_NETWORK, libvirt.VIR_ERR_NO_DOMAIN}


def _read_each(objects, read, what: str, warnings: list[str]) -> tuple:
    """Read each listed object; one removed between the listing and its read (someone
    undefined it meanwhile) is skipped with a warning instead of failing the whole sync."""
    found = []
    for obj in objects:
        try:
            found.append(read(obj))
        except libvirt.libvirtError as error:
            if error.get_error_code() not in _GONE:
                raise
            warnings.append(f"{what} {_name_of(obj)} disappeared while the host was read; skipped")
    return tuple(found)


def _name_of(obj) -> str:
    try:
        return obj.name()  # kept client-side: answers even once the object is gone
    except libvirt.libvirtError:
        return "(unknown)"


def read_network(net: libvirt.virNetwork) -> NetworkInfo:
    persistent = bool(net.isPersistent())
    active = bool(net.isActive())
    live = net.XMLDesc(0)
    inactive = inactive_xml(net, live) if persistent else live
    leases = read_leases(net) if active else ()
    return xml.parse_network(
        live,
        inactive,
        active=active,
        autostart=bool(net.autostart()) if persistent else False,
        persistent=persistent,
        leases=leases or (),
        leases_known=leases is not None,
    )


def read_leases(net: libvirt.virNetwork) -> tuple[DhcpLease, ...] | None:
    """The network's current DHCP leases; None where the driver cannot tell."""
    try:
        found = net.DHCPLeases()
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return None
        raise
    return tuple(
        DhcpLease(
            mac=(lease.get("mac") or "").lower(),
            ip=lease.get("ipaddr") or "",
            prefix=lease.get("prefix"),
            hostname=lease.get("hostname") or "",
            client_id=lease.get("clientid") or lease.get("iaid") or "",
            expires=lease.get("expirytime"),
        )
        for lease in found
    )


def inactive_xml(net: libvirt.virNetwork, live_xml: str) -> str:
    """The persistent XML; drivers that cannot give it (the test driver) get the live XML."""
    try:
        return net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
    except libvirt.libvirtError as error:
        if error.get_error_code() in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
            return live_xml
        raise


def read_guest(dom: libvirt.virDomain) -> GuestInfo:
    state_code = dom.state()[0]
    return xml.parse_domain(dom.XMLDesc(0), _DOMAIN_STATES.get(state_code, "nostate"))


def _optional(warnings: list[str], what: str, call, default=None):
    """Run an optional libvirt call; a failure becomes a warning, not a failed sync."""
    try:
        return call()
    except (libvirt.libvirtError, HypervisorError) as error:
        message = error.get_error_message() if isinstance(error, libvirt.libvirtError) else str(error)
        warnings.append(f"{what}: {message}")
        return default


def read_facts(conn: libvirt.virConnect, warnings: list[str]) -> HostFacts:
    info = _optional(warnings, "host info", conn.getInfo, default=None)
    hv_version = _optional(warnings, "hypervisor version", conn.getVersion, default=0)
    return HostFacts(
        hostname=_optional(warnings, "hostname", conn.getHostname, default="") or "",
        hypervisor_type=_optional(warnings, "hypervisor type", conn.getType, default="") or "",
        hypervisor_version=version_string(hv_version) if hv_version else "",
        libvirt_version=version_string(_optional(warnings, "libvirt version", conn.getLibVersion, default=0) or 0),
        cpu_model=info[0] if info else "",
        memory_mib=info[1] if info else None,
        cpus=info[2] if info else None,
        host_bridges=_optional(warnings, "host interfaces", lambda: _host_bridges(conn), default=()),
    )


def _host_bridges(conn: libvirt.virConnect) -> tuple[str, ...]:
    names = []
    for iface in conn.listAllInterfaces():
        root = xml.parse(iface.XMLDesc(0))
        if root.get("type") == "bridge":
            names.append(root.get("name", ""))
    return tuple(sorted(names))


def read_devices(conn: libvirt.virConnect, warnings: list[str]) -> tuple[NodeDeviceInfo, ...]:
    wanted = libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV | libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET
    devices = _optional(warnings, "node devices", lambda: conn.listAllDevices(wanted), default=None)
    if devices is None:
        # Some drivers refuse combined capability flags: fall back to PCI devices alone.
        devices = _optional(
            warnings,
            "PCI node devices",
            lambda: conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV),
            default=[],
        )
    return tuple(xml.parse_node_device(dev.XMLDesc(0)) for dev in devices)
