"""DHCP host reservations and DHCP ranges."""

from __future__ import annotations

import ipaddress

from networks.hypervisor import xml
from networks.hypervisor.types import DhcpHost, DhcpRange, IpConfig, NetworkInfo

from .common import (
    UpdatePlan,
    containing_ip,
    gather,
    hostname,
    in_range,
    invalid,
    ip_address,
    mac_address,
    shown,
    subnet_of,
    text,
    usable_host_address,
)

HOST_ID_MAX = 255


def _all_hosts(info: NetworkInfo):
    for index, ip in enumerate(info.ips):
        for host in ip.dhcp_hosts:
            yield index, ip, host


def find_reservation(info: NetworkInfo, key: str) -> tuple[int, IpConfig, DhcpHost]:
    """The reservation named by its MAC (any separators, any case), DUID/IAID id or name."""
    wanted = key.strip().lower().replace("-", ":")
    for index, ip, host in _all_hosts(info):
        if wanted in {host.mac, host.host_id.lower(), host.name.lower()} - {""}:
            return index, ip, host
    raise invalid("key", f"{info.name} has no DHCP reservation for {shown(key)}.")


def _describe(host: DhcpHost) -> str:
    who = host.mac or host.host_id or host.name
    return f"{who} → {host.ip}" + (f" ({host.name})" if host.name and host.name != who else "")


class DhcpHostSection:
    section = "ip-dhcp-host"
    fields = ("mac", "ip", "name", "host_id")
    commands = ("add-first", "add-last", "modify", "delete")

    def plan(self, command: str, values: dict, info: NetworkInfo, key: str = "") -> UpdatePlan:
        if command == "delete":
            index, _ip, existing = find_reservation(info, key)
            return UpdatePlan(
                self.section,
                command,
                xml.dhcp_host_fragment(existing),
                index,
                summary=f"Delete reservation {_describe(existing)}",
            )
        existing = find_reservation(info, key)[2] if command == "modify" else None
        index, ip, host = self._checked_host(values, info)
        if existing is not None:
            self._check_modify_keeps_identity(existing, host, info)
        self._check_collisions(host, info, skip=existing)
        warnings = tuple(
            f"{host.ip} lies inside the dynamic range {r.start} – {r.end}: dnsmasq may already have leased it."
            for r in ip.dhcp_ranges
            if in_range(ipaddress.ip_address(host.ip), r.start, r.end)
        )
        verb = "Change reservation to" if command == "modify" else "Reserve"
        return UpdatePlan(
            self.section, command, xml.dhcp_host_fragment(host), index, f"{verb} {_describe(host)}", warnings
        )

    def _checked_host(self, values: dict, info: NetworkInfo) -> tuple[int, IpConfig, DhcpHost]:
        address, name, mac = gather(
            lambda: ip_address(values),
            lambda: hostname(values, "name"),
            lambda: mac_address(values) if text(values, "mac") else "",
        )
        index, ip = containing_ip(info, address)
        usable_host_address(address, ip)
        if address.version == 4:
            if text(values, "host_id"):
                raise invalid("host_id", "An IPv4 reservation is keyed by MAC address, not by id.")
            if not mac:
                raise invalid("mac", "This field is required for an IPv4 reservation.")
            return index, ip, DhcpHost(ip=str(address), mac=mac, name=name)
        if mac:
            raise invalid("mac", "libvirt keys IPv6 reservations by DHCPv6 id (DUID) or name, not by MAC.")
        host_id = text(values, "host_id")
        if len(host_id) > HOST_ID_MAX or any(c.isspace() for c in host_id):
            raise invalid("host_id", "A DHCPv6 id is a DUID such as 0:3:0:1:52:54:0:aa:bb:cc, without spaces.")
        if not host_id and not name:
            raise invalid("host_id", "An IPv6 reservation needs a DHCPv6 id (DUID) or a name.")
        return index, ip, DhcpHost(ip=str(address), host_id=host_id, name=name)

    @staticmethod
    def _check_modify_keeps_identity(existing: DhcpHost, new: DhcpHost, info: NetworkInfo) -> None:
        # libvirt's modify replaces the first entry matching mac OR ip OR name: keeping the
        # identity (and the subnet) guarantees it is this entry and no other.
        if existing.mac and new.mac != existing.mac:
            raise invalid("mac", "A modify keeps the MAC address: delete this reservation and add a new one.")
        if existing.host_id and new.host_id != existing.host_id:
            raise invalid("host_id", "A modify keeps the DHCPv6 id: delete this reservation and add a new one.")
        if not existing.mac and not existing.host_id and new.name != existing.name:
            raise invalid("name", "This reservation is keyed by its name: delete it and add a new one.")
        old_index = find_reservation(info, existing.mac or existing.host_id or existing.name)[0]
        new_index = containing_ip(info, ipaddress.ip_address(new.ip))[0]
        if old_index != new_index:
            raise invalid("ip", "The new address is in another subnet: delete this reservation and add a new one.")

    @staticmethod
    def _check_collisions(host: DhcpHost, info: NetworkInfo, skip: DhcpHost | None) -> None:
        for _index, _ip, other in _all_hosts(info):
            if other == skip:
                continue
            if host.mac and other.mac == host.mac:
                raise invalid("mac", f"{host.mac} is already reserved on {info.name}: {_describe(other)}.")
            if other.ip == host.ip:  # both in canonical form: libvirt's and ipaddress's
                raise invalid("ip", f"{host.ip} is already reserved on {info.name}: {_describe(other)}.")
            if host.name and other.name.lower() == host.name.lower():
                raise invalid("name", f"The name {host.name} is already used on {info.name}: {_describe(other)}.")
            if host.host_id and other.host_id.lower() == host.host_id.lower():
                raise invalid("host_id", f"{host.host_id} is already reserved on {info.name}.")


