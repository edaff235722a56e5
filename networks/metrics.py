"""What kvmweb knows, as Prometheus metrics: read from the mirror at each scrape.

Every value is one aggregate query over the mirror (no per-host or per-network loop of
queries), so a scrape costs the same few queries whatever the fleet's size, and never
calls a hypervisor. Only the hosts the requesting user may see are reported.
"""

from __future__ import annotations

import ipaddress

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.utils import timezone
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.exposition import generate_latest

from networks.choices import HostStatus, OperationStatus
from networks.models import DhcpLease, DhcpRange, Host, Operation

FINISHED = (OperationStatus.SUCCEEDED, OperationStatus.FAILED)


def metrics_text(host_ids: set[int] | None) -> bytes:
    """The exposition text for the hosts in `host_ids` (None: every host)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MirrorCollector(host_ids))
    return generate_latest(registry)


class MirrorCollector:
    def __init__(self, host_ids: set[int] | None):
        self.host_ids = host_ids

    def _scope(self, queryset, field: str):
        return queryset if self.host_ids is None else queryset.filter(**{f"{field}__in": self.host_ids})

    def collect(self):
        yield from self._operations()
        yield from self._hosts()
        yield from self._dhcp_pools()

    def _operations(self):
        operations = self._scope(Operation.objects, "host_id")
        counts = GaugeMetricFamily(
            "kvmweb_operations", "Operations recorded, by kind and status", labels=["kind", "status"]
        )
        for row in operations.order_by().values("kind", "status").annotate(n=Count("id")):
            counts.add_metric([row["kind"], row["status"]], row["n"])
        yield counts

        took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        finished = operations.filter(status__in=FINISHED, started_at__isnull=False, finished_at__isnull=False)
        durations = SummaryMetricFamily(
            "kvmweb_operation_duration_seconds", "Run time of finished operations, by kind", labels=["kind"]
        )
        for row in finished.order_by().values("kind").annotate(n=Count("id"), total=Sum(took)):
            durations.add_metric([row["kind"]], count_value=row["n"], sum_value=row["total"].total_seconds())
        yield durations

    def _hosts(self):
        now = timezone.now()
        up = GaugeMetricFamily(
            "kvmweb_host_up", "1 if the host answered its last sync or its event watcher, else 0", labels=["host"]
        )
        age = GaugeMetricFamily(
            "kvmweb_host_sync_age_seconds", "Seconds since the host's last successful sync", labels=["host"]
        )
        worker = GaugeMetricFamily(
            "kvmweb_host_worker_age_seconds", "Seconds since the host's own worker was last seen", labels=["host"]
        )
        watcher = GaugeMetricFamily(
            "kvmweb_host_watcher_age_seconds",
            "Seconds since the host's event watcher last confirmed it follows the host",
            labels=["host"],
        )
        lag = GaugeMetricFamily(
            "kvmweb_host_event_lag_seconds",
            "Event-watcher lag: seconds from the host's last libvirt event to the mirror written",
            labels=["host"],
        )
        rows = self._scope(Host.objects, "pk").order_by("name")
        for name, status, synced, seen, watched, lag_seconds in rows.values_list(
            "name", "status", "last_sync_at", "worker_seen_at", "watched_at", "event_lag_seconds"
        ):
            up.add_metric([name], 1 if status == HostStatus.REACHABLE else 0)
            if synced:
                age.add_metric([name], (now - synced).total_seconds())
            if seen:
                worker.add_metric([name], (now - seen).total_seconds())
            if watched:
                watcher.add_metric([name], (now - watched).total_seconds())
            if lag_seconds is not None:
                lag.add_metric([name], lag_seconds)
        yield from (up, age, worker, watcher, lag)

    def _dhcp_pools(self):
        labels = ["host", "network"]
        size = GaugeMetricFamily("kvmweb_dhcp_pool_size", "Addresses in the network's DHCP ranges", labels=labels)
        leases = GaugeMetricFamily("kvmweb_dhcp_pool_leases", "Unexpired DHCP leases on the network", labels=labels)
        sizes: dict[tuple[str, str], int] = {}
        ranges = self._scope(DhcpRange.objects, "ip__network__host_id").order_by()
        for host, network, start, end in ranges.values_list(
            "ip__network__host__name", "ip__network__name", "start", "end"
        ):
            key = (host, network)
            sizes[key] = sizes.get(key, 0) + _range_size(start, end)
        for key, total in sorted(sizes.items()):
            size.add_metric(list(key), total)
        now = timezone.now()
        current = self._scope(DhcpLease.objects, "network__host_id").filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )
        for row in (
            current.order_by()
            .values("network__host__name", "network__name")
            .annotate(n=Count("id"))
            .order_by("network__host__name", "network__name")
        ):
            leases.add_metric([row["network__host__name"], row["network__name"]], row["n"])
        yield from (size, leases)


def _range_size(start: str, end: str) -> int:
    """Addresses from start to end inclusive; 0 for a range the mirror holds reversed or mixed."""
    try:
        first, last = ipaddress.ip_address(start), ipaddress.ip_address(end)
    except ValueError:
        return 0
    if first.version != last.version or last < first:
        return 0
    return int(last) - int(first) + 1
