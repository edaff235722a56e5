"""The fleet overview (the dashboard): a fixed number of aggregate or bounded queries whatever
the fleet's size, never a loop of queries per host or per network.

- hosts by state, the ones that need a look first (unreachable, never synced, with drifted
  networks), a page at a time, with their network and guest counts for that page only;
- networks by mode, and counts;
- DHCP pool usage: the networks whose DHCP ranges are fullest (unexpired leases / addresses in
  the ranges), warned at 90%; computed in SQL from each range's stored size;
- failed operations of the last day; SR-IOV VF pools by use; recent audit events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Case, Count, Exists, IntegerField, OuterRef, Q, Value, When
from django.utils import timezone

from networks.choices import ForwardInterfaceKind, ForwardMode, HostStatus, OperationStatus
from networks.models import (
    AuditEvent,
    DhcpLease,
    DhcpRange,
    ForwardInterface,
    Guest,
    Host,
    Network,
    NetworkIp,
    NodeDevice,
    Operation,
)

HOSTS_PER_PAGE = 25
TOP = 10
POOL_WARN = 0.9
UNSIZED_MAX = 2000  # ranges written without their size, sized here one by one at most


def _scoped(queryset, host_ids, field: str = "host_id"):
    return queryset if host_ids is None else queryset.filter(**{f"{field}__in": host_ids})


# ---------------------------------------------------------------- hosts


def host_state_counts(host_ids) -> dict[str, int]:
    rows = _scoped(Host.objects, host_ids, "pk").order_by().values("status").annotate(n=Count("pk"))
    counts = dict.fromkeys(HostStatus.values, 0)
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


def hosts_page(host_ids, page_number):
    """Hosts needing a look first: unreachable, not synced yet, with drifted networks, then the
    rest; by name within each. Network and guest counts for the page's hosts only."""
    drifted = Network.objects.filter(host=OuterRef("pk"), drifted=True)
    rank = Case(
        When(status=HostStatus.UNREACHABLE, then=Value(0)),
        When(status=HostStatus.UNKNOWN, then=Value(1)),
        When(has_drift=True, then=Value(2)),
        default=Value(3),
        output_field=IntegerField(),
    )
    hosts = (
        _scoped(Host.objects, host_ids, "pk")
        .only("pk", "name", "status", "last_error", "last_sync_at", "libvirt_version")
        .annotate(has_drift=Exists(drifted))
        .annotate(rank=rank)
        .order_by("rank", "name")
    )
    page = Paginator(hosts, HOSTS_PER_PAGE).get_page(page_number)
    ids = [host.pk for host in page.object_list]
    networks = dict(Network.objects.filter(host_id__in=ids).order_by().values_list("host_id").annotate(n=Count("pk")))
    guests = dict(Guest.objects.filter(host_id__in=ids).order_by().values_list("host_id").annotate(n=Count("pk")))
    for host in page.object_list:
        host.network_count = networks.get(host.pk, 0)
        host.guest_count = guests.get(host.pk, 0)
    return page


# ---------------------------------------------------------------- networks


def network_counts(host_ids) -> dict:
    networks = _scoped(Network.objects, host_ids)
    totals = networks.order_by().aggregate(
        total=Count("pk"), active=Count("pk", filter=Q(active=True)), drifted=Count("pk", filter=Q(drifted=True))
    )
    modes = networks.order_by().values("forward_mode").annotate(n=Count("pk")).order_by("-n", "forward_mode")
    labels = dict(ForwardMode.choices)
    by_mode = [(labels.get(row["forward_mode"], row["forward_mode"]), row["forward_mode"], row["n"]) for row in modes]
    return {**totals, "by_mode": by_mode}


def drifted_networks(host_ids):
    return (
        _scoped(Network.objects, host_ids, "host_id")
        .filter(drifted=True)
        .select_related("host")
        .only("pk", "name", "forward_mode", "bridge", "active", "host__name")
        .order_by("host__name", "name")[:TOP]
    )


# ---------------------------------------------------------------- DHCP pools


@dataclass(frozen=True)
class PoolUsage:
    network: Network
    leases: int
    size: int

    @property
    def ratio(self) -> float:
        return self.leases / self.size if self.size else 0.0

    @property
    def percent(self) -> int:
        return round(100 * self.ratio)

    @property
    def warn(self) -> bool:
        return self.ratio >= POOL_WARN

    @property
    def high(self) -> int:
        """Where the meter turns to a warning (90% of the pool)."""
        return max(1, int(self.size * POOL_WARN))


