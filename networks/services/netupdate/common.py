"""Checks shared by the net-update sections. Each raises a ValidationError naming the field."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

import netaddr
from django.core.exceptions import ValidationError

from networks.hypervisor.types import IpConfig, NetworkInfo

HOSTNAME_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_RE = re.compile(rf"^{HOSTNAME_LABEL}(?:\.{HOSTNAME_LABEL})*$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}$")


@dataclass(frozen=True)
class UpdatePlan:
    """One virNetworkUpdate, checked and ready: what to send and what to tell the user."""

    section: str
    command: str
    fragment: str
    parent_index: int = -1
    summary: str = ""
    warnings: tuple[str, ...] = field(default=())


def invalid(field_name: str, message: str) -> ValidationError:
    return ValidationError({field_name: [message]})


def gather(*checks):
    """Run independent field checks and report every failing field at once."""
    results, errors = [], {}
    for check in checks:
        try:
            results.append(check())
        except ValidationError as error:
            errors.update(error.message_dict)
            results.append(None)
    if errors:
        raise ValidationError(errors)
    return results


def text(values: dict, name: str, *, required: bool = False) -> str:
    value = str(values.get(name) or "").strip()
    if required and not value:
        raise invalid(name, "This field is required.")
    return value


def number(values: dict, name: str, *, low: int, high: int, required: bool = False) -> int | None:
    raw = values.get(name)
    if raw in (None, ""):
        if required:
            raise invalid(name, "This field is required.")
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise invalid(name, "Enter a whole number.") from None
    if not low <= value <= high:
        raise invalid(name, f"Must be between {low} and {high}.")
    return value


def mac_address(values: dict, name: str = "mac") -> str:
    """A unicast MAC in libvirt's form (lowercase, colons), whatever separators were typed."""
    raw = text(values, name, required=True)
    try:
        mac = netaddr.EUI(raw, dialect=netaddr.mac_unix_expanded)
    except (netaddr.AddrFormatError, TypeError, ValueError):
        raise invalid(name, f"{raw!r} is not a MAC address.") from None
    if mac.words[0] & 1:
        raise invalid(name, f"{mac} is a multicast MAC address; a NIC needs a unicast one.")
    return str(mac).lower()


def ip_address(values: dict, name: str = "ip") -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = text(values, name, required=True)
    try:
        return ipaddress.ip_address(raw)
    except ValueError:
        raise invalid(name, f"{raw!r} is not an IP address.") from None


def hostname(values: dict, name: str, *, required: bool = False) -> str:
    value = text(values, name, required=required)
    if value and (len(value) > 253 or not HOSTNAME_RE.match(value)):
        raise invalid(name, f"{value!r} is not a valid host name (letters, digits, '-' and '.').")
    return value


def interface_name(values: dict, name: str = "dev") -> str:
    value = text(values, name, required=True)
    if not IFNAME_RE.match(value):
        raise invalid(name, f"{value!r} is not a network interface name.")
    return value


def subnet_of(ip: IpConfig) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_interface(f"{ip.address}/{ip.prefix}").network


def containing_ip(info: NetworkInfo, address, field_name: str = "ip") -> tuple[int, IpConfig]:
    """The `<ip>` whose subnet holds `address`, and its index among ALL `<ip>` elements.

    net-update's parentIndex counts IPv4 and IPv6 elements together in document order, so
    the index comes from the subnet, never from position within one family.
    """
    for index, ip in enumerate(info.ips):
        if ip.family == f"ipv{address.version}" and address in subnet_of(ip):
            return index, ip
    subnets = ", ".join(f"{ip.address}/{ip.prefix}" for ip in info.ips) or "none"
    raise invalid(field_name, f"{address} is outside every subnet of {info.name} ({subnets}).")


def usable_host_address(address, ip: IpConfig, field_name: str = "ip") -> None:
    """Not the subnet's network or broadcast address, nor the gateway."""
    subnet = subnet_of(ip)
    if address == subnet.network_address and subnet.prefixlen < subnet.max_prefixlen - 1:
        raise invalid(field_name, f"{address} is the network address of {subnet}.")
    if address.version == 4 and address == subnet.broadcast_address and subnet.prefixlen < 31:
        raise invalid(field_name, f"{address} is the broadcast address of {subnet}.")
    if address == ipaddress.ip_address(ip.address):
        raise invalid(field_name, f"{address} is the network's own (gateway) address.")


def in_range(address, start: str, end: str) -> bool:
    low, high = ipaddress.ip_address(start), ipaddress.ip_address(end)
    return low.version == address.version and low <= address <= high
