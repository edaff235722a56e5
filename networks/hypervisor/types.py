"""Frozen values the hypervisor layer returns. Nothing here holds a libvirt object."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DhcpRange:
    start: str
    end: str


@dataclass(frozen=True)
class DhcpHost:
    ip: str
    mac: str = ""
    name: str = ""
    host_id: str = ""  # IPv6 DUID/IAID reservations use id= instead of mac=


@dataclass(frozen=True)
class IpConfig:
    address: str
    prefix: int
    family: str  # "ipv4" or "ipv6"
    dhcp_ranges: tuple[DhcpRange, ...] = ()
    dhcp_hosts: tuple[DhcpHost, ...] = ()


@dataclass(frozen=True)
class DnsRecord:
    kind: str  # "host", "txt" or "srv"
    name: str  # hostnames (space separated), TXT name, or SRV service
    value: str = ""  # host IP, TXT value, or SRV target
    protocol: str = ""
    domain: str = ""
    port: int | None = None
    priority: int | None = None
    weight: int | None = None


@dataclass(frozen=True)
class Portgroup:
    name: str
    is_default: bool = False
    vlan_tags: tuple[int, ...] = ()
    inbound_average: int | None = None
    outbound_average: int | None = None
    xml: str = ""


@dataclass(frozen=True)
class ForwardInterface:
    kind: str  # "interface", "pf" or "address"
    dev: str = ""
    pci_address: str = ""
    connections: int | None = None


@dataclass(frozen=True)
class DhcpLease:
    mac: str
    ip: str
    prefix: int | None = None
    hostname: str = ""
    client_id: str = ""
    expires: int | None = None  # seconds since the epoch


@dataclass(frozen=True)
class NetworkInfo:
    name: str
    uuid: str
    forward_mode: str = ""
    forward_dev: str = ""
    bridge: str = ""
    stp: bool | None = None
    mtu: int | None = None
    domain_name: str = ""
    virtualport_type: str = ""  # e.g. "openvswitch" on an OVS bridge network
    connections: int = 0
    ips: tuple[IpConfig, ...] = ()
    dns_records: tuple[DnsRecord, ...] = ()
    portgroups: tuple[Portgroup, ...] = ()
    forward_interfaces: tuple[ForwardInterface, ...] = ()
    active: bool = False
    autostart: bool = False
    persistent: bool = True
    live_xml: str = ""
    inactive_xml: str = ""
    leases: tuple[DhcpLease, ...] = ()
    leases_known: bool = False  # False where the driver cannot list leases (test driver)


@dataclass(frozen=True)
class BandwidthLimit:
    """One direction of an interface's `<bandwidth>`, in libvirt's units: average, peak and
    floor in KiB/s, burst in KiB. `floor` exists for inbound traffic only."""

    average: int | None = None
    peak: int | None = None
    burst: int | None = None
    floor: int | None = None


@dataclass(frozen=True)
class GuestInterface:
    type: str
    mac: str = ""
    source: str = ""  # network name, bridge name, host device, or PCI address
    model: str = ""
    target_dev: str = ""
    vlan_tags: tuple[int, ...] = ()
    portgroup: str = ""
    # The libvirt network it belongs to. Live XML shows an interface on a bridge-mode or
    # macvtap network as type='bridge' or 'direct', still naming its network here.
    network: str = ""
    source_mode: str = ""  # macvtap: bridge, vepa, private or passthrough
    link_state: str = ""  # "up", "down", or "" when the XML says nothing (libvirt's default: up)
    inbound: BandwidthLimit | None = None
    outbound: BandwidthLimit | None = None
    pci_address: str = ""  # where the guest sees the NIC, e.g. "0000:00:03.0"
    agent_addresses: tuple[str, ...] = ()  # "address/prefix" as the guest agent reported them


@dataclass(frozen=True)
class GuestInfo:
    name: str
    uuid: str
    state: str
    interfaces: tuple[GuestInterface, ...] = ()
    hostdev_addresses: tuple[str, ...] = ()
    xml: str = ""
    # The guest agent's channel: "connected", "disconnected", "" for a channel whose state the
    # XML does not give (inactive XML), None without a channel.
    agent_channel: str | None = None


@dataclass(frozen=True)
class NodeDeviceInfo:
    name: str
    parent: str = ""
    capability: str = ""
    pci_address: str = ""
    driver: str = ""
    vendor: str = ""
    product: str = ""
    iommu_group: int | None = None
    pf_address: str = ""
    vf_addresses: tuple[str, ...] = ()
    vf_max: int | None = None
    net_interface: str = ""
    net_mac: str = ""
    xml: str = ""


@dataclass(frozen=True)
class HostFacts:
    hostname: str = ""
    hypervisor_type: str = ""
    hypervisor_version: str = ""
    libvirt_version: str = ""
    cpu_model: str = ""
    cpus: int | None = None
    memory_mib: int | None = None
    host_bridges: tuple[str, ...] = ()
    # PCI passthrough: "yes", "no" or "unknown" each, and why (see inventory.passthrough_facts)
    iommu_support: str = "unknown"
    vfio_support: str = "unknown"
    passthrough_note: str = ""
    # Host NIC name → how the host itself uses it ("with address 192.0.2.1/24", "member of br0")
    nic_uses: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HostdevCapabilities:
    """The `<hostdev>` part of a host's domain capabilities; `supported` None when absent."""

    supported: bool | None
    modes: tuple[str, ...] = ()
    subsystem_types: tuple[str, ...] = ()
    pci_backends: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostInterfaceInfo:
    """A host interface as `virInterface` describes it."""

    name: str
    type: str = ""
    addresses: tuple[str, ...] = ()
    members: tuple[str, ...] = ()  # bridge ports, bond members, a VLAN interface's parent


@dataclass(frozen=True)
class HostInventory:
    facts: HostFacts
    networks: tuple[NetworkInfo, ...] = ()
    guests: tuple[GuestInfo, ...] = ()
    devices: tuple[NodeDeviceInfo, ...] = ()
    # Optional facts that could not be read: the sync records them and keeps the rest.
    warnings: tuple[str, ...] = field(default=())
