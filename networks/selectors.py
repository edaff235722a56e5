"""Read queries shared by pages and the API, each in a bounded number of queries."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from django.db.models import Count, Prefetch, Q, QuerySet

from networks.choices import GuestState
from networks.models import (
    AuditEvent,
    DhcpLease,
    DhcpReservation,
    Guest,
    GuestInterface,
    Host,
    Network,
    NetworkIp,
    Operation,
)
from networks.services.netupdate.common import HOSTNAME_MAX, HOSTNAME_RE
from networks.services.xmlcheck import network_xml_warnings

RUNNING_STATES = (GuestState.RUNNING, GuestState.BLOCKED, GuestState.PAUSED)


def host_list() -> QuerySet[Host]:
    return Host.objects.annotate(
        network_count=Count("networks", distinct=True), guest_count=Count("guests", distinct=True)
    ).order_by("name")


def network_detail_queryset() -> QuerySet[Network]:
    """The network's page (its reservations and attached guests are paginated tables of their own)."""
    ips = NetworkIp.objects.prefetch_related("dhcp_ranges")
    return Network.objects.select_related("host").prefetch_related(
        Prefetch("ips", queryset=ips),
        "dns_records",
        "portgroups",
        "forward_interfaces",
    )


def network_config_warnings(network: Network) -> tuple[str, ...]:
    """What the network's synced XML carries that kvmweb refuses in an edit (dnsmasq options)."""
    return network_xml_warnings(network.inactive_xml, network.live_xml)


def network_reservations(network: Network) -> QuerySet[DhcpReservation]:
    return network.dhcp_reservations.select_related("ip").order_by("ip__position", "address")


def running_guests_on_network(network: Network) -> QuerySet[Guest]:
    return (
        Guest.objects.filter(interfaces__network=network, state__in=RUNNING_STATES)
        .distinct()
        .order_by("name")
        .prefetch_related(Prefetch("interfaces", queryset=GuestInterface.objects.filter(network=network)))
    )


def guest_detail_queryset() -> QuerySet[Guest]:
    return Guest.objects.select_related("host").prefetch_related(
        Prefetch("interfaces", queryset=GuestInterface.objects.select_related("network"))
    )


@dataclass(frozen=True)
class InterfaceRow:
    """One NIC of a guest's page with what its network knows of its MAC."""

    iface: GuestInterface
    leases: list  # DhcpLease rows of its network for its MAC
    reservation: DhcpReservation | None  # its network's reservation for its MAC
    reserve_ip: str  # a leased IPv4 address to offer reserving, "" when there is nothing to offer
    reserve_name: str  # the host name to propose with it ("" when the guest's name is not one)

    @property
    def agent_only_addresses(self) -> list[str]:
        """Addresses the guest agent reported that no lease of its network already shows."""
        leased = {lease.address for lease in self.leases}
        return [text for text in self.iface.agent_addresses if text.split("/")[0] not in leased]

    @property
    def bandwidth_lines(self) -> list[str]:
        """Each direction's limits in words, with libvirt's units (KiB/s; a burst in KiB)."""
        lines = []
        for direction, label in (("inbound", "in"), ("outbound", "out")):
            limits = (self.iface.bandwidth or {}).get(direction) or {}
            parts = [f"{name} {limits[name]} {unit}" for name, unit in _BANDWIDTH_UNITS if limits.get(name) is not None]
            if parts:
                lines.append(f"{label}: " + ", ".join(parts))
        return lines


_BANDWIDTH_UNITS = (("average", "KiB/s"), ("peak", "KiB/s"), ("burst", "KiB"), ("floor", "KiB/s"))


