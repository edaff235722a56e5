"""Importing many DHCP reservations at once, and exporting them.

A live DHCP-host update makes libvirt reload the network's firewall rules, about 0.39 s
each on a real NAT network, so 1,000 reservations applied live take minutes. The import
predicts that cost and offers the two strategies an admin can choose between.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, replace

from django.core.exceptions import ValidationError

from networks.hypervisor import xml
from networks.hypervisor.types import DhcpHost, NetworkInfo

from .common import UpdatePlan
from .dhcp import DhcpHostSection

# Measured on libvirt 9.0 over one connection (LIBVIRT.md, "Costs measured here").
LIVE_UPDATE_SECONDS = {"firewalled": 0.39, "plain": 0.02}
CONFIG_UPDATE_SECONDS = 0.003
MAX_ROWS = 5000
RESTART_SECONDS = 1.0  # destroy + start + re-plugging a few guests, measured on a real host
# live: one live+config update per row, no interruption. config: persistent config only,
# applied at the next restart. restart: config only, then one restart that re-plugs guests.
STRATEGIES = ("live", "config", "restart")


@dataclass(frozen=True)
class BulkRow:
    line: int
    values: dict
    plan: UpdatePlan | None = None
    errors: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.plan is not None


def parse_csv(text: str) -> list[tuple[int, dict]]:
    """Rows of `mac,ip,name` (a header line naming them is optional; blank lines skipped)."""
    reader = csv.reader(io.StringIO(text.strip()))
    rows = []
    for line, cells in enumerate(reader, start=1):
        cells = [c.strip() for c in cells]
        if not any(cells) or (line == 1 and cells[:2] == ["mac", "ip"]):
            continue
        cells += [""] * (3 - len(cells))
        rows.append((line, {"mac": cells[0], "ip": cells[1], "name": cells[2]}))
    if len(rows) > MAX_ROWS:
        raise ValidationError({"csv": [f"At most {MAX_ROWS} rows at once; this file has {len(rows)}."]})
    return rows


def with_host(info: NetworkInfo, parent_index: int, host: DhcpHost) -> NetworkInfo:
    """`info` as it will be once `host` is added: later rows are checked against earlier ones."""
    ips = list(info.ips)
    ips[parent_index] = replace(ips[parent_index], dhcp_hosts=ips[parent_index].dhcp_hosts + (host,))
    return replace(info, ips=tuple(ips))


def check_rows(rows: list[tuple[int, dict]], info: NetworkInfo) -> tuple[list[BulkRow], NetworkInfo]:
    """Validate every row as if the ones before it were already applied."""
    section, checked = DhcpHostSection(), []
    for line, values in rows:
        try:
            plan = section.plan("add-last", values, info)
        except ValidationError as error:
            checked.append(BulkRow(line, values, errors=error.message_dict))
            continue
        info = with_host(info, plan.parent_index, xml.parse_dhcp_host(xml.parse(plan.fragment)))
        checked.append(BulkRow(line, values, plan))
    return checked, info


def predicted_seconds(count: int, *, forward_mode: str, strategy: str) -> float:
    if strategy == "config":
        return count * CONFIG_UPDATE_SECONDS
    if strategy == "restart":
        return count * CONFIG_UPDATE_SECONDS + RESTART_SECONDS
    kind = "firewalled" if forward_mode in {"nat", "route", ""} else "plain"
    return count * LIVE_UPDATE_SECONDS[kind]


def export_csv(reservations) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["mac", "ip", "name"])
    for reservation in reservations:
        writer.writerow([reservation.mac or reservation.host_id, reservation.address, reservation.name])
    return out.getvalue()
