"""The picture of one host's networking, from the mirror only, in a fixed number of queries
whatever the number of its guests (one more per SR-IOV pool, through pci.device_holders).

Columns, left to right: the host's NICs (uplinks); its libvirt networks and the host bridges no
network names; its guests with one row per interface; the port forwards to them. Edges join an
uplink to the networks forwarding through it and a network to each guest interface on it.

Kept readable for hundreds of guests: a network with more than GUEST_LIMIT guests shows the
first GUEST_SHOWN and one "+ N more guests" box linking to the network's page; networks with no
guest are listed together in one box when there are more than IDLE_LIMIT of them.

The uplinks are the host's NICs, not every interface libvirt lists as a net node device (lo,
each guest's tap or macvtap, the bridges, veths): a NIC has a PCI or USB device behind it. A
software interface (a bond, a VLAN) is drawn too when a network or a guest uses it, or a NIC is
part of it. Past NIC_LIMIT of them, the first NIC_SHOWN (those in use first) and
one "+ N more NICs" box.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlencode

from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from networks.choices import ForwardInterfaceKind, ForwardMode
from networks.models import DhcpLease, DhcpRange, Guest, Network, NodeDevice, PortForward
from networks.services import pci

from .svg import Box, Column, Edge, Row, render

GUEST_LIMIT = 8
GUEST_SHOWN = 6
IDLE_LIMIT = 4
IDLE_LINES = 30
VF_LINES = 16
FORWARD_LIMIT = 30
POOL_WARN = 0.9
NIC_LIMIT = 16
NIC_SHOWN = 12
# libvirt's root node device: the parent of every net device with no hardware behind it
ROOT_DEVICE = "computer"
# Interfaces libvirt and the kernel create per guest or for the host itself: never an uplink
NOT_UPLINKS = re.compile(r"lo|vnet\d+|macvtap\d+")
# How the sync words a NIC that is a bridge port, or part of another interface (inventory.host_nic_uses)
MEMBER = "member of "
BRIDGE_MEMBER = MEMBER + "bridge "


@dataclass
class Mirror:
    """What the picture reads of one host, each in one query."""

    host: object
    net_devices: list[NodeDevice]  # every net node device, by interface name
    devices: list[NodeDevice]
    networks: list[Network]
    guests: list[Guest]
    leases: list[tuple]  # (network_id, mac, address)
    range_sizes: dict[int, int]  # network id → addresses in its DHCP ranges
    forwards: list[PortForward]
    holders: dict[str, pci.Holder]


def load(host) -> Mirror:
    devices = list(NodeDevice.objects.filter(host=host).defer("xml"))
    now = timezone.now()
    leases = list(
        DhcpLease.objects.filter(network__host=host)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("address")
        .values_list("network_id", "mac", "address")
    )
    return Mirror(
        host=host,
        net_devices=sorted((d for d in devices if d.capability == "net" and d.net_interface), key=_uplink_order),
        devices=devices,
        networks=list(
            Network.objects.filter(host=host)
            .defer("live_xml", "inactive_xml")
            .prefetch_related("ips", "forward_interfaces")
            .order_by("name")
        ),
        guests=list(Guest.objects.filter(host=host).defer("xml").prefetch_related("interfaces").order_by("name")),
        leases=leases,
        range_sizes=_range_sizes(host),
        forwards=list(PortForward.objects.filter(host=host).order_by("guest_name", "protocol", "host_port_start")),
        holders=pci.device_holders(host),
    )


def _uplink_order(device: NodeDevice):
    return device.net_interface, device.name


def _range_sizes(host) -> dict[int, int]:
    sizes: dict[int, int] = {}
    rows = DhcpRange.objects.filter(ip__network__host=host).values_list("ip__network_id", "size", "start", "end")
    for network_id, size, start, end in rows:
        # a row written without its stored size is sized here
        sizes[network_id] = sizes.get(network_id, 0) + (size if size is not None else DhcpRange.size_of(start, end))
    return sizes


def host_svg(host) -> str:
    return Picture(load(host)).svg()


class Picture:
    """Lays out one host's boxes in four columns and joins them; `svg()` draws it."""

    def __init__(self, mirror: Mirror):
        self.m = mirror
        self.uplinks = Column("Host uplinks", 10, 190)
        self.middle = Column("Bridges and networks", 260, 270)
        self.guests = Column("Guests and their interfaces", 600, 290)
        self.forwards = Column("Port forwards", 960, 230)
        self.edges: list[Edge] = []
        # a network's key → (the box drawing it, the row there): idle networks share one box
        self.drawn: dict[str, tuple[str, str | None]] = {}
        self.bridge_network = {n.bridge: f"net:{n.pk}" for n in reversed(mirror.networks) if n.bridge}
        self.vf_pool = self._vf_pools()
        self.lease_counts: dict[int, int] = {}
        self.lease_by_mac: dict[str, list[tuple[int, str]]] = {}
        for network_id, mac, address in mirror.leases:
            self.lease_counts[network_id] = self.lease_counts.get(network_id, 0) + 1
            self.lease_by_mac.setdefault(mac.lower(), []).append((network_id, address))

    def svg(self) -> str:
        """Each network (or bridge) in a band with its guests beside it, so that most edges run
        straight across; a guest on several networks sits in the band of the first."""
        self._draw_uplinks()
        sources = self._sources()
        placed: set[int] = set()
        for box in self._middle_boxes(sources):
            top = max(self.middle.next_y, self.guests.next_y)
            self.middle.add(box, at=top)
            self._place_guests(box.key, sources, placed, top)
        for box in self.uplinks.boxes:  # guests on a host NIC itself (macvtap)
            self._place_guests(box.key, sources, placed, 0)
        drawn = [box.key for box in self.middle.boxes + self.uplinks.boxes if box.key in sources]
        for key in drawn:
            for guest, iface in sources[key]:
                if guest.pk in placed:
                    self._edge(key, f"guest:{guest.pk}", f"if:{iface.pk}")
        self._draw_unattached(placed, set(drawn))
        self._draw_uplink_edges()
        self._draw_forwards()
        columns = [self.uplinks, self.middle, self.guests]
        if self.m.forwards:
            columns.append(self.forwards)
        boxes = [box for column in columns for box in column.boxes]
        return render(boxes, self.edges, f"Networking of host {self.m.host.name}", "host-topology", columns)

    def _edge(self, source: str, target: str, target_anchor: str | None = None, css: str = "") -> None:
        """An edge to `target` (a network, a bridge or a guest box) from `source`, through the box
        that draws each (an idle network's row in the shared box)."""
        source_box, source_anchor = self.drawn.get(source, (source, None))
        target_box, anchor = self.drawn.get(target, (target, target_anchor))
        self.edges.append(Edge(source_box, target_box, source_anchor, anchor, css))

    # ------------------------------------------------------------ uplinks

    def _draw_uplinks(self) -> None:
        href = reverse("networks:host_passthrough", args=[self.m.host.pk])
        uses = self.m.host.nic_uses or {}
        used = self._used_devices()
        nics = self._uplink_nics(used)
        shown = nics
        if len(nics) > NIC_LIMIT:  # those in use first, drawn in name order
            joined = used | set(uses)  # or the host uses
            ranked = sorted(nics, key=lambda nic: (nic.net_interface not in joined, _uplink_order(nic)))
            shown = sorted(ranked[:NIC_SHOWN], key=_uplink_order)
        for nic in shown:
            name = nic.net_interface
            rows = [Row(name), Row(nic.net_mac or "no MAC known", "detail")]
            if uses.get(name):
                rows.append(Row(str(uses[name]), "detail"))
            title = f"{name}: {uses[name]}" if uses.get(name) else name
            self.uplinks.add(Box(f"nic:{name}", href, rows, "uplink", title=title))
        if len(nics) > len(shown):
            rows = [Row(f"+ {len(nics) - len(shown)} more NICs", "more")]
            self.uplinks.add(Box("more:nics", href, rows, "more"))

    def _uplink_nics(self, used: set[str]) -> list[NodeDevice]:
        """The net devices drawn as uplinks: the NICs, and the software interfaces a network or a
        guest uses or a NIC is part of; never lo, a guest's tap or macvtap, or a bridge (the middle
        column draws those). A bridge's port counts for nothing: a veth or a tap is one too."""
        bridges = {n.bridge for n in self.m.networks if n.bridge} | {str(b) for b in self.m.host.host_bridges or ()}
        wanted = used | self._aggregates()
        return [
            device
            for device in self.m.net_devices
            if device.net_interface not in bridges
            and not NOT_UPLINKS.fullmatch(device.net_interface)
            and (device.parent != ROOT_DEVICE or device.net_interface in wanted)
        ]

    def _used_devices(self) -> set[str]:
        """The devices networks forward through (`<forward dev>`, a pool's PF) and those guests'
        macvtap interfaces sit on."""
        devices = set().union(*(self._forward_devs(network) for network in self.m.networks))
        for guest in self.m.guests:
            devices |= {i.source for i in guest.interfaces.all() if i.type == "direct" and i.source}
        return devices

    def _aggregates(self) -> set[str]:
        """Software interfaces a host NIC is part of (a bond, a VLAN), from the sync's "member of
        TYPE NAME"; bridges are drawn in the middle column."""
        found = set()
        for use in (self.m.host.nic_uses or {}).values():
            kind, _, name = str(use).removeprefix(MEMBER).partition(" ")
            if str(use).startswith(MEMBER) and kind != "bridge" and name:
                found.add(name)
        return found

    def _uplinks_of(self, network: Network) -> set[str]:
        return self._forward_devs(network) | self._bridge_ports(network.bridge)

    @staticmethod
    def _forward_devs(network: Network) -> set[str]:
        devs = {network.forward_dev} | {
            fwd.dev
            for fwd in network.forward_interfaces.all()
            if fwd.kind in (ForwardInterfaceKind.INTERFACE, ForwardInterfaceKind.PF)
        }
        return {dev for dev in devs if dev}

    def _bridge_ports(self, bridge: str) -> set[str]:
        if not bridge:
            return set()
        uses = self.m.host.nic_uses or {}
        return {nic for nic, use in uses.items() if str(use) == BRIDGE_MEMBER + bridge}

    # ------------------------------------------------------------ networks and bridges

    def _sources(self) -> dict[str, list[tuple[Guest, object]]]:
        """Each box a guest interface hangs from (network, host bridge, uplink) → its
        (guest, interface) pairs, in guest name order."""
        sources: dict[str, list] = {}
        for guest in self.m.guests:
            for iface in guest.interfaces.all():
                key = self._source_of(iface)
                if key:
                    sources.setdefault(key, []).append((guest, iface))
        return sources

    def _source_of(self, iface) -> str:
        if iface.network_id:
            return f"net:{iface.network_id}"
        if iface.type == "bridge" and iface.source:
            return self.bridge_network.get(iface.source) or f"br:{iface.source}"
        if iface.type == "direct" and iface.source:
            return f"nic:{iface.source}"
        if iface.type == "hostdev" and iface.source in self.vf_pool:
            return f"net:{self.vf_pool[iface.source]}"
        return ""

    def _middle_boxes(self, sources) -> list[Box]:
        # a pool keeps its own box for its VFs, whoever holds them
        idle = [n for n in self.m.networks if f"net:{n.pk}" not in sources and n.forward_mode != ForwardMode.HOSTDEV]
        grouped = idle if len(idle) > IDLE_LIMIT else []
        boxes = [self._network_box(network) for network in self.m.networks if network not in grouped]
        if grouped:
            boxes.append(self._idle_box(grouped))
        for bridge in self._free_bridges(sources):
            rows = [Row(bridge), Row("host bridge (no libvirt network)", "detail")]
            boxes.append(Box(f"br:{bridge}", self.m.host.get_absolute_url(), rows, "bridge"))
        return boxes

    def _draw_uplink_edges(self) -> None:
        for box in self.middle.boxes:
            if box.key.startswith("br:"):
                for nic in sorted(self._bridge_ports(box.key[3:])):
                    self._edge(f"nic:{nic}", box.key)
        for network in self.m.networks:
            for nic in sorted(self._uplinks_of(network)):
                self._edge(f"nic:{nic}", f"net:{network.pk}")

    def _free_bridges(self, sources) -> list[str]:
        """Host bridges that no network names, with those guests hang from that the sync missed."""
        named = {n.bridge for n in self.m.networks if n.bridge}
        found = {str(b) for b in self.m.host.host_bridges or ()} | {k[3:] for k in sources if k.startswith("br:")}
        return sorted(found - named)

    def _network_box(self, network: Network) -> Box:
        rows = [Row(network.name), Row(self._mode_line(network), "detail")]
        subnets = ", ".join(str(ip) for ip in network.ips.all())
        if subnets:
            rows.append(Row(subnets, "detail"))
        css = "network"
        usage = self._dhcp_usage(network)
        if usage:
            leases, size = usage
            warn = leases >= POOL_WARN * size
            rows.append(Row(f"DHCP {leases} of {size} ({round(100 * leases / size)}%)", "warn" if warn else "detail"))
            css += " warn" if warn else ""
        if not network.active:
            rows.append(Row("inactive", "muted"))
            css += " inactive"
        if network.forward_mode == ForwardMode.HOSTDEV:
            rows.extend(self._vf_rows(network))
        return Box(f"net:{network.pk}", network.get_absolute_url(), rows, css, title=network.name)

    def _idle_box(self, networks: list[Network]) -> Box:
        rows = [Row(f"{len(networks)} networks without guests")]
        box = Box("idle", reverse("networks:network_list") + "?" + urlencode({"host": self.m.host.pk}), rows, "idle")
        for network in networks[:IDLE_LINES]:
            subnets = ", ".join(str(ip) for ip in network.ips.all())
            text = " · ".join(part for part in (network.name, network.mode_label, subnets) if part)
            box.anchors[f"net:{network.pk}"] = len(rows)
            self.drawn[f"net:{network.pk}"] = ("idle", f"net:{network.pk}")
            rows.append(Row(text, "", network.get_absolute_url()))
        if len(networks) > IDLE_LINES:
            rows.append(Row(f"+ {len(networks) - IDLE_LINES} more", "more", box.href))
        return box

    def _mode_line(self, network: Network) -> str:
        where = network.bridge or network.forward_dev
        return f"{network.mode_label} · {where}" if where else network.mode_label

    def _dhcp_usage(self, network: Network) -> tuple[int, int] | None:
        size = self.m.range_sizes.get(network.pk, 0)
        if not size:
            return None
        return self.lease_counts.get(network.pk, 0), size

    # ------------------------------------------------------------ VF pools

    def _vf_pools(self) -> dict[str, int]:
        """VF address → the pk of the SR-IOV pool network it belongs to."""
        found: dict[str, int] = {}
        for network in self.m.networks:
            if network.forward_mode == ForwardMode.HOSTDEV:
                for address in self._pool_addresses(network):
                    found.setdefault(address, network.pk)
        return found

    def _pool_addresses(self, network: Network) -> list[str]:
        """As pci.pool_addresses, from the devices already read: the VFs libvirt lists once a
        guest started on the pool, else those of the pool's PF."""
        fwds = list(network.forward_interfaces.all())
        listed = [f.pci_address for f in fwds if f.kind == ForwardInterfaceKind.ADDRESS and f.pci_address]
        if listed:
            return listed
        pf = next((f.dev for f in fwds if f.kind == ForwardInterfaceKind.PF and f.dev), "")
        net = next((d for d in self.m.devices if d.capability == "net" and d.net_interface == pf), None)
        parent = next((d for d in self.m.devices if net and d.capability == "pci" and d.name == net.parent), None)
        return list(parent.vf_addresses or ()) if parent is not None else []

    def _vf_rows(self, network: Network) -> list[Row]:
        addresses = [a for a, pool in self.vf_pool.items() if pool == network.pk]
        passthrough = reverse("networks:host_passthrough", args=[self.m.host.pk])
        rows = [Row(f"{len(addresses)} VFs", "detail")]
        for address in addresses[:VF_LINES]:
            holder = self.m.holders.get(address)
            if holder is None:
                rows.append(Row(f"VF {address} free", "free", passthrough))
            elif holder.guest_id:
                guest_url = reverse("networks:guest_detail", args=[holder.guest_id])
                rows.append(Row(f"VF {address} → {holder.guest_name}", "held", guest_url))
            else:
                rows.append(Row(f"VF {address}: {holder.detail}", "held", passthrough))
        if len(addresses) > VF_LINES:
            rows.append(Row(f"+ {len(addresses) - VF_LINES} more VFs", "more", passthrough))
        return rows

    # ------------------------------------------------------------ guests

    def _place_guests(self, key: str, sources, placed: set[int], top: int) -> None:
        """The guests hanging from box `key` not drawn yet, from `top` down; past GUEST_LIMIT
        the first GUEST_SHOWN and one box for the rest."""
        if key not in sources:
            return
        members = list({guest.pk: guest for guest, _iface in sources[key]}.values())
        shown = members if len(members) <= GUEST_LIMIT else members[:GUEST_SHOWN]
        for guest in shown:
            if guest.pk not in placed:
                placed.add(guest.pk)
                self.guests.add(self._guest_box(guest), at=top)
        if len(members) > len(shown):
            self._more_box(key, len(members) - len(shown), top)

    def _guest_box(self, guest: Guest) -> Box:
        rows = [Row(f"{guest.name} · {guest.get_state_display()}")]
        box = Box(f"guest:{guest.pk}", guest.get_absolute_url(), rows, f"guest {guest.state}", title=guest.name)
        for iface in guest.interfaces.all():
            box.anchors[f"if:{iface.pk}"] = len(rows)
            box.anchors.setdefault(f"mac:{iface.mac}", len(rows))
            rows.append(Row(self._interface_line(iface), "down" if iface.link_state == "down" else "detail"))
        return box

    def _interface_line(self, iface) -> str:
        address = self._address_of(iface)
        where = "" if iface.network_id else f"{iface.type} {iface.source}".strip()
        link = "link down" if iface.link_state == "down" else ""
        return " ".join(part for part in (iface.mac, where, address, link) if part) or iface.type

    def _address_of(self, iface) -> str:
        for network_id, address in self.lease_by_mac.get(iface.mac.lower(), ()) if iface.mac else ():
            if network_id == iface.network_id or not iface.network_id:
                return address
        agent = [str(a) for a in iface.agent_addresses or () if a]
        return agent[0] if agent else ""

    def _more_box(self, key: str, count: int, top: int) -> None:
        network_id = int(key[4:]) if key.startswith("net:") else None
        if network_id is not None:
            href = reverse("networks:network_detail", args=[network_id])
        else:
            href = reverse("networks:guest_list") + "?" + urlencode({"host": self.m.host.pk})
        self.guests.add(Box(f"more:{key}", href, [Row(f"+ {count} more guests", "more")], "more"), at=top)
        self._edge(key, f"more:{key}")

    def _draw_unattached(self, placed: set[int], drawn_sources: set[str]) -> None:
        """Guests with no interface on a box drawn here (none at all, or on what the mirror
        does not know)."""
        rest = [g for g in self.m.guests if g.pk not in placed and not self._hangs(g, drawn_sources)]
        if len(rest) > GUEST_LIMIT:
            href = reverse("networks:guest_list") + "?" + urlencode({"host": self.m.host.pk})
            text = f"+ {len(rest)} guests on no network drawn here"
            self.guests.add(Box("more:unattached", href, [Row(text, "more")], "more"))
            return
        for guest in rest:
            placed.add(guest.pk)
            self.guests.add(self._guest_box(guest))

    def _hangs(self, guest: Guest, drawn_sources: set[str]) -> bool:
        return any(self._source_of(iface) in drawn_sources for iface in guest.interfaces.all())

    # ------------------------------------------------------------ port forwards

    def _draw_forwards(self) -> None:
        drawn = {box.key: box for box in self.guests.boxes}
        # beside their guests, top to bottom; those of guests not drawn last
        forwards = sorted(self.m.forwards, key=lambda f: self._guest_y(drawn, f.guest_id))
        for forward in forwards[:FORWARD_LIMIT]:
            text = f"{forward.protocol} {forward.host_address or '*'}:{forward.host_ports}"
            rows = [Row(text), Row(f"→ {forward.guest_name}:{forward.guest_ports}", "detail")]
            rows.append(Row(forward.get_state_display(), "detail" if forward.enabled else "muted"))
            box = Box(f"fwd:{forward.pk}", forward.get_absolute_url(), rows, f"forward {forward.state}")
            guest = f"guest:{forward.guest_id}"
            self.forwards.add(box, at=drawn[guest].y if guest in drawn else 0)
            if guest in drawn:
                # from the interface with the forward's MAC when the guest still has it
                self.edges.append(Edge(guest, box.key, f"mac:{forward.guest_mac}", None, "forward"))
        extra = len(self.m.forwards) - FORWARD_LIMIT
        if extra > 0:
            href = reverse("networks:port_forward_list") + "?" + urlencode({"host": self.m.host.pk})
            self.forwards.add(Box("more:forwards", href, [Row(f"+ {extra} more port forwards", "more")], "more"))

    @staticmethod
    def _guest_y(drawn: dict[str, Box], guest_id) -> float:
        box = drawn.get(f"guest:{guest_id}")
        return box.y if box is not None else float("inf")
