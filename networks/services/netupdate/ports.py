"""Portgroups and forward interfaces."""

from __future__ import annotations

import re

from networks.hypervisor import xml
from networks.hypervisor.types import NetworkInfo, Portgroup

from .common import UpdatePlan, interface_name, invalid, number, shown, text

PORTGROUP_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
BANDWIDTH_MAX = 2**32 - 1  # KiB/s, libvirt's unsigned int
# Modes whose guests sit on an interface pool libvirt can grow or shrink live.
INTERFACE_POOL_MODES = {"nat", "route", "bridge", "private", "vepa", "passthrough"}


TRUE_WORDS, FALSE_WORDS = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


def _yes_no(values: dict, name: str) -> bool:
    """A checkbox or yes/no field; anything else is refused rather than read as "no"."""
    raw = values.get(name)
    if isinstance(raw, bool):
        return raw
    word = text(values, name).lower()
    if word not in TRUE_WORDS | FALSE_WORDS:
        raise invalid(name, "Answer yes or no.")
    return word in TRUE_WORDS


def _vlan_tags(values: dict) -> tuple[int, ...]:
    raw = text(values, "vlan_tags").replace(",", " ").split()
    tags = []
    for item in raw:
        tag = number({"vlan_tags": item}, "vlan_tags", low=0, high=4095)
        if tag in tags:
            raise invalid("vlan_tags", f"VLAN {tag} is listed twice.")
        tags.append(tag)
    return tuple(tags)


def _find_portgroup(info: NetworkInfo, name: str) -> Portgroup:
    for portgroup in info.portgroups:
        if portgroup.name == name.strip():
            return portgroup
    raise invalid("key", f"{info.name} has no portgroup named {shown(name)}.")


class PortgroupSection:
    section = "portgroup"
    fields = ("name", "is_default", "vlan_tags", "inbound_average", "outbound_average")
    commands = ("add-first", "add-last", "modify", "delete")

    def plan(self, command: str, values: dict, info: NetworkInfo, key: str = "") -> UpdatePlan:
        if command == "delete":
            existing = _find_portgroup(info, key)
            return UpdatePlan(
                self.section, command, xml.portgroup_fragment(existing), summary=f"Delete portgroup {existing.name}"
            )
        existing = _find_portgroup(info, key) if command == "modify" else None
        portgroup = self._portgroup(values, existing)
        others = [pg for pg in info.portgroups if pg != existing]
        if any(pg.name == portgroup.name for pg in others):
            raise invalid("name", f"{info.name} already has a portgroup named {portgroup.name}.")
        if portgroup.is_default and any(pg.is_default for pg in others):
            raise invalid("is_default", "Another portgroup is already the default; only one may be.")
        if portgroup.vlan_tags and not (info.forward_mode == "hostdev" or info.virtualport_type == "openvswitch"):
            raise invalid(
                "vlan_tags",
                "libvirt applies portgroup VLAN tags only on SR-IOV (hostdev) pools and Open vSwitch bridges.",
            )
        verb = "Change" if existing else "Add"
        return UpdatePlan(
            self.section, command, xml.portgroup_fragment(portgroup), summary=f"{verb} portgroup {portgroup.name}"
        )

    @staticmethod
    def _portgroup(values: dict, existing: Portgroup | None) -> Portgroup:
        name = text(values, "name") or (existing.name if existing else "")
        if not PORTGROUP_NAME_RE.fullmatch(name):
            raise invalid("name", "A portgroup name has letters, digits, '.', '_' or '-' (at most 64).")
        if existing and name != existing.name:
            raise invalid("name", "libvirt finds the portgroup by name: delete it and add one to rename it.")
        return Portgroup(
            name=name,
            is_default=_yes_no(values, "is_default"),
            vlan_tags=_vlan_tags(values),
            inbound_average=number(values, "inbound_average", low=1, high=BANDWIDTH_MAX),
            outbound_average=number(values, "outbound_average", low=1, high=BANDWIDTH_MAX),
        )


class ForwardInterfaceSection:
    section = "forward-interface"
    fields = ("dev",)
    commands = ("add-first", "add-last", "delete")

    def plan(self, command: str, values: dict, info: NetworkInfo, key: str = "") -> UpdatePlan:
        if info.forward_mode not in INTERFACE_POOL_MODES:
            raise invalid("dev", f"A {info.forward_mode or 'isolated'} network has no forward interfaces to change.")
        current = {f.dev: f for f in info.forward_interfaces if f.kind == "interface"}
        if command == "delete":
            dev = key.strip()
            if dev not in current:
                raise invalid("key", f"{info.name} does not forward through {shown(dev)}.")
            if current[dev].connections:
                raise invalid("key", f"{dev} is in use by {current[dev].connections} guest interface(s).")
            return UpdatePlan(
                self.section, command, xml.forward_interface_fragment(dev), summary=f"Stop forwarding through {dev}"
            )
        dev = interface_name(values)
        if dev in current:
            raise invalid("dev", f"{info.name} already forwards through {dev}.")
        return UpdatePlan(self.section, command, xml.forward_interface_fragment(dev), summary=f"Forward through {dev}")
