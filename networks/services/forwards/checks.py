"""What a port forward must be: every check a request makes, each refusal a ValidationError
naming its field, and the warnings that do not refuse (no reservation, the host's own ports);
and which address a forward goes to (`forward_address`, shared with the host worker)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.core.exceptions import ValidationError
from django.urls import reverse

from networks.choices import ForwardMode, ForwardProtocol
from networks.forwarding.rules import MAX_SHIFTED_PORTS
from networks.models import DhcpLease, DhcpReservation, Guest, GuestInterface, Host, Network, PortForward

# Guests on these networks are reached through the host's own routing, so DNAT on the host
# reaches them; on isolated, bridged or macvtap networks the host is not in the path.
FORWARDABLE_MODES = (ForwardMode.NAT, ForwardMode.ROUTE)
PORT_MIN, PORT_MAX = 1, 65535
# A range forwarded to other guest ports than its own is one nftables rule with a map of one
# element per port (nft has no base port), so such a range is kept short (the engine refuses
# longer ones too); a range kept on its own ports is one rule whatever its length.
SHIFTED_RANGE_MAX = MAX_SHIFTED_PORTS
SOURCE_CIDRS_MAX = 64
COMMENT_MAX = 255
# Ports the hypervisor itself usually serves: forwarding them on every address hides the host's own.
HOST_SERVICE_PORTS = {22: "SSH", 16509: "libvirt TCP", 16514: "libvirt TLS"}


@dataclass
class ForwardSpec:
    """What a forward should do, as a request gives it (before any check)."""

    guest: Guest | None
    protocol: str = ForwardProtocol.TCP
    host_address: str = ""
    host_port_start: int | None = None
    host_port_end: int | None = None
    guest_port_start: int | None = None
    guest_port_end: int | None = None
    source_cidrs: list = field(default_factory=list)
    enabled: bool = True
    comment: str = ""


@dataclass(frozen=True)
class ForwardWarning:
    """Not a refusal: something the requester should know, with where to fix it."""

    message: str
    link: str = ""
    link_text: str = ""


@dataclass(frozen=True)
class GuestTarget:
    """Where a forward's connections go: the guest's NIC on a NAT or routed network."""

    interface: GuestInterface
    network: Network
    address: str  # its reserved IPv4, else its current lease, else ""
    reserved: bool


def _refuse(field_name: str, message: str):
    raise ValidationError({field_name: [message]})


def _port(value, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _refuse(field_name, "Give a port number from 1 to 65535.")
    if not PORT_MIN <= value <= PORT_MAX:
        _refuse(field_name, f"Port {value} is outside 1-65535.")
    return value


def _port_range(start, end, prefix: str) -> tuple[int, int]:
    """(start, end) of a port or range; `end` None means a single port."""
    first = _port(start, f"{prefix}_port")
    last = first if end is None else _port(end, f"{prefix}_port_end")
    if last < first:
        _refuse(f"{prefix}_port_end", f"The range ends ({last}) before it starts ({first}).")
    return first, last


def check_ports(spec: ForwardSpec) -> tuple[int, int, int, int]:
    host_start, host_end = _port_range(spec.host_port_start, spec.host_port_end, "host")
    guest_start, guest_end = _port_range(spec.guest_port_start, spec.guest_port_end, "guest")
    if host_end - host_start != guest_end - guest_start:
        _refuse(
            "guest_port",
            f"The host range has {host_end - host_start + 1} port(s) and the guest range "
            f"{guest_end - guest_start + 1}: give ranges of the same length.",
        )
    length = host_end - host_start + 1
    if host_start != guest_start and length > SHIFTED_RANGE_MAX:
        _refuse(
            "guest_port",
            f"A range forwarded to other guest ports is at most {SHIFTED_RANGE_MAX} ports long; this one has "
            f"{length}: forward it to the same ports ({host_start}-{host_end}), or split it.",
        )
    return host_start, host_end, guest_start, guest_end


def check_protocol(protocol) -> str:
    if protocol not in ForwardProtocol.values:
        _refuse("protocol", f"Choose one of {', '.join(ForwardProtocol.values)}.")
    return protocol


def check_host_address(host: Host, value) -> str:
    """'' (every address of the host) or a unicast IPv4 address. Whether the host really holds it
    is checked by its worker when it applies the forward (kvmweb does not mirror host NICs)."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        _refuse("host_address", "Give an IPv4 address of the host, or nothing for all of its addresses.")
    try:
        address = ipaddress.IPv4Address(value.strip())
    except ValueError:
        _refuse("host_address", f"{value[:50]!r} is not an IPv4 address.")
    if address.is_multicast or address.is_unspecified or address.is_loopback or address == _BROADCAST:
        _refuse("host_address", f"{address} cannot be an address of {host.name}: give one of its own addresses.")
    for network in host.networks.filter(forward_mode__in=FORWARDABLE_MODES).prefetch_related("ips"):
        for ip in network.ips.all():
            subnet = ipaddress.ip_interface(f"{ip.address}/{ip.prefix}").network
            if address in subnet and str(address) != ip.address:
                _refuse("host_address", f"{address} lies in {network.name}'s guest subnet {subnet}, not on the host.")
    return str(address)


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def check_source_cidrs(value) -> list[str]:
    """A list of IPv4 networks written exactly (host bits set is a mistake, not silently masked)."""
    if value in (None, ""):
        return []
    if not isinstance(value, list | tuple):
        _refuse("source_cidrs", "Give a list of IPv4 networks such as 203.0.113.0/24.")
    if len(value) > SOURCE_CIDRS_MAX:
        _refuse("source_cidrs", f"At most {SOURCE_CIDRS_MAX} source networks.")
    cidrs: list[str] = []
    for item in value:
        if not isinstance(item, str):
            _refuse("source_cidrs", "Each source is an IPv4 network written as text, such as 203.0.113.0/24.")
        try:
            network = ipaddress.IPv4Network(item.strip(), strict=True)
        except ValueError as error:
            _refuse("source_cidrs", f"{item[:50]!r} is not an IPv4 network ({error}).")
        if str(network) not in cidrs:
            cidrs.append(str(network))
    return cidrs


