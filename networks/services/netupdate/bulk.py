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

# Measured on libvirt 9.0 over one connection (docs/libvirt.md, "net-update").
LIVE_UPDATE_SECONDS = {"firewalled": 0.39, "plain": 0.02}
CONFIG_UPDATE_SECONDS = 0.003
MAX_ROWS = 5000
COLUMNS = ("mac", "ip", "name")
CELL_MAX = 253  # the longest value of any column: a host name
MAX_CSV_CHARS = 2_000_000  # MAX_ROWS rows of the longest cells, with room to spare
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
    present: bool = False  # the network already has exactly this reservation: not sent again

    @property
    def ok(self) -> bool:
        return self.plan is not None


def parse_csv(text: str) -> list[tuple[int, dict]]:
    """Rows of `mac,ip,name` (a header line naming them is optional; blank lines skipped).

    A file that is not such CSV is refused whole, with the line that is wrong: a bare carriage
    return, a NUL, a cell the csv module refuses, a cell longer than CELL_MAX, a fourth column.
    """
    if len(text) > MAX_CSV_CHARS:
        raise _csv_error(f"At most {MAX_CSV_CHARS:,} characters at once; this is {len(text):,}.")
    reader = csv.reader(io.StringIO(text.strip()))
    rows = []
    try:
        for line, cells in enumerate(reader, start=1):
            rows.extend(_row(line, cells))
            if len(rows) > MAX_ROWS:
                raise _csv_error(f"At most {MAX_ROWS} rows at once.")
    except csv.Error as error:
        raise _csv_error(f"Line {reader.line_num}: this is not CSV of mac,ip,name ({error}).") from None
    return rows


def _row(line: int, cells: list[str]) -> list[tuple[int, dict]]:
    cells = [c.strip() for c in cells]
    while cells and not cells[-1]:  # spreadsheets pad rows with empty cells
        cells.pop()
    if not cells or (line == 1 and cells[:2] == ["mac", "ip"]):
        return []
    if len(cells) > len(COLUMNS):
        raise _csv_error(f"Line {line} has {len(cells)} columns; a row is mac,ip,name.")
    if any(len(cell) > CELL_MAX for cell in cells):
        raise _csv_error(f"Line {line}: a cell has at most {CELL_MAX} characters.")
    cells += [""] * (len(COLUMNS) - len(cells))
    return [(line, dict(zip(COLUMNS, cells, strict=True)))]


def _csv_error(message: str) -> ValidationError:
    return ValidationError({"csv": [message]})


def with_host(info: NetworkInfo, parent_index: int, host: DhcpHost) -> NetworkInfo:
    """`info` as it will be once `host` is added: later rows are checked against earlier ones."""
    ips = list(info.ips)
    ips[parent_index] = replace(ips[parent_index], dhcp_hosts=ips[parent_index].dhcp_hosts + (host,))
    return replace(info, ips=tuple(ips))


def is_present(values: dict, info: NetworkInfo) -> bool:
    """Whether `info` already holds exactly the reservation of this row (MAC or id, IP and
    name as libvirt writes them). Such a row of an import run again is done, not an error."""
    try:
        index, _ip, host = DhcpHostSection()._checked_host(values, info)  # the row, normalised
    except ValidationError:
        return False
    return host in info.ips[index].dhcp_hosts


def check_rows(rows: list[tuple[int, dict]], info: NetworkInfo) -> tuple[list[BulkRow], NetworkInfo]:
    """Validate every row as if the ones before it were already applied."""
    section, checked = DhcpHostSection(), []
    for line, values in rows:
        if is_present(values, info):
            checked.append(BulkRow(line, values, present=True))
            continue
        try:
            plan = section.plan("add-last", values, info)
        except ValidationError as error:
            checked.append(BulkRow(line, values, errors=error.message_dict))
            continue
        info = with_host(info, plan.parent_index, xml.parse_dhcp_host(xml.parse(plan.fragment)))
        checked.append(BulkRow(line, values, plan))
    return checked, info


def line_ranges(lines: list[int]) -> list[list[int]]:
    """[[first, last], ...] of sorted line numbers: a checkpoint stays small for 5,000 rows."""
    ranges: list[list[int]] = []
    for line in lines:
        if ranges and line == ranges[-1][1] + 1:
            ranges[-1][1] = line
        else:
            ranges.append([line, line])
    return ranges


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
