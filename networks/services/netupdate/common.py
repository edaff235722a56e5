"""Checks shared by the net-update sections. Each raises a ValidationError naming the field."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

import netaddr
from django.core.exceptions import ValidationError

from networks.hypervisor.types import IpConfig, NetworkInfo

HOSTNAME_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_RE = re.compile(rf"{HOSTNAME_LABEL}(?:\.{HOSTNAME_LABEL})*")
IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}")
MAC_OCTETS_RE = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}")
MAC_DOTTED_RE = re.compile(r"[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}")
DIGITS_RE = re.compile(r"[0-9]{1,10}")  # re's \d would also match other scripts' digits
VALUE_MAX = 1024  # longer than any value libvirt takes in these sections (a TXT value is 255)
IP_TEXT_MAX = 45  # the longest IPv6 text form
HOSTNAME_MAX = 253
SHOWN_MAX = 40  # characters of a refused value that an error message quotes


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


def shown(value) -> str:
    """`value` as an error message may quote it: a short prefix, with control characters escaped.

    Messages go back to the client and into the audit log, so a 1 MB value must not come back whole.
    """
    value = value if isinstance(value, str) else str(value)
    clipped = value[:SHOWN_MAX] + ("…" if len(value) > SHOWN_MAX else "")
    return repr(clipped)


def text(
    values: dict, name: str, *, required: bool = False, max_length: int = VALUE_MAX, multiline: bool = False
) -> str:
    """A one-line text value. Surrounding spaces and tabs are trimmed (as Django and DRF trim form
    and API text); anything unprintable is refused, because libvirt writes these values into
    dnsmasq's config line by line and lxml refuses control characters. `multiline` text (CSV) is
    only bounded here: it is parsed, and each of its cells checked as a value of its own."""
    raw = values.get(name)
    if raw is None:
        raw = ""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise invalid(name, "Enter text (a string), not a list, an object or true/false.")
    value = str(raw).strip(" \t\r\n" if multiline else " \t")
    if len(value) > max_length:
        raise invalid(name, f"At most {max_length} characters.")
    if not multiline and not value.isprintable():
        raise invalid(name, "Control characters, line breaks and invisible characters are not allowed.")
    if required and not value:
        raise invalid(name, "This field is required.")
    return value


def number(values: dict, name: str, *, low: int, high: int, required: bool = False) -> int | None:
    """A whole number written in ASCII digits (`int()` would also take '١٢', '+5' and '1_000')."""
    raw = values.get(name)
    if isinstance(raw, str):
        raw = raw.strip(" \t")
    if raw in (None, ""):
        if required:
            raise invalid(name, "This field is required.")
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and DIGITS_RE.fullmatch(raw):
        value = int(raw)
    else:
        raise invalid(name, "Enter a whole number in the digits 0-9.")
    if not low <= value <= high:
        raise invalid(name, f"Must be between {low} and {high}.")
    return value


def mac_address(values: dict, name: str = "mac") -> str:
    """A unicast MAC in libvirt's form (lowercase, colons).

    Accepted: six two-digit hex octets separated by ':' or '-', or Cisco's aabb.ccdd.eeff.
    netaddr alone would also turn '0' or '+1' into a MAC, silently.
    """
    raw = text(values, name, required=True)
    if not (MAC_OCTETS_RE.fullmatch(raw) or MAC_DOTTED_RE.fullmatch(raw)):
        raise invalid(name, f"{shown(raw)} is not a MAC address (write it like 52:54:00:ab:cd:ef).")
    mac = netaddr.EUI(raw, dialect=netaddr.mac_unix_expanded)
    if mac.value == 0:
        raise invalid(name, "00:00:00:00:00:00 is not a usable MAC address.")
    if mac.words[0] & 1:
        raise invalid(name, f"{mac} is a multicast MAC address; a NIC needs a unicast one.")
    return str(mac).lower()


def ip_address(values: dict, name: str = "ip") -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4 or IPv6 address. IPv6 zones ('%eth0') are refused: libvirt's XML has no place for
    one and would drop it; IPv4 with leading zeros is refused by ipaddress itself."""
    raw = text(values, name, required=True, max_length=IP_TEXT_MAX)
    if "%" in raw:
        raise invalid(name, f"{shown(raw)}: an address with a zone (%…) cannot be used here.")
    try:
        return ipaddress.ip_address(raw)
    except ValueError:
        raise invalid(name, f"{shown(raw)} is not an IP address.") from None


def section_values(data, fields: tuple[str, ...], options: tuple[str, ...] = ()) -> dict:
    """The fields of one section entry from a request body of any JSON type.

    Only the section's own fields (and the request `options`) are taken, each a scalar of
    bounded length: the values are kept in the Operation, and the worker plans from them again.
    """
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["Send a JSON object of the entry's fields."]})
    if len(data) > len(fields) + len(options):
        raise ValidationError({"non_field_errors": [f"Too many fields; this section takes: {', '.join(fields)}."]})
    values = {}
    for key, value in data.items():
        if key in options:
            continue
        if key not in fields:
            raise ValidationError(
                {"non_field_errors": [f"Unknown field {shown(key)}; this section takes: {', '.join(fields)}."]}
            )
        if isinstance(value, str) and len(value) > VALUE_MAX:
            raise invalid(key, f"At most {VALUE_MAX} characters.")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise invalid(key, "Enter text or a number, not a list or an object.")
        values[key] = value
    return values


def hostname(values: dict, name: str, *, required: bool = False) -> str:
    value = text(values, name, required=required, max_length=HOSTNAME_MAX)
    if value and not HOSTNAME_RE.fullmatch(value):
        raise invalid(name, f"{shown(value)} is not a valid host name (letters, digits, '-' and '.').")
    return value


def interface_name(values: dict, name: str = "dev") -> str:
    value = text(values, name, required=True)
    if not IFNAME_RE.fullmatch(value):
        raise invalid(name, f"{shown(value)} is not a network interface name.")
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
