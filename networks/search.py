"""Finding a MAC, IP, name or UUID across the fleet, in SQL on indexed values.

What a query is decides where it is looked for, and every lookup is an index lookup (migration
0014), so a search costs the same few queries at 5 hosts and at 500:

- a MAC in any case and form (`52:54:00:AB:CD:EF`, `52-54-00-ab-cd-ef`, `5254.00ab.cdef`,
  `525400abcdef`): exactly, in reservations, leases, guest interfaces; the start of one
  (`52:54:00:ab`) matches every MAC that starts so;
- an IP address: exactly in reservations, leases and DNS values, and the subnets that contain
  it (each subnet's first and last address are stored as sortable keys: an index range);
- a UUID: exactly, networks and guests;
- a name: from its start, in any case (`web` finds `web01` and `Web-2`, not `myweb`): hosts,
  networks, guests, reservations, lease host names, DNS names. Substrings in the middle of a
  name are not searched: that needs a scan of every row (`UPPER(name) LIKE '%…%'`).

Results are bounded per kind (`limit`), each kind saying when there were more.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from django.db.models import QuerySet
from django.db.models.functions import Lower

from networks.models import (
    DhcpLease,
    DhcpReservation,
    DnsRecord,
    Guest,
    GuestInterface,
    Host,
    Network,
    NetworkIp,
)
from networks.models.networks import address_key

QUERY_MIN = 2
QUERY_MAX = 253  # a host name, the longest thing one can search for
LIMIT = 50

_HEX = re.compile(r"[0-9a-f]+")
_UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")


class BadQuery(ValueError):
    """The search text cannot be searched for (too short, too long, unprintable)."""


def clean_query(raw: str) -> str:
    query = (raw or "").strip()
    if len(query) < QUERY_MIN:
        raise BadQuery(f"Give at least {QUERY_MIN} characters.")
    if len(query) > QUERY_MAX or not query.isprintable():
        raise BadQuery(f"Give at most {QUERY_MAX} printable characters.")
    return query


@dataclass(frozen=True)
class Query:
    """What the text can be: each field is the normalised form, or empty/None."""

    text: str
    mac: str = ""  # a whole MAC, lower case with colons
    mac_prefix: str = ""  # the start of one (two hex digits at least, colons)
    address: str = ""  # an IP address as the database stores it
    address_version: int = 0
    uuid: str = ""  # lower case with dashes
    name: str = ""  # lower case, for prefix matching
    by_name: bool = True  # look names up too (not for an address or a MAC written with separators)


def parse(text: str) -> Query:
    lowered = text.lower()
    mac = mac_prefix = address = uuid = ""
    version = 0
    digits = re.sub(r"[:\-.]", "", lowered)
    dotted = "." not in lowered or re.fullmatch(r"[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}", lowered)
    if dotted and _HEX.fullmatch(digits) and len(digits) <= 12 and re.fullmatch(r"[0-9a-f:\-.]+", lowered):
        grouped = ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))
        if len(digits) == 12:
            mac = grouped
        elif len(digits) >= 2 and len(digits) % 2 == 0 and _looks_like_mac_start(lowered):
            mac_prefix = grouped
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        address, version = str(parsed), parsed.version
        if version == 6:
            mac = mac_prefix = ""  # "fe80::1" is hex and colons, but an address
    if _UUID.fullmatch(lowered):
        plain = lowered.replace("-", "")
        uuid = f"{plain[:8]}-{plain[8:12]}-{plain[12:16]}-{plain[16:20]}-{plain[20:]}"
    # Bare hex digits may be a MAC or a name ("deadbeefcafe"): both are searched.
    by_name = not address and not (mac and digits != lowered)
    return Query(text, mac, mac_prefix, address, version, uuid, lowered, by_name)


def _looks_like_mac_start(text: str) -> bool:
    """`52:54:00` or `52-54`: hex pairs with separators (a bare `ab` is a name, not a MAC)."""
    return bool(re.fullmatch(r"[0-9a-f]{2}([:\-][0-9a-f]{2})+[:\-]?", text))


def _upper_bound(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _starts_with(queryset: QuerySet, column: str, prefix: str, *, lower: bool) -> QuerySet:
    """Rows whose `column` (lower-cased if `lower`) starts with `prefix`, as an index range
    (`>= prefix AND < next`) that a btree index on the column or on LOWER(column) serves on
    SQLite and PostgreSQL, plus the prefix test itself (exact under any collation). A broad
    prefix matching many rows stops after the first `limit + 1` of them in index order."""
    if lower:
        queryset = queryset.alias(search_key=Lower(column))
        column = "search_key"
    # Read in index order, so that LIMIT stops early however many rows share the prefix.
    return queryset.filter(
        **{f"{column}__gte": prefix, f"{column}__lt": _upper_bound(prefix), f"{column}__startswith": prefix}
    ).order_by(column, "pk")


@dataclass
class Found:
    """Up to `limit` rows of one kind; `more` when there were more."""

    rows: list = field(default_factory=list)
    more: bool = False

    def __bool__(self) -> bool:
        return bool(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def _bounded(querysets, limit: int, key=None) -> Found:
    """The rows of several querysets of one model, without duplicates, at most `limit`
    (one query each, `limit + 1` rows at most each)."""
    seen, rows, more = set(), [], False
    for queryset in querysets:
        fetched = list(queryset[: limit + 1])
        more = more or len(fetched) > limit
        for row in fetched:
            if row.pk not in seen:
                seen.add(row.pk)
                rows.append(row)
    if key is not None:
        rows.sort(key=key)
    if len(rows) > limit:
        rows, more = rows[:limit], True
    return Found(rows, more)


def _scoped(queryset: QuerySet, host_field: str, host_ids) -> QuerySet:
    return queryset if host_ids is None else queryset.filter(**{f"{host_field}__in": host_ids})


# ---------------------------------------------------------------- per kind


def reservations(q: Query, host_ids, limit: int) -> Found:
    base = _scoped(DhcpReservation.objects.select_related("network__host"), "network__host_id", host_ids)
    parts = []
    if q.mac:
        parts.append(base.filter(mac=q.mac))
    elif q.mac_prefix:
        parts.append(_starts_with(base, "mac", q.mac_prefix, lower=False))
    if q.address:
        parts.append(base.filter(address=q.address))
    if q.by_name:
        parts.append(_starts_with(base, "name", q.name, lower=True))
        parts.append(base.filter(host_id=q.text))  # an IPv6 reservation's DUID or id, exactly (indexed)
    return _bounded(parts, limit, key=lambda r: (r.network.host.name, r.network.name, r.address))


def leases(q: Query, host_ids, limit: int) -> Found:
    base = _scoped(DhcpLease.objects.select_related("network__host"), "network__host_id", host_ids)
    parts = []
    if q.mac:
        parts.append(base.filter(mac=q.mac))
    elif q.mac_prefix:
        parts.append(_starts_with(base, "mac", q.mac_prefix, lower=False))
    if q.address:
        parts.append(base.filter(address=q.address))
    if q.by_name:
        parts.append(_starts_with(base, "hostname", q.name, lower=True))
    return _bounded(parts, limit, key=lambda r: (r.network.host.name, r.network.name, r.address))


def interfaces(q: Query, host_ids, limit: int) -> Found:
    base = _scoped(GuestInterface.objects.select_related("guest__host", "network"), "guest__host_id", host_ids)
    if q.mac:
        parts = [base.filter(mac=q.mac)]
    elif q.mac_prefix:
        parts = [_starts_with(base, "mac", q.mac_prefix, lower=False)]
    else:
        return Found()
    return _bounded(parts, limit, key=lambda i: (i.guest.host.name, i.guest.name, i.position))


def dns_records(q: Query, host_ids, limit: int) -> Found:
    base = _scoped(DnsRecord.objects.select_related("network__host"), "network__host_id", host_ids)
    parts = [base.filter(value=q.address)] if q.address else []
    if q.by_name:
        parts.append(_starts_with(base, "name", q.name, lower=True))
    return _bounded(parts, limit, key=lambda d: (d.network.host.name, d.network.name, d.name))


def subnets(q: Query, host_ids, limit: int) -> Found:
    """The subnets containing the address: one index range over the stored bounds."""
    if not q.address:
        return Found()
    key = address_key(q.address)
    family = f"ipv{q.address_version}"
    base = _scoped(NetworkIp.objects.select_related("network__host"), "network__host_id", host_ids)
    containing = base.filter(family=family, subnet_start__lte=key, subnet_end__gte=key).order_by(
        "network__host__name", "network__name", "position"
    )
    found = _bounded([containing], limit)
    # Rows written without their bounds (see NetworkIp.bounds_of) are checked one by one,
    # so that no subnet is missed; there are none once every writer sets the bounds.
    if len(found.rows) < limit:
        address = ipaddress.ip_address(q.address)
        unbounded = base.filter(family=family, subnet_start="")[:1000]
        extra = [ip for ip in unbounded if _contains(ip, address)]
        found.rows.extend(extra[: limit - len(found.rows)])
    return found


def hosts(q: Query, host_ids, limit: int) -> Found:
    base = _scoped(Host.objects.all(), "pk", host_ids)
    parts = [_starts_with(base, "name", q.name, lower=True), _starts_with(base, "hostname", q.name, lower=True)]
    return _bounded(parts, limit, key=lambda h: h.name)


def networks(q: Query, host_ids, limit: int) -> Found:
    base = _scoped(Network.objects.select_related("host").defer("live_xml", "inactive_xml"), "host_id", host_ids)
    parts = []
    if q.uuid:
        parts.append(base.filter(uuid=q.uuid))
    parts.append(_starts_with(base, "name", q.name, lower=True))
    parts.append(base.filter(bridge=q.text))
    return _bounded(parts, limit, key=lambda n: (n.host.name, n.name))


def guests(q: Query, host_ids, limit: int) -> Found:
    base = _scoped(Guest.objects.select_related("host").defer("xml"), "host_id", host_ids)
    parts = []
    if q.uuid:
        parts.append(base.filter(uuid=q.uuid))
    parts.append(_starts_with(base, "name", q.name, lower=True))
    return _bounded(parts, limit, key=lambda g: (g.host.name, g.name))


# ---------------------------------------------------------------- the two searches


@dataclass(frozen=True)
class IpamResults:
    query: str
    reservations: Found
    leases: Found
    interfaces: Found
    dns_records: Found
    subnets: Found

    @property
    def empty(self) -> bool:
        return not any((self.reservations, self.leases, self.interfaces, self.dns_records, self.subnets))


def ipam_search(query: str, limit: int = LIMIT, host_ids: set[int] | None = None) -> IpamResults:
    """Where a MAC, IP or name is used across the fleet (or the hosts `host_ids`): reservations,
    leases, NICs, DNS, subnets."""
    q = parse(query.strip())
    return IpamResults(
        q.text,
        reservations(q, host_ids, limit),
        leases(q, host_ids, limit),
        interfaces(q, host_ids, limit),
        dns_records(q, host_ids, limit),
        subnets(q, host_ids, limit),
    )


@dataclass(frozen=True)
class GlobalResults:
    query: str
    hosts: Found
    networks: Found
    guests: Found
    interfaces: Found
    reservations: Found
    leases: Found
    subnets: Found

    @property
    def empty(self) -> bool:
        return not any(
            (self.hosts, self.networks, self.guests, self.interfaces, self.reservations, self.leases, self.subnets)
        )


def global_search(query: str, limit: int = 20, host_ids: set[int] | None = None) -> GlobalResults:
    """Every host, network, guest, interface, reservation, lease and subnet a MAC, IP, name or
    UUID names, among the hosts `host_ids` (None: every host), at most `limit` of each kind."""
    q = parse(query.strip())
    by_name = q.by_name
    return GlobalResults(
        q.text,
        hosts(q, host_ids, limit) if by_name else Found(),
        networks(q, host_ids, limit) if by_name else Found(),
        guests(q, host_ids, limit) if by_name else Found(),
        interfaces(q, host_ids, limit),
        reservations(q, host_ids, limit),
        leases(q, host_ids, limit),
        subnets(q, host_ids, limit),
    )


def _contains(ip, address) -> bool:
    """Whether a subnet row without stored bounds holds `address`; a row whose address cannot
    be read (the reason it has no bounds) holds nothing."""
    try:
        return address in ipaddress.ip_interface(f"{ip.address}/{ip.prefix}").network
    except ValueError:
        return False
