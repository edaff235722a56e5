"""Reading a whole host in bulk: facts, networks, guests and node devices."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import threading

import libvirt

from . import xml
from .client import libvirt_errors
from .errors import HypervisorError
from .types import (
    DhcpLease,
    GuestInfo,
    HostFacts,
    HostInterfaceInfo,
    HostInventory,
    NetworkInfo,
    NodeDeviceInfo,
)

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
    agent = GuestAgentReader(conn, warnings)
    with libvirt_errors():
        networks = _read_each(conn.listAllNetworks(), read_network, "network", warnings)
        guests = _read_each(conn.listAllDomains(), lambda dom: agent.completed(dom, read_guest(dom)), "guest", warnings)
    devices = read_devices(conn, warnings)
    return HostInventory(
        facts=read_facts(conn, warnings, devices),
        networks=networks,
        guests=guests,
        devices=devices,
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


# ---------------------------------------------------------------- the guest agent

# Drivers asked for agent addresses. The test driver never is: its interfaceAddresses() crashes
# the whole process (SIGSEGV) for a NIC on a network without IPv4, and elsewhere it answers
# made-up addresses; the driver type is what tells it apart, whatever the URI looks like.
AGENT_DRIVERS = frozenset({"QEMU"})
# An agent that does not answer within this time counts as "no answer": libvirt itself waits
# 5 s for the agent's sync and, by default, forever for the command after it.
AGENT_TIMEOUT_S = 2.0

# Guests (by UUID) whose agent call of an earlier sync has not returned yet: a hung agent is
# asked again only once that call is over, so each holds at most one waiting thread.
_agent_calls_waiting: set[str] = set()
_agent_calls_lock = threading.Lock()
# What a guest's agent may add to the mirror: the guest writes the answer, and a hostile one
# could report thousands of addresses.
AGENT_ADDRESSES_PER_NIC = 32
AGENT_ADDRESSES_PER_GUEST = 256
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


class GuestAgentReader:
    """Adds the addresses a running guest's agent reports to its interfaces. Optional: any
    failure is a warning of the sync, never a failed sync."""

    def __init__(self, conn: libvirt.virConnect, warnings: list[str], timeout: float = AGENT_TIMEOUT_S):
        self.warnings = warnings
        self.timeout = timeout
        self.enabled = _driver_type(conn) in AGENT_DRIVERS

    def completed(self, dom: libvirt.virDomain, guest: GuestInfo) -> GuestInfo:
        if not self.wanted(guest):
            return guest
        notes: list[str] = []
        try:
            by_mac = agent_addresses(dom, guest.uuid, self.timeout, notes)
        except AgentSilent as why:
            self.warnings.append(f"guest {guest.name}: no answer from its guest agent ({why})")
            return guest
        self.warnings.extend(f"guest {guest.name}: {note}" for note in notes)
        interfaces = tuple(
            dataclasses.replace(iface, agent_addresses=by_mac.get(iface.mac, ())) for iface in guest.interfaces
        )
        return dataclasses.replace(guest, interfaces=interfaces)

    def wanted(self, guest: GuestInfo) -> bool:
        # "disconnected": no agent runs in the guest (not installed, or still booting). libvirt
        # would refuse at once; not asking keeps the sync quiet for the many guests without one.
        return self.enabled and guest.state == "running" and guest.agent_channel in ("connected", "")


def _driver_type(conn: libvirt.virConnect) -> str:
    try:
        return conn.getType()
    except libvirt.libvirtError:
        return ""


class AgentSilent(Exception):
    """The guest agent did not answer: refused, failed, or too slow."""


def agent_addresses(
    dom: libvirt.virDomain, uuid: str, timeout: float, notes: list[str] | None = None
) -> dict[str, tuple[str, ...]]:
    """MAC → "address/prefix" the guest agent reports, waited for at most `timeout` seconds.

    The call runs in a thread of its own: libvirt offers no per-call timeout, and changing the
    guest's agent timeout (agentSetResponseTimeout) would change it for every other client.
    A call still waiting at the deadline is left to finish on its own."""
    with _agent_calls_lock:
        if uuid in _agent_calls_waiting:
            raise AgentSilent("its answer to an earlier sync is still awaited")
        _agent_calls_waiting.add(uuid)
    answer: dict = {}
    done = threading.Event()

    def call() -> None:
        try:
            answer["value"] = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
        except libvirt.libvirtError as error:
            answer["error"] = error.get_error_message()
        finally:
            with _agent_calls_lock:
                _agent_calls_waiting.discard(uuid)
            done.set()

    threading.Thread(target=call, name="libvirt-guest-agent", daemon=True).start()
    if not done.wait(timeout):
        raise AgentSilent(f"no reply within {timeout:g} s")
    if "value" not in answer:
        raise AgentSilent(answer.get("error") or "the call failed")
    return addresses_by_mac(answer["value"], notes)


def addresses_by_mac(reported: dict, notes: list[str] | None = None) -> dict[str, tuple[str, ...]]:
    """libvirt's answer ({name: {"hwaddr": mac, "addrs": [{"addr", "prefix", "type"}]}}) by MAC.

    The guest writes this answer, so nothing in it is trusted: an entry that is not a MAC, an
    address or a prefix in range (an int, not a bool) is left out, and at most
    AGENT_ADDRESSES_PER_NIC per NIC and AGENT_ADDRESSES_PER_GUEST in all are kept (what was left
    out is said in `notes`). IPv6 link-local addresses are left out too: every NIC has one, and
    none can be reserved or reached from another network."""
    found: dict[str, list[str]] = {}
    kept = dropped = 0
    nics = reported.values() if isinstance(reported, dict) else ()
    for nic in nics:
        mac = _mac_text(nic.get("hwaddr") if isinstance(nic, dict) else None)
        entries = nic.get("addrs") if mac else None
        for entry in entries if isinstance(entries, list | tuple) else ():
            address = _address_text(entry)
            if not address:
                continue
            if kept >= AGENT_ADDRESSES_PER_GUEST or len(found.get(mac, ())) >= AGENT_ADDRESSES_PER_NIC:
                dropped += 1
                continue
            found.setdefault(mac, []).append(address)
            kept += 1
    if dropped and notes is not None:
        notes.append(
            f"its agent reported {kept + dropped} addresses; {dropped} were left out (at most "
            f"{AGENT_ADDRESSES_PER_NIC} per NIC and {AGENT_ADDRESSES_PER_GUEST} per guest are kept)"
        )
    return {mac: tuple(addresses) for mac, addresses in found.items()}


def _mac_text(value) -> str:
    text = value.lower() if isinstance(value, str) else ""
    return text if _MAC_RE.fullmatch(text) else ""


def _address_text(entry) -> str:
    """The entry as address/prefix (the address alone when it has no prefix), or "" when it is
    not a usable address with a valid prefix."""
    if not isinstance(entry, dict) or not isinstance(entry.get("addr"), str):
        return ""
    try:
        address = ipaddress.ip_address(entry["addr"])
    except ValueError:
        return ""
    if address.is_link_local or address.is_loopback:
        return ""
    prefix = entry.get("prefix")
    if prefix is None:
        return str(address)
    if isinstance(prefix, bool) or not isinstance(prefix, int) or not 0 <= prefix <= address.max_prefixlen:
        return ""  # True would pass as an int (1): a bool is no prefix
    return f"{address}/{prefix}"


def _optional(warnings: list[str], what: str, call, default=None):
    """Run an optional libvirt call; a failure becomes a warning, not a failed sync."""
    try:
        return call()
    except (libvirt.libvirtError, HypervisorError) as error:
        message = error.get_error_message() if isinstance(error, libvirt.libvirtError) else str(error)
        warnings.append(f"{what}: {message}")
        return default


def read_facts(conn: libvirt.virConnect, warnings: list[str], devices: tuple[NodeDeviceInfo, ...] = ()) -> HostFacts:
    info = _optional(warnings, "host info", conn.getInfo, default=None)
    hv_version = _optional(warnings, "hypervisor version", conn.getVersion, default=0)
    interfaces = _optional(warnings, "host interfaces", lambda: _host_interfaces(conn), default=())
    iommu, vfio, note = passthrough_facts(conn, warnings, devices)
    return HostFacts(
        hostname=_optional(warnings, "hostname", conn.getHostname, default="") or "",
        hypervisor_type=_optional(warnings, "hypervisor type", conn.getType, default="") or "",
        hypervisor_version=version_string(hv_version) if hv_version else "",
        libvirt_version=version_string(_optional(warnings, "libvirt version", conn.getLibVersion, default=0) or 0),
        cpu_model=info[0] if info else "",
        memory_mib=info[1] if info else None,
        cpus=info[2] if info else None,
        host_bridges=tuple(sorted(iface.name for iface in interfaces if iface.type == "bridge")),
        iommu_support=iommu,
        vfio_support=vfio,
        passthrough_note=note,
        nic_uses=host_nic_uses(interfaces, devices),
    )


def _host_interfaces(conn: libvirt.virConnect) -> tuple[HostInterfaceInfo, ...]:
    return tuple(xml.parse_host_interface(iface.XMLDesc(0)) for iface in conn.listAllInterfaces())


# ---------------------------------------------------------------- PCI passthrough facts


def passthrough_facts(
    conn: libvirt.virConnect, warnings: list[str], devices: tuple[NodeDeviceInfo, ...]
) -> tuple[str, str, str]:
    """(IOMMU, VFIO, note): each "yes", "no" or "unknown", and the note saying why. Optional:
    what libvirt cannot tell is "unknown" with a sync warning, never a failed sync."""
    iommu, iommu_why = _iommu_support(conn, warnings, devices)
    vfio, vfio_why = _vfio_support(conn, warnings)
    return iommu, vfio, f"IOMMU {iommu}: {iommu_why}. VFIO {vfio}: {vfio_why}."


def _iommu_support(conn, warnings, devices) -> tuple[str, str]:
    pci = [device for device in devices if device.capability == "pci"]
    # libvirt fills both the node devices' <iommuGroup> and the host's <iommu support> from the
    # kernel's IOMMU groups; the groups come first because the test driver's capabilities are
    # canned (always "no") while its node devices come from the fleet file.
    if any(device.iommu_group is not None for device in pci):
        return "yes", "the node devices list IOMMU groups"
    reported = _optional(warnings, "host capabilities", lambda: xml.parse_host_iommu(conn.getCapabilities()))
    if reported is True:
        return "yes", "libvirt reports the host's IOMMU on"
    if reported is False or pci:
        return "no", (
            "libvirt reports no IOMMU on this host and no PCI device has an IOMMU group "
            "(turn on VT-d/AMD-Vi in the firmware and intel_iommu=on or amd_iommu=on on the kernel command line)"
        )
    return "unknown", "neither the node devices nor the host capabilities tell"


def _vfio_support(conn, warnings) -> tuple[str, str]:
    found = _optional(
        warnings, "domain capabilities (PCI passthrough)", lambda: xml.parse_hostdev_capabilities(_domcaps(conn))
    )
    if found is None:
        return "unknown", "this driver cannot report its domain capabilities"
    if found.supported is None:
        return "unknown", "the domain capabilities say nothing about host devices"
    if not found.supported or "pci" not in found.subsystem_types:
        return "no", "libvirt does not offer PCI host devices for guests here"
    if "vfio" not in found.pci_backends:
        return "no", "libvirt offers no VFIO backend (load the vfio-pci module; it also needs the IOMMU)"
    return "yes", "libvirt offers the VFIO backend for PCI host devices"


def _domcaps(conn: libvirt.virConnect) -> str:
    """The host's default domain capabilities; on a host without KVM (where asking for the
    default virt type can fail) those of plain QEMU, which list the same host-device backends."""
    try:
        return conn.getDomainCapabilities()
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            raise
        return conn.getDomainCapabilities(None, None, None, "qemu")


def host_nic_uses(
    interfaces: tuple[HostInterfaceInfo, ...], devices: tuple[NodeDeviceInfo, ...]
) -> tuple[tuple[str, str], ...]:
    """Host NICs the host itself uses, with how: an address, a port of a bridge (or a bond
    member, a VLAN's parent). An interface backend that reports no address at all (libvirt's
    udev backend) cannot tell a NIC in use from an idle one: then every NIC whose link is up
    counts as used, and says so."""
    uses: dict[str, str] = {}
    for iface in interfaces:
        if iface.addresses:
            uses.setdefault(iface.name, f"with address {', '.join(iface.addresses)}")
        for member in iface.members:
            uses.setdefault(member, f"member of {iface.type or 'interface'} {iface.name}")
    if not any(iface.addresses for iface in interfaces):
        for device in devices:
            if device.capability == "net" and _link_state(device) == "up":
                uses.setdefault(
                    device.net_interface,
                    "with its link up (this host's libvirt reports no interface addresses, "
                    "so an up NIC counts as used)",
                )
    return tuple(sorted(uses.items()))


def _link_state(device: NodeDeviceInfo) -> str:
    try:
        return xml.node_device_link_state(device.xml) if device.xml else ""
    except HypervisorError:
        return ""


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