def check_comment(value) -> str:
    if not isinstance(value, str) or len(value) > COMMENT_MAX or not value.isprintable():
        _refuse("comment", f"A comment is printable text of at most {COMMENT_MAX} characters.")
    return value.strip()


def check_host_worker(host: Host) -> None:
    if not host.queue:
        _refuse(
            "host",
            f"Port forwards need {host.name}'s host worker: they are applied on the hypervisor by the worker "
            f"that consumes the host's queue. Set the host's queue and run scripts/host-worker.sh {host.name} "
            'there (README, "Port forwards").',
        )


def check_overlap(host: Host, protocol: str, address: str, start: int, end: int, exclude_pk=None) -> None:
    """A host port is forwarded once per protocol on the host (per address where both name one)."""
    others = PortForward.objects.filter(
        host=host, protocol=protocol, host_port_start__lte=end, host_port_end__gte=start
    ).exclude(pk=exclude_pk)
    for other in others:
        if address and other.host_address and other.host_address != address:
            continue  # two different host addresses do not meet
        where = f" on {other.host_address}" if other.host_address else ""
        disabled = " (disabled)" if not other.enabled else ""
        _refuse(
            "host_port",
            f"{protocol}/{other.host_ports}{where} is already forwarded on {host.name} by forward "
            f"#{other.pk} ({other}){disabled}.",
        )


def guest_target(host: Host, guest: Guest | None) -> GuestTarget:
    """The guest's NIC on a NAT or routed network of `host`, and the IPv4 address it has there."""
    if guest is None:
        _refuse("guest", "Choose the guest to forward to.")
    if guest.host_id != host.pk:
        _refuse("guest", f"{guest.name} runs on {guest.host.name}, not on {host.name}.")
    interfaces = list(guest.interfaces.select_related("network").order_by("position"))
    for interface in interfaces:
        network = interface.network
        if network and network.forward_mode in FORWARDABLE_MODES and _ipv4(network) and interface.mac:
            return _target(interface, network)
    found = ", ".join(_describe(i) for i in interfaces) or "no interfaces"
    _refuse(
        "guest",
        f"{guest.name} has no interface on a NAT or routed network with IPv4 on {host.name} ({found}): "
        "a forward can only reach a guest behind the host's own routing.",
    )


def _ipv4(network: Network):
    return next((ip for ip in network.ips.all() if ip.family == "ipv4"), None)


def _describe(interface: GuestInterface) -> str:
    if interface.network is not None:
        return f"{interface.network.name}: {interface.network.mode_label}"
    return f"{interface.source or interface.type}: {interface.type}"


def _target(interface: GuestInterface, network: Network) -> GuestTarget:
    mac = interface.mac.lower()
    reservations = DhcpReservation.objects.filter(network=network, mac__iexact=mac, ip__family="ipv4")
    leases = DhcpLease.objects.filter(network=network, mac__iexact=mac)
    address, reserved = forward_address(
        mac,
        reservations.values_list("mac", "address"),
        leases.values_list("mac", "address", "expires_at"),
    )
    return GuestTarget(interface, network, address, reserved)


