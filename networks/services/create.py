"""Creating networks of every mode, checked before libvirt sees them."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from lxml import etree

from networks.choices import OperationKind
from networks.hypervisor import xml
from networks.hypervisor.types import DhcpRange, IpConfig
from networks.models import Host, NetworkIp, Operation

from .netupdate import bulk
from .netupdate.common import gather, interface_name, invalid, number, text
from .networks import NETWORK_NAME_RE
from .operations import OperationRejected, network_lock_key, operation_request
from .permissions import authorize
from .pools import pool_create_parts

BRIDGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")  # Linux IFNAMSIZ is 16 with the NUL
ROUTED_MODES = {"nat", "route", "open", "isolated"}
MACVTAP_MODES = {"macvtap-bridge", "macvtap-private", "macvtap-vepa", "macvtap-passthrough"}
POOL_MODE = "hostdev"  # an SR-IOV VF pool (services.pools)
MODES = ROUTED_MODES | {"bridge"} | MACVTAP_MODES | {POOL_MODE}
MTU_RANGE = (576, 65535)
# The shape of libvirt's own default network (/usr/share/libvirt/networks/default.xml).
DEFAULT_NETWORK = {
    "name": "default",
    "mode": "nat",
    "bridge": "virbr0",
    "ipv4": "192.168.122.1/24",
    "ipv4_dhcp_start": "192.168.122.2",
    "ipv4_dhcp_end": "192.168.122.254",
    "stp": True,
}


@dataclass(frozen=True)
class CreatePlan:
    name: str
    xml: str
    warnings: tuple[str, ...]


def _truthy(value) -> bool:
    return value is True or str(value).strip().lower() in {"1", "true", "yes", "on"}


def _subnet(values: dict, field: str, version: int):
    raw = text(values, field)
    if not raw:
        return None
    try:
        interface = ipaddress.ip_interface(raw if "/" in raw else f"{raw}/{24 if version == 4 else 64}")
    except ValueError:
        raise invalid(field, f"{raw!r} is not an address with a prefix, such as 192.168.100.1/24.") from None
    if interface.version != version:
        raise invalid(field, f"{raw} is not an IPv{version} address.")
    if interface.network.num_addresses < 8:
        raise invalid(field, "The subnet is too small: use a /29 (IPv4) or larger.")
    if interface.ip == interface.network.network_address:
        interface = ipaddress.ip_interface(f"{next(interface.network.hosts())}/{interface.network.prefixlen}")
    return interface


def _ip_config(values: dict, prefix: str, interface, dhcp: bool) -> IpConfig:
    """The <ip> of one family; the DHCP range defaults to the subnet after the gateway."""
    subnet = interface.network
    start, end = text(values, f"{prefix}_dhcp_start"), text(values, f"{prefix}_dhcp_end")
    ranges = ()
    if dhcp or start or end:
        # IPv4: up to the broadcast address; IPv6: the first 65,534 addresses after the gateway.
        last = subnet.broadcast_address - 1 if interface.version == 4 else subnet[min(subnet.num_addresses - 2, 65535)]
        low = _range_address(values, f"{prefix}_dhcp_start", start, interface.ip + 1)
        high = _range_address(values, f"{prefix}_dhcp_end", end, last)
        for field, address in ((f"{prefix}_dhcp_start", low), (f"{prefix}_dhcp_end", high)):
            if address not in subnet or address in (subnet.network_address, interface.ip):
                raise invalid(field, f"{address} must be a host address of {subnet} other than the gateway.")
        if high < low:
            raise invalid(f"{prefix}_dhcp_end", "The DHCP range ends before it starts.")
        if low <= interface.ip <= high:
            raise invalid(f"{prefix}_dhcp_start", f"The DHCP range includes the gateway {interface.ip}.")
        ranges = (DhcpRange(str(low), str(high)),)
    family = f"ipv{interface.version}"
    return IpConfig(str(interface.ip), subnet.prefixlen, family, ranges)


def _range_address(values, field, raw, default):
    if not raw:
        return default
    try:
        return ipaddress.ip_address(raw)
    except ValueError:
        raise invalid(field, f"{raw!r} is not an IP address.") from None


def network_create_plan(*, host: Host, values: dict) -> CreatePlan:
    """Check a create request and build its XML; a ValidationError names every bad field."""
    name = text(values, "name", required=True)
    mode = text(values, "mode") or "nat"
    errors = {}
    if not NETWORK_NAME_RE.match(name):
        errors["name"] = ["Letters, digits, '.', '_' and '-', at most 50, starting with a letter or digit."]
    elif host.networks.filter(name=name).exists():
        errors["name"] = [f"A network named {name!r} already exists on {host.name}."]
    if mode not in MODES:
        errors["mode"] = [f"Choose one of {', '.join(sorted(MODES))}."]
    if errors:
        raise ValidationError(errors)
    if mode in ROUTED_MODES:
        return _routed_plan(host, name, mode, values)
    if mode == "bridge":
        return _host_bridge_plan(host, name, values)
    if mode == POOL_MODE:
        return CreatePlan(name, *pool_create_parts(host, name, values))
    return _macvtap_plan(name, mode, values)


def _routed_plan(host: Host, name: str, mode: str, values: dict) -> CreatePlan:
    bridge = text(values, "bridge")
    dhcp = _truthy(values.get("dhcp", True))
    ipv4, ipv6, mtu = gather(
        lambda: _subnet(values, "ipv4", 4), lambda: _subnet(values, "ipv6", 6),
        lambda: number(values, "mtu", low=MTU_RANGE[0], high=MTU_RANGE[1]),
    )  # fmt: skip
    if bridge and not BRIDGE_NAME_RE.match(bridge):
        raise invalid("bridge", "A bridge name has at most 15 letters, digits, '.', '_' or '-'.")
    if bridge and host.networks.filter(bridge=bridge).exists():
        raise invalid("bridge", f"Another network on {host.name} already uses the bridge {bridge}.")
    if mode in {"nat", "route"} and ipv4 is None and ipv6 is None:
        raise invalid("ipv4", "NAT and routed networks need an IPv4 or IPv6 subnet.")
    if mode == "nat" and ipv4 is None:
        raise invalid("ipv4", "NAT needs an IPv4 subnet (IPv6 is routed, never NATed, by libvirt).")
    ips = tuple(
        _ip_config(values, prefix, interface, dhcp)
        for prefix, interface in (("ipv4", ipv4), ("ipv6", ipv6))
        if interface
    )
    domain = text(values, "domain_name")
    if domain and not re.match(r"^[A-Za-z0-9.-]{1,253}$", domain):
        raise invalid("domain_name", f"{domain!r} is not a DNS domain.")
    forward = {"nat": "nat", "route": "route", "open": "open", "isolated": ""}[mode]
    network_xml = xml.build_network_xml(
        name=name, forward_mode=forward, bridge=bridge, stp=_truthy(values.get("stp", False)), ips=ips,
        domain_name=domain, mtu=mtu, forward_dev=_forward_dev(values),
    )  # fmt: skip
    network_xml = _with_reservations(
        network_xml, text(values, "reservations", multiline=True, max_length=bulk.MAX_CSV_CHARS)
    )
    return CreatePlan(name, network_xml, _overlap_warnings(host, ips))


def _forward_dev(values: dict) -> str:
    """The one host interface NAT/routed traffic may leave by, if any (as Edit XML checks <forward dev>)."""
    return interface_name(values, "forward_dev") if text(values, "forward_dev") else ""


def _with_reservations(network_xml: str, csv_text: str) -> str:
    """Add `mac,ip,name` lines as DHCP hosts, each checked like a live reservation."""
    if not csv_text:
        return network_xml
    rows, info = bulk.check_rows(bulk.parse_csv(csv_text), xml.parse_network(network_xml))
    bad = [f"line {row.line}: {'; '.join(' '.join(m) for m in row.errors.values())}" for row in rows if not row.ok]
    if bad:
        raise invalid("reservations", " | ".join(bad))
    root = xml.parse(network_xml)
    for index, ip in enumerate(info.ips):
        dhcp = root.findall("ip")[index].find("dhcp")
        if dhcp is None:
            dhcp = etree.SubElement(root.findall("ip")[index], "dhcp")
        for host in ip.dhcp_hosts:
            dhcp.append(xml.build_dhcp_host(host))
    return xml.to_string(root)


def _overlap_warnings(host: Host, ips: tuple[IpConfig, ...]) -> tuple[str, ...]:
    warnings = []
    for ip in ips:
        subnet = ipaddress.ip_interface(f"{ip.address}/{ip.prefix}").network
        for other in NetworkIp.objects.filter(network__host=host, family=ip.family).select_related("network"):
            if subnet.overlaps(ipaddress.ip_interface(f"{other.address}/{other.prefix}").network):
                warnings.append(
                    f"{subnet} overlaps {other.address}/{other.prefix} of {other.network.name} on {host.name}."
                )
    return tuple(warnings)


def _host_bridge_plan(host: Host, name: str, values: dict) -> CreatePlan:
    bridge = text(values, "bridge", required=True)
    if not BRIDGE_NAME_RE.match(bridge):
        raise invalid("bridge", "A bridge name has at most 15 letters, digits, '.', '_' or '-'.")
    warnings = [
        "A wireless uplink cannot be part of a Linux bridge: bridge a wired interface.",
        "Some switches block ports that send bridge BPDUs: allow this host's port to act as a switch if the link dies.",
    ]
    if host.host_bridges and bridge not in host.host_bridges:
        warnings.insert(
            0, f"The last sync found no host bridge {bridge} on {host.name} ({', '.join(host.host_bridges)})."
        )
    return CreatePlan(name, xml.build_network_xml(name=name, forward_mode="bridge", bridge=bridge), tuple(warnings))


def _macvtap_plan(name: str, mode: str, values: dict) -> CreatePlan:
    devs = text(values, "interfaces").replace(",", " ").split()
    if not devs:
        raise invalid("interfaces", "Name at least one host interface, such as eth1.")
    for dev in devs:
        interface_name({"interfaces": dev}, "interfaces")
    forward = mode.removeprefix("macvtap-")
    warnings = ("With macvtap the host itself cannot reach its guests over these interfaces.",)
    return CreatePlan(name, xml.build_network_xml(name=name, forward_mode=forward, interfaces=tuple(devs)), warnings)


def network_request_create(
    *, host: Host, actor, source: str, start: bool = True, autostart: bool = False, message: str = "", **values
) -> Operation:
    authorize(actor=actor, action="network.create", host=host, source=source, object_name=str(values.get("name"))[:50])
    plan = network_create_plan(host=host, values=values)
    return _request_create(host, plan.name, plan.xml, start, autostart, actor, source, message)


def _request_create(
    host: Host, name: str, network_xml: str, start, autostart, actor, source: str, message: str
) -> Operation:
    """The network.create operation of a checked XML."""
    forward = xml.parse(network_xml).find("forward")
    return operation_request(
        kind=OperationKind.NETWORK_CREATE,
        host=host,
        actor=actor,
        source=source,
        lock_key=network_lock_key(host, name),
        target_name=name,
        params={
            "xml": network_xml,
            "start": bool(start),
            "autostart": bool(autostart),
            # A pool that fails to start (no usable VFs yet) stays defined: the admin enables VFs
            # on the host and starts it, and the operation reports libvirt's reason.
            "keep_defined": forward is not None and forward.get("mode") == POOL_MODE,
        },
        message=message,
    )


def network_request_create_default(*, host: Host, actor, source: str) -> Operation:
    """libvirt's default NAT network (virbr0, 192.168.122.0/24), started and autostarted."""
    return network_request_create(host=host, actor=actor, source=source, start=True, autostart=True, **DEFAULT_NETWORK)


# ---------------------------------------------------------------- from a whole XML (desired-state documents)


def network_request_create_from_xml(
    *, host: Host, network_xml: str, start: bool, autostart: bool, actor, source: str, message: str = ""
) -> Operation:
    """Create a network from its full XML, refused on every ground Edit XML refuses a document
    for (its entries as libvirt took them on another host: see desired.check_create_xml)."""
    from .desired import check_create_xml  # here: it imports xmlcheck, which imports this module
    from .xmlcheck import parse_user_xml

    authorize(actor=actor, action="network.create", host=host, source=source)
    name = parse_user_xml(network_xml).findtext("name", "")
    if not NETWORK_NAME_RE.match(name):
        raise OperationRejected(f"{name[:60]!r} is not a network name (letters, digits, '.', '_', '-').")
    if host.networks.filter(name=name).exists():
        raise OperationRejected(f"A network named {name!r} already exists on {host.name}.")
    check_create_xml(name, network_xml)
    return _request_create(host, name, network_xml, start, autostart, actor, source, message)