def find_range(info: NetworkInfo, key: str) -> tuple[int, DhcpRange]:
    for index, ip in enumerate(info.ips):
        for dhcp_range in ip.dhcp_ranges:
            if key.strip() in {dhcp_range.start, f"{dhcp_range.start}-{dhcp_range.end}"}:
                return index, dhcp_range
    raise invalid("key", f"{info.name} has no DHCP range starting at {shown(key)}.")


class DhcpRangeSection:
    section = "ip-dhcp-range"
    fields = ("start", "end")
    commands = ("add-first", "add-last", "delete")

    def plan(self, command: str, values: dict, info: NetworkInfo, key: str = "") -> UpdatePlan:
        if command == "delete":
            index, existing = find_range(info, key)
            return UpdatePlan(
                self.section,
                command,
                xml.dhcp_range_fragment(existing),
                index,
                summary=f"Delete DHCP range {existing.start} – {existing.end}",
            )
        start, end = ip_address(values, "start"), ip_address(values, "end")
        index, ip = containing_ip(info, start, "start")
        if containing_ip(info, end, "end")[0] != index:
            raise invalid("end", f"{end} is not in the same subnet as {start}.")
        if end < start:
            raise invalid("end", f"The range ends ({end}) before it starts ({start}).")
        usable_host_address(start, ip, "start")
        usable_host_address(end, ip, "end")
        gateway = ipaddress.ip_address(ip.address)
        if start <= gateway <= end:
            raise invalid("start", f"The range includes the network's own address {gateway}.")
        for other in ip.dhcp_ranges:
            if ipaddress.ip_address(other.start) <= end and start <= ipaddress.ip_address(other.end):
                raise invalid("start", f"The range overlaps the existing range {other.start} – {other.end}.")
        new = DhcpRange(str(start), str(end))
        reserved = [h.ip for h in ip.dhcp_hosts if in_range(ipaddress.ip_address(h.ip), new.start, new.end)]
        warnings = (f"Reserved addresses inside the new range: {', '.join(reserved)}.",) if reserved else ()
        subnet = subnet_of(ip)
        return UpdatePlan(
            self.section,
            command,
            xml.dhcp_range_fragment(new),
            index,
            f"Add DHCP range {new.start} – {new.end} to {subnet}",
            warnings,
        )