def guest_interface_rows(guest: Guest) -> list[InterfaceRow]:
    """The guest's interfaces with their leases and reservations, in two queries whatever the
    number of NICs (the interfaces themselves come prefetched by guest_detail_queryset)."""
    interfaces = list(guest.interfaces.all())
    keyed = [(iface.network_id, iface.mac) for iface in interfaces if iface.network_id and iface.mac]
    network_ids = {network_id for network_id, _mac in keyed}
    macs = {mac for _network_id, mac in keyed}
    leases: dict[tuple[int, str], list] = {}
    for lease in DhcpLease.objects.filter(network_id__in=network_ids, mac__in=macs).order_by("address"):
        leases.setdefault((lease.network_id, lease.mac), []).append(lease)
    reservations = {
        (res.network_id, res.mac): res
        for res in DhcpReservation.objects.filter(network_id__in=network_ids, mac__in=macs)
    }
    return [_interface_row(guest, iface, leases, reservations) for iface in interfaces]


def _interface_row(guest: Guest, iface: GuestInterface, leases: dict, reservations: dict) -> InterfaceRow:
    key = (iface.network_id, iface.mac)
    own_leases = leases.get(key, [])
    reservation = reservations.get(key)
    # Reservations by MAC exist for IPv4 only (IPv6 ones are keyed by DUID), so only an IPv4
    # lease can be turned into one.
    leased_v4 = [lease.address for lease in own_leases if ipaddress.ip_address(lease.address).version == 4]
    reserve_ip = leased_v4[0] if leased_v4 and reservation is None else ""
    proposable = len(guest.name) <= HOSTNAME_MAX and HOSTNAME_RE.fullmatch(guest.name)
    reserve_name = guest.name if reserve_ip and proposable else ""
    return InterfaceRow(iface, own_leases, reservation, reserve_ip, reserve_name)


def operation_list(*, host_id=None, status=None, network_id=None) -> QuerySet[Operation]:
    operations = Operation.objects.select_related("host", "network")
    if host_id:
        operations = operations.filter(host_id=host_id)
    if status:
        operations = operations.filter(status=status)
    if network_id:
        operations = operations.filter(network_id=network_id)
    return operations


def audit_list(
    *, action=None, actor=None, host_id=None, host_name=None, source=None, search=None
) -> QuerySet[AuditEvent]:
    """Events, newest first. `host_name` also finds the events of removed hosts."""
    events = AuditEvent.objects.all()
    if action:
        events = events.filter(action__startswith=action)
    if actor:
        events = events.filter(actor_name=actor)
    if host_id:
        events = events.filter(host_id=host_id)
    if host_name:
        events = events.filter(host_name=host_name)
    if source:
        events = events.filter(source=source)
    if search:
        events = events.filter(Q(object_name__icontains=search) | Q(message__icontains=search))
    return events


@dataclass(frozen=True)
class LeaseRow:
    lease: DhcpLease
    reserved_address: str  # the address reserved for this MAC, if any
    stale: bool  # holds another address than its reservation until it renews


def lease_rows(network: Network) -> list[LeaseRow]:
    """Current leases, each with the reservation of its MAC, flagging guests still on an old address."""
    leases = list(network.dhcp_leases.all())
    macs = {lease.mac for lease in leases if lease.mac}
    # Only the reservations of leased MACs: a network may hold thousands of reservations
    reserved = dict(network.dhcp_reservations.filter(mac__in=macs).values_list("mac", "address")) if macs else {}
    rows = []
    for lease in leases:
        wanted = reserved.get(lease.mac, "")
        rows.append(LeaseRow(lease, wanted, bool(wanted) and wanted != lease.address))
    return rows


def section_entry_values(network: Network, section: str, command: str, key: str) -> dict:
    """Prefill a modify form from the mirror's entry."""
    if command != "modify" or not key:
        return {}
    if section == "ip-dhcp-host":
        key = key.lower()
        for res in network.dhcp_reservations.all():
            if key in {res.mac, res.host_id.lower(), res.name.lower()} - {""}:
                return {"mac": res.mac, "ip": res.address, "name": res.name, "host_id": res.host_id}
    if section == "portgroup":
        pg = network.portgroups.filter(name=key).first()
        if pg is not None:
            return {
                "name": pg.name,
                "is_default": "yes" if pg.is_default else "no",
                "vlan_tags": " ".join(str(tag) for tag in pg.vlan_tags),
                "inbound_average": pg.inbound_average or "",
                "outbound_average": pg.outbound_average or "",
            }
    return {}