def fullest_pools(host_ids, top: int = TOP) -> list[PoolUsage]:
    """The `top` networks whose DHCP ranges are fullest: unexpired leases over the addresses of
    their ranges. The database groups the leases and the range sizes (two hash aggregates over
    the whole fleet's rows, no query per network) and ranks them; then one query reads the
    `top` networks."""
    now = timezone.now()
    lease, dhcp_range, ip, network = (
        connection.ops.quote_name(model._meta.db_table) for model in (DhcpLease, DhcpRange, NetworkIp, Network)
    )
    scope, params = "", [now]
    if host_ids is not None:
        if not host_ids:
            return []
        marks = ", ".join(["%s"] * len(host_ids))
        scope = f"INNER JOIN {network} n ON n.id = l.network_id AND n.host_id IN ({marks})"
        params.extend(sorted(host_ids))
    sql = f"""
        SELECT l.network_id, l.n, s.total
        FROM (SELECT network_id, COUNT(*) AS n FROM {lease}
              WHERE expires_at IS NULL OR expires_at > %s GROUP BY network_id) l
        INNER JOIN (SELECT ip.network_id AS network_id, SUM(r.size) AS total
                    FROM {dhcp_range} r INNER JOIN {ip} ip ON ip.id = r.ip_id GROUP BY ip.network_id) s
            ON s.network_id = l.network_id
        {scope}
        WHERE s.total > 0
        ORDER BY l.n * 1.0 / s.total DESC, l.network_id
        LIMIT %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, top])
        ranked = cursor.fetchall()
    networks = Network.objects.select_related("host").only("pk", "name", "host__name").in_bulk([r[0] for r in ranked])
    pools = {pk: PoolUsage(networks[pk], count, int(total)) for pk, count, total in ranked if pk in networks}
    for extra in _unsized_pools(host_ids, now):  # a network with sized and unsized ranges: add them up
        known = pools.get(extra.network.pk)
        pools[extra.network.pk] = PoolUsage(extra.network, extra.leases, extra.size + (known.size if known else 0))
    pools = list(pools.values())
    pools.sort(key=lambda pool: (-pool.ratio, pool.network.host.name, pool.network.name))
    return pools[:top]


def _unsized_pools(host_ids, now) -> list[PoolUsage]:
    """Networks with ranges written without their stored size (see DhcpRange.size_of): sized
    here, at most UNSIZED_MAX ranges; none once every writer stores the size."""
    ranges = _scoped(DhcpRange.objects.filter(size__isnull=True), host_ids, "ip__network__host_id")
    rows = list(ranges.order_by().values_list("ip__network_id", "start", "end")[:UNSIZED_MAX])
    if not rows:
        return []
    sizes: dict[int, int] = {}
    for network_id, start, end in rows:
        sizes[network_id] = sizes.get(network_id, 0) + DhcpRange.size_of(start, end)
    leases = dict(
        DhcpLease.objects.filter(network_id__in=sizes)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by()
        .values_list("network_id")
        .annotate(n=Count("pk"))
    )
    networks = Network.objects.filter(pk__in=[pk for pk in sizes if leases.get(pk)]).select_related("host")
    return [
        PoolUsage(network, leases[network.pk], sizes[network.pk])
        for network in networks.only("pk", "name", "host__name")
        if sizes[network.pk]
    ]


# ---------------------------------------------------------------- operations, VF pools, audit


def failed_operations(host_ids, top: int = TOP) -> tuple[int, list]:
    since = timezone.now() - timedelta(days=1)
    failed = _scoped(Operation.objects, host_ids).filter(status=OperationStatus.FAILED, created_at__gte=since)
    rows = list(
        failed.only("pk", "kind", "status", "host_name", "target_name", "error", "created_at").order_by(
            "-created_at", "-id"
        )[:top]
    )
    return failed.count(), rows


@dataclass(frozen=True)
class VfPoolUsage:
    network: Network
    used: int  # libvirt's connection count of the pool
    total: int  # the pool's VFs: libvirt's list once a guest started, else the PF's VFs

    @property
    def full(self) -> bool:
        return self.total > 0 and self.used >= self.total


def vf_pools(host_ids, top: int = TOP) -> list[VfPoolUsage]:
    """The SR-IOV VF pools most in use (three queries; the pool's page has the details)."""
    pools = list(
        _scoped(Network.objects, host_ids)
        .filter(forward_mode=ForwardMode.HOSTDEV)
        .select_related("host")
        .only("pk", "name", "connections", "host_id", "host__name")
        .order_by("-connections", "host__name", "name")[:top]
    )
    ids = [pool.pk for pool in pools]
    listed = dict(
        ForwardInterface.objects.filter(network_id__in=ids, kind=ForwardInterfaceKind.ADDRESS)
        .order_by()
        .values_list("network_id")
        .annotate(n=Count("pk"))
    )
    pf_of = dict(
        ForwardInterface.objects.filter(network_id__in=ids, kind=ForwardInterfaceKind.PF).values_list(
            "network_id", "dev"
        )
    )
    host_of = {pool.pk: pool.host_id for pool in pools}
    wanted = Q(pk__in=[])
    for network_id, dev in pf_of.items():
        wanted |= Q(host_id=host_of[network_id], net_interface=dev)
    vfs = {
        (host_id, dev): len(addresses or ())
        for host_id, dev, addresses in NodeDevice.objects.filter(wanted).values_list(
            "host_id", "net_interface", "vf_addresses"
        )
    }
    result = []
    for pool in pools:
        total = listed.get(pool.pk) or vfs.get((pool.host_id, pf_of.get(pool.pk, "")), 0)
        result.append(VfPoolUsage(pool, pool.connections, total))
    return result


def recent_audit(events, top: int = TOP) -> list[AuditEvent]:
    """The newest of `events` (the user's visible audit events)."""
    return list(
        events.only("pk", "created_at", "actor_name", "action", "host_name", "object_name", "message").order_by(
            "-created_at", "-id"
        )[:top]
    )
