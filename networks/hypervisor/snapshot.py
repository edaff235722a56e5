"""Reading a whole host as libvirt gives it, parsing only what the caller asks for.

`inventory.read_host` parses every network and guest it reads. Parsing costs several times
the reads themselves (measured on the test driver: ~0.07 ms a domain against ~0.012 ms for its
XMLDesc), and a sync that finds a host unchanged needs none of it: it compares digests of the
XML with what it stored and parses only what differs. `read_host` here makes the same calls
as inventory.read_host and returns the same facts and node devices (a device XML met before
is not parsed again), and each network and guest as its XML and state, parsed on first use
(`.info`).

Each read also has a digest (`digest`, and a network's `leases_digest`): a short hash of
everything the mirror derives from it, computed from what libvirt returned. The sync stores it
with the row, and an object whose digest matches the stored one is neither parsed nor written.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import libvirt

from . import inventory, xml
from .client import libvirt_errors
from .types import DhcpLease, GuestInfo, HostFacts, HostInventory, NetworkInfo, NodeDeviceInfo

# Part of every digest: changing it (when the mirror starts to derive something differently from
# the same XML) makes the next sync write every row again.
DIGEST_VERSION = "1"
DIGEST_LENGTH = 32  # the digest columns' max_length


def digest(*parts: str) -> str:
    """32 characters standing for `parts`, in order: the version, then hex digits of their
    SHA-256 (of the hashes hashlib offers, the quickest on this kind of machine) up to 32 in
    all, whatever the version's length (the column holds 32)."""
    text = parts[0] if len(parts) == 1 else "\0".join(parts)
    return (DIGEST_VERSION + hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest())[:DIGEST_LENGTH]


@dataclass(eq=False)
class NetworkRead:
    """A network as read: its XML and state, and its leases (`leases_known` False where the
    driver cannot list them)."""

    name: str
    live_xml: str
    inactive_xml: str
    active: bool
    autostart: bool
    persistent: bool
    leases: tuple[DhcpLease, ...] = ()
    leases_known: bool = False
    _info: NetworkInfo | None = field(default=None, repr=False)
    # Computed once (dataclasses.replace computes them again for the copy).
    _digest: str = field(default="", init=False, repr=False)
    _leases_digest: str = field(default="", init=False, repr=False)

    @property
    def info(self) -> NetworkInfo:
        if self._info is None:
            self._info = xml.parse_network(
                self.live_xml, self.inactive_xml, active=self.active, autostart=self.autostart,
                persistent=self.persistent, leases=self.leases, leases_known=self.leases_known,
            )  # fmt: skip
        return self._info

    @property
    def digest(self) -> str:
        """Of what the network's row and its children are derived from (not the leases)."""
        if not self._digest:
            flags = f"{self.active:d}{self.autostart:d}{self.persistent:d}{self.leases_known:d}"
            self._digest = digest(flags, self.live_xml, self.inactive_xml)
        return self._digest

    @property
    def leases_digest(self) -> str:
        """Of the leases, in any order (the driver may list them in another order each time)."""
        if not self._leases_digest:
            self._leases_digest = digest(*sorted(map(repr, self.leases)))
        return self._leases_digest

    @classmethod
    def of(cls, info: NetworkInfo) -> NetworkRead:
        return cls(
            info.name, info.live_xml, info.inactive_xml, info.active, info.autostart, info.persistent,
            info.leases, info.leases_known, _info=info,
        )  # fmt: skip


@dataclass(eq=False, slots=True)
class GuestRead:
    """A guest as read: its XML and state. A guest whose agent was asked is parsed already,
    with the agent's addresses on its interfaces."""

    name: str
    xml: str
    state: str
    _info: GuestInfo | None = field(default=None, repr=False)
    _digest: str = field(default="", init=False, repr=False)  # computed once, after the agent's answer

    @property
    def info(self) -> GuestInfo:
        if self._info is None:
            self._info = xml.parse_domain(self.xml, self.state)
        return self._info

    @property
    def agent_addresses(self) -> dict[int, tuple[str, ...]]:
        """Interface position → the addresses its guest agent reported (only those with any)."""
        if self._info is None:
            return {}
        return {n: iface.agent_addresses for n, iface in enumerate(self._info.interfaces) if iface.agent_addresses}

    @property
    def digest(self) -> str:
        """Of the XML and what the guest agent added (the state is compared on its own: a
        guest whose state alone changed costs a one-column write)."""
        if not self._digest:
            agent = self.agent_addresses  # none when not parsed: no agent was asked
            self._digest = digest(self.xml, repr(sorted(agent.items()))) if agent else digest(self.xml)
        return self._digest

    @classmethod
    def of(cls, info: GuestInfo) -> GuestRead:
        return cls(info.name, info.xml, info.state, _info=info)


