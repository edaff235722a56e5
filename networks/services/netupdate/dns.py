"""DNS host, TXT and SRV records served by the network's dnsmasq."""

from __future__ import annotations

import re

from networks.hypervisor import xml
from networks.hypervisor.types import DnsRecord, NetworkInfo

from .common import UpdatePlan, hostname, invalid, ip_address, number, shown, text

SRV_SERVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,14}")
TXT_VALUE_MAX = 255


def _records(info: NetworkInfo, kind: str) -> list[DnsRecord]:
    return [record for record in info.dns_records if record.kind == kind]


def _one(matches: list[DnsRecord], what: str, info: NetworkInfo) -> DnsRecord:
    if not matches:
        raise invalid("key", f"{info.name} has no {what}.")
    if len(matches) > 1:
        raise invalid("key", f"{info.name} has several {what}s: give protocol and target to pick one.")
    return matches[0]


class DnsHostSection:
    section = "dns-host"
    fields = ("ip", "hostnames")
    commands = ("add-first", "add-last", "delete")

    def plan(self, command: str, values: dict, info: NetworkInfo, key: str = "") -> UpdatePlan:
        if command == "delete":
            record = _one([r for r in _records(info, "host") if r.value == key.strip()], f"DNS host {shown(key)}", info)
            names = tuple(record.name.split())
            return UpdatePlan(
                self.section,
                command,
                xml.dns_host_fragment(record.value, names),
                summary=f"Delete DNS host {record.value} ({record.name})",
            )
        address = ip_address(values)
        raw_names = text(values, "hostnames", required=True).replace(",", " ").split()
        names = tuple(hostname({"hostnames": name}, "hostnames").lower() for name in raw_names)
        if any(r.value == str(address) for r in _records(info, "host")):
            raise invalid("ip", f"{address} already has a DNS host record on {info.name}: delete it first.")
        taken = {name.lower() for r in _records(info, "host") for name in r.name.split()}
        warnings = tuple(
            f"{n} already resolves to another address on {info.name}." for n in names if n.lower() in taken
        )
        return UpdatePlan(
            self.section,
            command,
            xml.dns_host_fragment(str(address), names),
            summary=f"Resolve {' '.join(names)} to {address}",
            warnings=warnings,
        )


class DnsTxtSection:
    section = "dns-txt"
    fields = ("name", "value")
    commands = ("add-first", "add-last", "delete")

    def plan(self, command: str, values: dict, info: NetworkInfo, key: str = "") -> UpdatePlan:
        if command == "delete":
            record = _one([r for r in _records(info, "txt") if r.name == key.strip()], f"TXT record {shown(key)}", info)
            return UpdatePlan(
                self.section, command, xml.dns_txt_fragment(record), summary=f"Delete TXT record {record.name}"
            )
        name = hostname(values, "name", required=True)
        value = text(values, "value", required=True)
        if len(value) > TXT_VALUE_MAX:
            raise invalid("value", f"A TXT value has at most {TXT_VALUE_MAX} characters.")
        if any(r.name.lower() == name.lower() for r in _records(info, "txt")):
            raise invalid("name", f"{info.name} already has a TXT record named {name}.")
        record = DnsRecord("txt", name, value)
        return UpdatePlan(self.section, command, xml.dns_txt_fragment(record), summary=f"Add TXT record {name}")


class DnsSrvSection:
    section = "dns-srv"
    fields = ("service", "protocol", "domain", "target", "port", "priority", "weight")
    commands = ("add-first", "add-last", "delete")

    def plan(self, command: str, values: dict, info: NetworkInfo, key: str = "") -> UpdatePlan:
        if command == "delete":
            return self._delete(values, info, key)
        record = self._record(values)
        if record in _records(info, "srv"):
            raise invalid("service", f"{info.name} already has this SRV record.")
        where = f"{record.value}:{record.port}" if record.value else "no target"
        return UpdatePlan(
            self.section,
            command,
            xml.dns_srv_fragment(record),
            summary=f"Add SRV _{record.name}._{record.protocol} → {where}",
        )

    @staticmethod
    def _record(values: dict) -> DnsRecord:
        service = text(values, "service", required=True)
        if not SRV_SERVICE_RE.fullmatch(service):
            raise invalid("service", "A service name has at most 15 letters, digits or '-'.")
        protocol = text(values, "protocol", required=True).lower()
        if protocol not in {"tcp", "udp"}:
            raise invalid("protocol", "The protocol is tcp or udp.")
        target = hostname(values, "target")
        port = number(values, "port", low=1, high=65535, required=bool(target))
        return DnsRecord(
            "srv",
            service,
            target,
            protocol=protocol,
            domain=hostname(values, "domain"),
            port=port,
            priority=number(values, "priority", low=0, high=65535),
            weight=number(values, "weight", low=0, high=65535),
        )

    @staticmethod
    def _delete(values: dict, info: NetworkInfo, key: str) -> UpdatePlan:
        matches = [r for r in _records(info, "srv") if r.name == key.strip()]
        for attribute, field_name in (("protocol", "protocol"), ("value", "target")):
            wanted = text(values, field_name)
            if wanted:
                matches = [r for r in matches if getattr(r, attribute) == wanted]
        record = _one(matches, f"SRV record for service {shown(key)}", info)
        return UpdatePlan(
            "dns-srv", "delete", xml.dns_srv_fragment(record), summary=f"Delete SRV _{record.name}._{record.protocol}"
        )