def forward_address(mac: str, reservations: Iterable[tuple], leases: Iterable[tuple]) -> tuple[str, bool]:
    """The IPv4 address a forward to the NIC `mac` goes to, and whether it is reserved: the
    network's reservation for the MAC, else the MAC's IPv4 lease that expires last (one without
    an expiry time counts as the oldest). `reservations`: (mac, ipv4) pairs; `leases`: (mac,
    address, expires) with expires a datetime, seconds since the epoch, or None.

    A request's warning (from the mirror) and the host worker's rules (from libvirt) both
    choose with this, so the warning names the address the host worker installs."""
    mac = mac.lower()
    for reserved_mac, address in reservations:
        if reserved_mac.lower() == mac and ":" not in address:
            return address, True
    mine = [(address, _expiry(expires)) for lease_mac, address, expires in leases
            if lease_mac.lower() == mac and ":" not in address]  # fmt: skip
    newest = max(mine, key=lambda lease: lease[1], default=None)
    return (newest[0] if newest else ""), False


def _expiry(expires) -> float:
    if isinstance(expires, datetime):
        return expires.timestamp()
    return float(expires) if expires else 0.0


def forward_warnings(host: Host, target: GuestTarget, host_address: str, start: int, end: int):
    warnings = []
    if not target.reserved:
        warnings.append(_reserve_warning(target))
    for port, service in HOST_SERVICE_PORTS.items():
        if start <= port <= end and not host_address:
            warnings.append(
                ForwardWarning(
                    f"Host port {port} is usually the hypervisor's own {service}: forwarding it on every "
                    f"address of {host.name} sends those connections to the guest instead."
                )
            )
    return tuple(warnings)


def _reserve_warning(target: GuestTarget) -> ForwardWarning:
    guest, network = target.interface.guest, target.network
    now = f"it has {target.address} now" if target.address else "it has no lease yet"
    query = {"mac": target.interface.mac, "name": guest.name, **({"ip": target.address} if target.address else {})}
    link = reverse("networks:network_edit", args=[network.pk, "ip-dhcp-host"]) + "?" + urlencode(query)
    every = settings.KVMWEB_FORWARD_CHECK_SECONDS
    return ForwardWarning(
        f"{guest.name} has no DHCP reservation on {network.name} ({now}): its address may change: reserve it. "
        f"Until then the forward follows its lease only at the host worker's next check (every {every} s): "
        "after a new lease, connections go to the old address until that check re-applies the forward.",
        link,
        f"Reserve {target.address or 'an address'} for {guest.name}",
    )


@dataclass(frozen=True)
class CheckedForward:
    values: dict  # PortForward field values
    target: GuestTarget
    warnings: tuple[ForwardWarning, ...]


def check_forward(host: Host, spec: ForwardSpec, exclude_pk=None) -> CheckedForward:
    """Every rule a forward must follow, each refusal a ValidationError naming its field."""
    check_host_worker(host)
    protocol = check_protocol(spec.protocol)
    host_start, host_end, guest_start, guest_end = check_ports(spec)
    address = check_host_address(host, spec.host_address)
    check_overlap(host, protocol, address, host_start, host_end, exclude_pk)
    target = guest_target(host, spec.guest)
    values = {
        "host": host,
        "protocol": protocol,
        "host_address": address or None,
        "host_port_start": host_start,
        "host_port_end": host_end,
        "guest": spec.guest,
        "guest_name": spec.guest.name,
        "guest_mac": target.interface.mac.lower(),
        "guest_port_start": guest_start,
        "guest_port_end": guest_end,
        "source_cidrs": check_source_cidrs(spec.source_cidrs),
        "enabled": bool(spec.enabled),
        "comment": check_comment(spec.comment),
    }
    return CheckedForward(values, target, forward_warnings(host, target, address, host_start, host_end))


def forward_current_warnings(forward: PortForward) -> tuple[ForwardWarning, ...]:
    """What a forward's page warns of now, from the mirror: no reservation (with the link to make
    one), a guest no longer on a NAT or routed network, a host without a host worker."""
    host = forward.host
    try:
        check_host_worker(host)
        target = guest_target(host, forward.guest)
    except ValidationError as error:
        return tuple(ForwardWarning(message) for message in error.messages)
    return forward_warnings(host, target, forward.host_address or "", forward.host_port_start, forward.host_port_end)


def spec_of(forward: PortForward, **changes) -> ForwardSpec:
    """The forward as it is, with `changes` (ForwardSpec field names) applied."""
    spec = ForwardSpec(
        guest=forward.guest,
        protocol=forward.protocol,
        host_address=forward.host_address or "",
        host_port_start=forward.host_port_start,
        host_port_end=forward.host_port_end,
        guest_port_start=forward.guest_port_start,
        guest_port_end=forward.guest_port_end,
        source_cidrs=list(forward.source_cidrs),
        enabled=forward.enabled,
        comment=forward.comment,
    )
    for side in ("host", "guest"):
        start, end = f"{side}_port_start", f"{side}_port_end"
        if start in changes and end not in changes and getattr(spec, start) == getattr(spec, end):
            setattr(spec, end, None)  # a single port stays a single port when it moves
    for name, value in changes.items():
        if not hasattr(spec, name):
            raise TypeError(f"a forward has no field {name!r}")
        setattr(spec, name, value)
    return spec