@dataclass(frozen=True)
class HostRead:
    facts: HostFacts
    networks: tuple[NetworkRead, ...] = ()
    guests: tuple[GuestRead, ...] = ()
    devices: tuple[NodeDeviceInfo, ...] = ()
    warnings: tuple[str, ...] = ()

    @classmethod
    def of(cls, found: HostInventory) -> HostRead:
        """The same host, already parsed (what inventory.read_host returned)."""
        return cls(
            facts=found.facts,
            networks=tuple(NetworkRead.of(info) for info in found.networks),
            guests=tuple(GuestRead.of(info) for info in found.guests),
            devices=found.devices,
            warnings=found.warnings,
        )


def read_host(conn: libvirt.virConnect) -> HostRead:
    """Everything inventory.read_host reads, networks and guests left unparsed."""
    warnings: list[str] = []
    agent = inventory.GuestAgentReader(conn, warnings)
    with libvirt_errors():
        networks = inventory._read_each(conn.listAllNetworks(), read_network, "network", warnings)
        guests = inventory._read_each(conn.listAllDomains(), lambda dom: read_guest(dom, agent), "guest", warnings)
    devices = read_devices(conn, warnings)
    return HostRead(
        facts=inventory.read_facts(conn, warnings, devices),
        networks=networks,
        guests=guests,
        devices=devices,
        warnings=tuple(warnings),
    )


def read_devices(conn: libvirt.virConnect, warnings: list[str]) -> tuple[NodeDeviceInfo, ...]:
    """The calls of inventory.read_devices; a device XML met before is not parsed again."""
    wanted = libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV | libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET
    devices = inventory._optional(warnings, "node devices", lambda: conn.listAllDevices(wanted), default=None)
    if devices is None:
        # Some drivers refuse combined capability flags: PCI devices alone, as inventory does.
        devices = inventory._optional(
            warnings, "PCI node devices",
            lambda: conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV), default=[],
        )  # fmt: skip
    return tuple(parsed_device(dev.XMLDesc(0)) for dev in devices)


# A host's node devices seldom change, and parsing them costs more than reading them: the last
# few thousand parsed are kept (shared by the hosts a worker syncs; NodeDeviceInfo is frozen, so
# one value serves every read of the same XML). Only XML of a usual size is kept: what a hostile
# host returns must not fill the worker's memory.
DEVICE_CACHE_SIZE, DEVICE_CACHE_MAX_XML = 4096, 16_384


def parsed_device(device_xml: str) -> NodeDeviceInfo:
    if len(device_xml) > DEVICE_CACHE_MAX_XML:
        return xml.parse_node_device(device_xml)
    return _cached_device(device_xml)


@functools.lru_cache(maxsize=DEVICE_CACHE_SIZE)
def _cached_device(device_xml: str) -> NodeDeviceInfo:
    return xml.parse_node_device(device_xml)


def read_network(net: libvirt.virNetwork) -> NetworkRead:
    """The calls of inventory.read_network, without the parsing."""
    persistent = bool(net.isPersistent())
    active = bool(net.isActive())
    live = net.XMLDesc(0)
    inactive = inventory.inactive_xml(net, live) if persistent else live
    leases = inventory.read_leases(net) if active else ()
    return NetworkRead(
        name=net.name(),
        live_xml=live,
        inactive_xml=inactive or live,
        active=active,
        autostart=bool(net.autostart()) if persistent else False,
        persistent=persistent,
        leases=leases or (),
        leases_known=leases is not None,
    )


def read_guest(dom: libvirt.virDomain, agent: inventory.GuestAgentReader) -> GuestRead:
    state = inventory._DOMAIN_STATES.get(dom.state()[0], "nostate")
    found = GuestRead(name=dom.name(), xml=dom.XMLDesc(0), state=state)
    # The agent is asked only about a running guest with an agent channel (GuestAgentReader.wanted):
    # on a driver that asks agents, such a guest is parsed now, with its answer.
    if agent.enabled and state == "running" and xml.GUEST_AGENT_CHANNEL in found.xml:
        found._info = agent.completed(dom, found.info)
    return found


def device_digest(device: NodeDeviceInfo) -> str:
    """Of every value the mirror stores about the device (its XML among them)."""
    return digest(repr(device))
