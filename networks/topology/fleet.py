"""The fleet picture: every host the user may see as a box with its network and guest counts,
grouped by what needs a look first (unreachable, not synced yet, with drifted networks, fine),
in a grid. Three queries whatever the fleet's size."""

from __future__ import annotations

from django.db.models import Count, Exists, OuterRef
from django.urls import reverse

from networks.choices import HostStatus
from networks.models import Guest, Host, Network

from .svg import GAP, Box, Row, render

PER_ROW = 6
BOX_WIDTH = 200
GROUP_GAP = 18  # between a group's last row and the next group's heading

GROUPS = [
    ("unreachable", "Unreachable"),
    ("unknown", "Not synced yet"),
    ("drifted", "Reachable, with drifted networks"),
    ("fine", "Reachable"),
]


def fleet_hosts(host_ids) -> list[Host]:
    hosts = Host.objects.all() if host_ids is None else Host.objects.filter(pk__in=host_ids)
    drifted = Network.objects.filter(host=OuterRef("pk"), drifted=True)
    hosts = list(hosts.only("pk", "name", "status", "last_error").annotate(has_drift=Exists(drifted)).order_by("name"))
    ids = [host.pk for host in hosts] if host_ids is not None else None
    networks = _counts(Network.objects, ids)
    guests = _counts(Guest.objects, ids)
    for host in hosts:
        host.network_count = networks.get(host.pk, 0)
        host.guest_count = guests.get(host.pk, 0)
    return hosts


def _counts(manager, ids) -> dict[int, int]:
    rows = manager.all() if ids is None else manager.filter(host_id__in=ids)
    return dict(rows.order_by().values_list("host_id").annotate(n=Count("pk")))


def group_of(host: Host) -> str:
    if host.status == HostStatus.UNREACHABLE:
        return "unreachable"
    if host.status == HostStatus.UNKNOWN:
        return "unknown"
    return "drifted" if host.has_drift else "fine"


def fleet_svg(host_ids) -> str:
    hosts = fleet_hosts(host_ids)
    grid = _Grid()
    for group, heading in GROUPS:
        members = [host for host in hosts if group_of(host) == group]
        if members:
            grid.group(f"{heading} ({len(members)})", group, members)
    return render(grid.boxes, [], "The fleet's hosts", "fleet-topology")


class _Grid:
    """Boxes in rows of PER_ROW under each group's heading."""

    def __init__(self):
        self.boxes: list[Box] = []
        self.y = GAP

    def group(self, heading: str, css: str, hosts: list[Host]) -> None:
        title = Box(f"heading:{css}", "", [Row(heading, "heading")], "group-heading")
        title.x, title.y, title.width = GAP, self.y, PER_ROW * (BOX_WIDTH + GAP) - GAP
        self.boxes.append(title)
        self.y += title.height + GAP
        for start in range(0, len(hosts), PER_ROW):
            row = [_host_box(host, css) for host in hosts[start : start + PER_ROW]]
            for index, box in enumerate(row):
                box.x, box.y, box.width = GAP + index * (BOX_WIDTH + GAP), self.y, BOX_WIDTH
            self.boxes.extend(row)
            self.y += row[0].height + GAP
        self.y += GROUP_GAP


MARKS = {"unreachable": "unreachable", "unknown": "not synced yet", "drifted": "drifted networks", "fine": "reachable"}


def _host_box(host: Host, group: str) -> Box:
    rows = [Row(host.name), Row(f"{host.network_count} networks · {host.guest_count} guests", "detail")]
    rows.append(Row(MARKS[group], f"mark {group}"))
    href = reverse("networks:host_topology", args=[host.pk])
    title = f"{host.name}: {host.last_error}" if host.last_error else host.name
    return Box(f"host:{host.pk}", href, rows, f"host {group}", title=title)
