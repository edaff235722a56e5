"""Checks of a guest interface request, field by field. Each raises a ValidationError naming
the field; nothing here talks to a host (the mirror answers)."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError

from networks.choices import InterfaceScope
from networks.hypervisor import xml
from networks.hypervisor.types import BandwidthLimit
from networks.models import Guest, Network, NodeDevice

from ..netupdate.common import IFNAME_RE, invalid, number, shown, text

SOURCE_TYPES = ("network", "bridge", "direct")
MODELS = ("virtio", "e1000e", "e1000", "rtl8139")
DIRECT_MODES = ("bridge", "vepa", "private", "passthrough")
LINK_STATES = ("up", "down")
SCOPES = tuple(InterfaceScope.values)
VLAN_TAGS_MAX = 64
BANDWIDTH_KEYS = ("average", "peak", "burst")
BANDWIDTH_MAX = 2**32 - 1  # KiB/s (about 35 Tbit/s) or KiB: libvirt takes larger, no NIC needs it
WIRELESS_BRIDGE = "A wireless uplink cannot be part of a Linux bridge: guests on a bridge over Wi-Fi get no connection."

SOURCE_FIELDS = ("source_type", "source", "portgroup", "mode")
SETTING_FIELDS = (*SOURCE_FIELDS, "model", "link", "vlan_tags", "inbound", "outbound")
ADD_FIELDS = (*SETTING_FIELDS, "mac", "scope")
UPDATE_FIELDS = (*SETTING_FIELDS, "mac", "scope")
REMOVE_FIELDS = ("scope",)


@dataclass(frozen=True)
class Source:
    source_type: str
    source: str
    portgroup: str = ""
    mode: str = ""
    network: Network | None = None
    warnings: tuple[str, ...] = ()


def request_values(data, allowed: tuple[str, ...]) -> dict:
    """The fields of a request body of any JSON type: an object with known keys only."""
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["Send a JSON object of the interface's fields."]})
    unknown = [key for key in data if key not in allowed]
    if unknown:
        raise ValidationError(
            {"non_field_errors": [f"Unknown field {shown(unknown[0])}; this takes: {', '.join(allowed)}."]}
        )
    return dict(data)


def choice(values: dict, name: str, options: tuple[str, ...]) -> str:
    value = text(values, name)
    if value and value not in options:
        raise invalid(name, f"{shown(value)} is not one of {', '.join(options)}.")
    return value


def scope_of(values: dict, guest: Guest) -> str:
    """Where the change applies: by default the running guest and its config (a stopped
    guest: its config); a stopped guest has nothing live to change."""
    scope = choice(values, "scope", SCOPES)
    if not guest.is_running:
        if scope and scope != InterfaceScope.CONFIG:
            raise invalid("scope", f"{guest.name} is not running: only its persistent config can change (config).")
        return InterfaceScope.CONFIG
    return scope or InterfaceScope.BOTH


def source_of(values: dict, guest: Guest, scope: str, current=None) -> Source:
    """The source the interface will have: the request's, or the current one where the
    request names none (an update that only changes the portgroup keeps the network)."""
    kind = choice(values, "source_type", SOURCE_TYPES) or (current.source_type if current else "network")
    name = text(values, "source", max_length=255)
    if not name:
        if current is None or kind != current.source_type:
            raise invalid("source", "Name the network, bridge or host interface to connect to.")
        name = current.source
    unchanged = current is not None and (kind, name) == (current.source_type, current.source)
    if kind == "network":
        return _network_source(values, guest, scope, name, current if unchanged else None)
    if text(values, "portgroup"):
        raise invalid("portgroup", "Portgroups belong to libvirt networks: choose source type network.")
    if kind == "bridge":
        return _bridge_source(values, guest, name)
    return _direct_source(values, guest, name, current if unchanged else None)


def _no_mode(values: dict) -> None:
    if text(values, "mode"):
        raise invalid("mode", "A mode applies to macvtap only (source type direct).")


def _network_source(values: dict, guest: Guest, scope: str, name: str, current) -> Source:
    _no_mode(values)
    network = guest.host.networks.filter(name=name).prefetch_related("portgroups").first()
    if network is None:
        names = ", ".join(guest.host.networks.order_by("name").values_list("name", flat=True)) or "none"
        raise invalid("source", f"Host {guest.host.name} has no network {shown(name)} (it has: {names}).")
    if scope != InterfaceScope.CONFIG and not network.active:
        raise invalid("source", f"Network {name} is not running: start it first, or change only the persistent config.")
    portgroup = text(values, "portgroup", max_length=255)
    if "portgroup" not in values and current is not None:
        portgroup = current.portgroup  # kept unless the request names one (or "" for none)
    names = [pg.name for pg in network.portgroups.all()]
    if portgroup and portgroup not in names:
        raise invalid(
            "portgroup", f"Network {name} has no portgroup {shown(portgroup)} (it has: {', '.join(names) or 'none'})."
        )
    warnings = () if network.active else (f"Network {name} is not running: the guest cannot start until it is.",)
    return Source("network", name, portgroup, network=network, warnings=warnings)


def _bridge_source(values: dict, guest: Guest, name: str) -> Source:
    _no_mode(values)
    if not IFNAME_RE.fullmatch(name):
        raise invalid("source", f"{shown(name)} is not a bridge name.")
    host = guest.host
    warnings = [WIRELESS_BRIDGE]
    if host.host_bridges and name not in host.host_bridges:
        raise invalid(
            "source", f"The last sync found no bridge {name} on {host.name} (bridges: {', '.join(host.host_bridges)})."
        )
    if not host.host_bridges:
        warnings.insert(0, f"The last sync found no bridges on {host.name}: make sure {name} exists there.")
    owner = host.networks.filter(bridge=name).first()
    if owner is not None:
        warnings.insert(0, f"{name} is the bridge of libvirt network {owner.name}: source type network uses it fully.")
    return Source("bridge", name, warnings=tuple(warnings))


def _direct_source(values: dict, guest: Guest, name: str, current) -> Source:
    if not IFNAME_RE.fullmatch(name):
        raise invalid("source", f"{shown(name)} is not a host interface name.")
    host = guest.host
    if name in host.host_bridges:
        raise invalid("source", f"{name} is a bridge: choose source type bridge for it.")
    nics = NodeDevice.objects.filter(host=host, capability="net")
    nic = nics.filter(net_interface=name).first()
    warnings = ["With macvtap the host itself cannot reach the guest over this interface."]
    if nic is None and nics.exists():
        known = ", ".join(sorted(nics.values_list("net_interface", flat=True)))
        raise invalid("source", f"The last sync found no interface {name} on {host.name} (it has: {known}).")
    if nic is None:
        warnings.insert(0, f"The last sync found no host interfaces on {host.name}: make sure {name} exists there.")
    elif _is_wireless(nic):
        raise invalid(
            "source", f"{name} is a wireless interface: an access point passes only its own MAC, not guests'."
        )
    mode = choice(values, "mode", DIRECT_MODES) or (current.mode if current else "") or "bridge"
    return Source("direct", name, mode=mode, warnings=tuple(warnings))


def _is_wireless(nic: NodeDevice) -> bool:
    if not nic.xml:
        return False
    return bool(xml.parse(nic.xml).xpath("capability[@type='net']/capability[@type='80211']"))


def model_of(values: dict, current=None) -> str:
    return choice(values, "model", MODELS) or (current.model if current else "") or "virtio"


def link_of(values: dict, current=None) -> str:
    if "link" not in values:
        return current.link if current else ""
    return choice(values, "link", LINK_STATES)


def vlan_tags_of(values: dict, current=None) -> tuple[int, ...]:
    """A list of VLAN ids (a form may send "10, 20"); absent: unchanged; [] or "": none."""
    if "vlan_tags" not in values:
        return current.vlan_tags if current else ()
    raw = values["vlan_tags"]
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = raw.replace(",", " ").split()
    if not isinstance(raw, list):
        raise invalid("vlan_tags", "Give a list of VLAN ids, such as [10, 20].")
    if len(raw) > VLAN_TAGS_MAX:
        raise invalid("vlan_tags", f"At most {VLAN_TAGS_MAX} VLAN ids.")
    tags = []
    for item in raw:
        if isinstance(item, dict | list):
            raise invalid("vlan_tags", "Each VLAN id is a whole number from 0 to 4095.")
        try:
            tags.append(number({"tag": item}, "tag", low=0, high=4095, required=True))
        except ValidationError:
            raise invalid("vlan_tags", f"{shown(item)} is not a VLAN id (a whole number from 0 to 4095).") from None
    if len(set(tags)) != len(tags):
        raise invalid("vlan_tags", "Each VLAN id once.")
    return tuple(tags)


def check_vlan_support(tags: tuple[int, ...], source: Source, current=None, current_xml: str = "") -> None:
    """VLAN tags only where libvirt can set them: an Open vSwitch bridge or an SR-IOV pool."""
    if not tags:
        return
    if source.network is not None:
        info = xml.parse_network(source.network.live_xml) if source.network.live_xml else None
        if info is not None and (info.virtualport_type == "openvswitch" or info.forward_mode == "hostdev"):
            return
        kind = source.network.mode_label
        raise invalid(
            "vlan_tags",
            f"Network {source.source} is a {kind} network on a Linux bridge, which cannot tag VLANs: "
            "VLAN tags need an Open vSwitch bridge or an SR-IOV (hostdev) pool.",
        )
    same_bridge = source.source_type == "bridge" and current is not None and current.source == source.source
    if same_bridge and xml.parse(current_xml).xpath("virtualport[@type='openvswitch']"):
        return
    raise invalid(
        "vlan_tags",
        f"kvmweb cannot tell that {source.source} takes VLAN tags: they need an Open vSwitch bridge "
        "(a libvirt network with <virtualport type='openvswitch'>) or an SR-IOV (hostdev) pool.",
    )


def bandwidth_of(values: dict, name: str, current=None) -> BandwidthLimit | None:
    """{average, peak, burst} in KiB/s (burst in KiB); absent: unchanged; null or {}: none."""
    if name not in values:
        return getattr(current, name) if current else None
    raw = values[name]
    if raw in (None, {}):
        return None
    if not isinstance(raw, dict):
        raise invalid(name, 'Give an object such as {"average": 1000, "peak": 2000, "burst": 512}.')
    unknown = [key for key in raw if key not in BANDWIDTH_KEYS]
    if unknown:
        raise invalid(name, f"Unknown key {shown(unknown[0])}: use {', '.join(BANDWIDTH_KEYS)}.")
    limits = {}
    for key in BANDWIDTH_KEYS:
        try:
            limits[key] = number(raw, key, low=1, high=BANDWIDTH_MAX)
        except ValidationError as error:
            raise invalid(name, f"{key}: {' '.join(error.messages)}") from None
    if limits["average"] is None:
        if any(limits.values()):
            raise invalid(name, "average is required when peak or burst is given.")
        return None
    if limits["peak"] is not None and limits["peak"] < limits["average"]:
        raise invalid(name, "peak must be at least the average.")
    return BandwidthLimit(**limits)
