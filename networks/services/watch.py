"""A watcher per host: the mirror follows libvirt events within moments, not at the next sync.

A HostWatcher subscribes to its host's events (networks.hypervisor.events) over the host's
connection of this process (connections.host_connection), and on each event re-reads only
the object named and mirrors it: a network, a guest, or the host's node devices. An object
that no longer exists on the host leaves the mirror. Bursts are coalesced: events for the
same object arriving within DEBOUNCE_SECONDS are handled once.

libvirt emits no event for a net-update (a reservation added with `virsh net-update`), so
every KVMWEB_XML_DIGEST_SECONDS the watcher also reads each network's live XML, and the
persistent XML of a persistent network (`net-update --config` changes only that): a few cheap
calls per network. It compares their digest with that of the mirrored XML; only networks whose
XML changed are read fully and mirrored again. The digests live in the watcher's memory
only: the mirror's row is read again just when a digest differs.

Where a host worker runs, its network hook sees each net-update (libvirt runs it with
`NAME updated begin -`) and leaves a marker in a spool directory (`updates_dir`,
KVMWEB_NETWORK_UPDATES_DIR); the host worker's watcher takes the markers every
SPOOL_POLL_SECONDS and re-reads just those networks, so a net-update shows within about a
second; its lag is counted from the marker's mtime, the poll's wait included. A spool that
cannot be read (a file or a link in its place, a marker that cannot be taken) is logged once
and skipped, never holding up the XML check, which stays, for the hosts watched from afar and
for what a hook missed (one installed but not loaded yet, a name it refused).

When the connection closes (the daemon died, or keepalive gave up on a silent host) the host
is marked unreachable at once, with the reason, and the watcher reconnects after 1, 2, 4 …
seconds (at most KVMWEB_WATCH_RETRY_MAX_SECONDS apart). On every (re)connect, including the
watcher's own start, it requests a host sync (source "system"): that reconciliation catches
what happened while nobody listened, so a watcher survives the restart of its process. The
periodic sync (KVMWEB_SYNC_INTERVAL) stays as a second reconciliation.

Where the watchers run: inside a host's own host worker (scripts/host-worker.sh) for that
host, else in `manage.py watchhosts` (one thread per host).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Q
from django.utils import timezone

from networks.choices import AuditSource, HostStatus
from networks.forwarding.rules import take_network_update_times
from networks.hypervisor import events, inventory
from networks.hypervisor.client import libvirt_errors
from networks.hypervisor.errors import HostUnreachable, HypervisorError, NotFound, brief_message
from networks.models import GuestInterface, Host, Network

from .connections import host_connection
from .operations import host_sync_request
from .sync import lock_host, mirror_devices, mirror_guest, mirror_network

logger = logging.getLogger(__name__)

DEBOUNCE_SECONDS = 0.2
SPOOL_POLL_SECONDS = 1.0
RETRY_FIRST_SECONDS = 1.0


def xml_digest(live: str, inactive: str) -> str:
    """One digest of a network's live and persistent XML (a transient network's are the same)."""
    return hashlib.sha256(f"{live}\0{inactive}".encode()).hexdigest()


# ---------------------------------------------------------------- mirroring one object by name


def mirror_network_by_name(host: Host, conn, name: str) -> bool:
    """Read network `name` from the host and mirror it; remove it from the mirror when the host
    has no such network. True if the network exists on the host.

    The write holds the host's lock (as a sync's does) and stamps the row's `synced_at` with
    the time of this read, also when the row was found unchanged: a sync whose read began
    earlier leaves the row alone."""
    read_at = timezone.now()
    try:
        with libvirt_errors():
            info = inventory.read_network(conn.networkLookupByName(name))
    except NotFound:
        with transaction.atomic():
            lock_host(host.pk)
            host.networks.filter(name=name).delete()
        return False
    with transaction.atomic():
        lock_host(host.pk)
        network = mirror_network(host, info, read_at)
        Network.objects.filter(pk=network.pk, synced_at__lt=read_at).update(synced_at=read_at)
        # Interfaces of guests mirrored while the network was unknown point at it by name.
        GuestInterface.objects.filter(guest__host=host, network__isnull=True, type="network", source=name).update(
            network=network
        )
    return True


def mirror_guest_by_name(host: Host, conn, name: str) -> bool:
    """Read guest `name` from the host and mirror it with its interfaces; remove it from the
    mirror when the host has no such domain. True if the guest exists on the host. (Locked and
    stamped as mirror_network_by_name.)"""
    read_at = timezone.now()
    try:
        with libvirt_errors():
            dom = conn.lookupByName(name)
            warnings: list[str] = []
            info = inventory.GuestAgentReader(conn, warnings).completed(dom, inventory.read_guest(dom))
    except NotFound:
        with transaction.atomic():
            lock_host(host.pk)
            host.guests.filter(name=name).delete()
        return False
    with transaction.atomic():
        lock_host(host.pk)
        networks = {network.name: network for network in Network.objects.filter(host=host).only("pk", "name")}
        mirror_guest(host, info, networks, read_at)
    return True


def mirror_node_devices(host: Host, conn) -> int:
    """Read the host's node devices again and mirror them as a sync does: rows updated in
    place, VFs linked to their PF. Returns how many there are."""
    warnings: list[str] = []
    with libvirt_errors():
        devices = inventory.read_devices(conn, warnings)
    with transaction.atomic():
        lock_host(host.pk)
        mirror_devices(host, devices)
    return len(devices)


# ---------------------------------------------------------------- the watcher


class HostWatcher:
    """Follows one host. `run()` loops until `stop` is set; tests drive the steps themselves:
    `connect()`, then `process(timeout)` and `check_xml()`."""

    def __init__(
        self,
        host_id: int | None = None,
        *,
        host_name: str | None = None,
        stop: threading.Event | None = None,
        digest_seconds: float | None = None,
        retry_max_seconds: float | None = None,
        debounce_seconds: float = DEBOUNCE_SECONDS,
        updates_dir: Path | None = None,
    ):
        self.host_id = host_id
        self.host_name = host_name  # without host_id: the host is looked up by name at each connect until found
        self.stop = stop or threading.Event()
        self.digest_seconds = digest_seconds if digest_seconds is not None else settings.KVMWEB_XML_DIGEST_SECONDS
        self.retry_max = retry_max_seconds if retry_max_seconds is not None else settings.KVMWEB_WATCH_RETRY_MAX_SECONDS
        self.debounce = debounce_seconds
        self.updates_dir = updates_dir  # the network hook's markers (host worker only)
        self.events: queue.Queue = queue.Queue()
        self.host: Host | None = None
        self.conn = None
        self.subscription: events.Subscription | None = None
        self.digests: dict[str, str] = {}
        self.connects = 0

    # -- connection

    def connect(self) -> bool:
        """Open (or reuse) the host's connection, subscribe, mark the host reachable and request
        a reconciliation sync. False (host marked unreachable) if the host cannot be reached,
        or while a watcher given a host name finds no such host (it is looked up again)."""
        if self.host_id is None:
            found = Host.objects.filter(name=self.host_name).only("pk").first()
            if found is None:
                logger.warning("event watcher: no host named %s yet", self.host_name)
                return False
            self.host_id = found.pk
        self.host = Host.objects.filter(pk=self.host_id).first()
        if self.host is None:
            self.stop.set()  # the host was deleted: nothing left to watch
            return False
        try:
            conn = host_connection(self.host)
            self.subscription = events.subscribe(conn, self.events.put, keepalive=self._keepalive())
            self.digests = self._mirrored_digests()
        except HypervisorError as error:
            self.close()
            self._mark_unreachable(f"Event watcher cannot connect: {error}")
            return False
        except BaseException:  # the database away: no subscription left behind, run() retries
            self.close()
            raise
        self.conn = conn
        self.connects += 1
        Host.objects.filter(pk=self.host_id).update(
            status=HostStatus.REACHABLE, last_error="", watched_at=timezone.now()
        )
        host_sync_request(
            host=self.host, actor=None, source=AuditSource.SYSTEM,
            message="reconciliation: the event watcher (re)connected to the host",
        )  # fmt: skip
        logger.info("watching %s", self.host.name)
        return True

    def _keepalive(self) -> tuple[int, int]:
        from networks.hypervisor.client import KEEPALIVE_COUNT, keepalive_interval

        return keepalive_interval(settings.KVMWEB_HOST_CALL_TIMEOUT), KEEPALIVE_COUNT

    def lost(self, reason: str) -> None:
        """The connection is gone: mark the host unreachable now and forget the connection."""
        if self.subscription is not None:
            self.subscription.cancel()
        self.subscription = None
        self.conn = None
        self._mark_unreachable(f"Connection lost: {reason}")
        logger.warning("lost %s: %s", self.host.name if self.host else self.host_id, reason)

    def _mark_unreachable(self, message: str) -> None:
        Host.objects.filter(pk=self.host_id).update(status=HostStatus.UNREACHABLE, last_error=brief_message(message))

    def close(self) -> None:
        if self.subscription is not None:
            self.subscription.cancel()
        self.subscription = None
        self.conn = None

    # -- events

    def process(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for an event; then take whatever else arrives within the
        debounce window and mirror each named object once. Returns how many objects were
        mirrored (or removed)."""
        try:
            first = self.events.get(timeout=timeout)
        except queue.Empty:
            return 0
        arrived = time.monotonic()
        batch = [first]
        deadline = arrived + self.debounce
        while (left := deadline - time.monotonic()) > 0:
            try:
                batch.append(self.events.get(timeout=left))
            except queue.Empty:
                break
        while True:  # and anything already waiting
            try:
                batch.append(self.events.get_nowait())
            except queue.Empty:
                break
        return self._handle(batch, arrived)

    def _handle(self, batch: list, arrived: float) -> int:
        closed = [event for event in batch if isinstance(event, events.ConnectionClosed)]
        if closed and all(event.local for event in closed):
            self.close()  # this process closed it: open a new one, the host is fine
            return 0
        if closed:
            self.lost(next(event.reason for event in closed if not event.local))
            return 0
        if self.conn is None:
            return 0
        wanted: dict[tuple[str, str], None] = {}
        for event in batch:
            if isinstance(event, events.NetworkEvent):
                wanted[("network", event.name)] = None
            elif isinstance(event, events.GuestEvent):
                wanted[("guest", event.name)] = None
            elif isinstance(event, events.NodeDeviceEvent):
                wanted[("devices", "")] = None
        done = 0
        for kind, name in wanted:
            try:
                self._mirror_one(kind, name)
                done += 1
            except HostUnreachable as error:
                self.lost(str(error))
                return done
            except Exception:
                logger.exception("mirroring %s %s of host %s failed", kind, name, self.host_id)
        if done:
            Host.objects.filter(pk=self.host_id).update(
                last_event_at=timezone.now(), event_lag_seconds=round(time.monotonic() - arrived, 3)
            )
        return done

    def _mirror_one(self, kind: str, name: str) -> bool:
        """Mirror one object again; False when the host has no such network or guest (it left
        the mirror)."""
        if kind == "network":
            if mirror_network_by_name(self.host, self.conn, name):
                self._remember(name)
                return True
            self.digests.pop(name, None)
            return False
        if kind == "guest":
            return mirror_guest_by_name(self.host, self.conn, name)
        mirror_node_devices(self.host, self.conn)
        return True

    # -- net-updates the network hook saw

    def check_updates(self) -> list[str]:
        """Mirror again each network the network hook marked updated. Returns the names of
        those the host has (a marker for one it lacks counts for nothing). The lag recorded
        runs from when the hook wrote the oldest marker, so it includes the wait for the poll.
        Markers wait while the host is unreachable: the reconnect's sync covers them anyway."""
        if self.updates_dir is None or self.conn is None:
            return []
        done, written = [], []
        for name, written_at in sorted(take_network_update_times(self.updates_dir).items()):
            try:
                if self._mirror_one("network", name):
                    done.append(name)
                    written.append(written_at)
            except HostUnreachable as error:
                self.lost(str(error))
                break
            except Exception:
                logger.exception("mirroring updated network %s of host %s failed", name, self.host_id)
        if done:
            lag = max(0.0, time.time() - min(written))  # a marker's mtime is wall-clock time
            Host.objects.filter(pk=self.host_id).update(last_event_at=timezone.now(), event_lag_seconds=round(lag, 3))
        return done

    # -- the periodic XML check

    def check_xml(self) -> list[str]:
        """Compare each network's live XML with the mirror; mirror again the networks whose XML
        changed, those missing from the mirror, and remove those gone from the host. Returns
        the names of the networks mirrored again or removed."""
        if self.conn is None:
            return []
        changed = []
        listed_at = timezone.now()  # a row written after the listing may be missing from it
        try:
            with libvirt_errors():
                on_host = {net.name(): net for net in self.conn.listAllNetworks()}
                live = {name: self._both_xml(net) for name, net in on_host.items()}
        except NotFound:  # one vanished between the listing and its read: its event follows
            return []
        except HostUnreachable as error:
            self.lost(str(error))
            return []
        for name, texts in live.items():
            if self.digests.get(name) == xml_digest(*texts):
                continue
            mirrored = Network.objects.filter(host_id=self.host_id, name=name).values_list("live_xml", "inactive_xml")
            if list(mirrored) == [texts]:  # someone else mirrored it meanwhile
                self.digests[name] = xml_digest(*texts)
                continue
            try:
                self._mirror_one("network", name)
                changed.append(name)
            except HostUnreachable as error:
                self.lost(str(error))
                return changed
        with transaction.atomic():
            lock_host(self.host_id)
            older = Q(synced_at__lt=listed_at) | Q(synced_at__isnull=True)
            gone = Network.objects.filter(older, host_id=self.host_id).exclude(name__in=list(live))
            for name in gone.values_list("name", flat=True):
                changed.append(name)
                self.digests.pop(name, None)
            gone.delete()
        Host.objects.filter(pk=self.host_id).update(watched_at=timezone.now())
        return changed

    @staticmethod
    def _both_xml(net) -> tuple[str, str]:
        """The live XML and, for a persistent network, the persistent one (a `net-update
        --config` changes only that), as inventory.read_network reads them."""
        live = net.XMLDesc(0)
        return live, inventory.inactive_xml(net, live) if net.isPersistent() else live

    def _remember(self, name: str) -> None:
        texts = Network.objects.filter(host_id=self.host_id, name=name).values_list("live_xml", "inactive_xml").first()
        if texts is not None:
            self.digests[name] = xml_digest(*texts)

    def _mirrored_digests(self) -> dict[str, str]:
        rows = Network.objects.filter(host_id=self.host_id).values_list("name", "live_xml", "inactive_xml")
        return {name: xml_digest(live, inactive) for name, live, inactive in rows.iterator()}

    # -- the loop

    def run(self) -> None:
        """Follow the host until `stop` is set (or the host is deleted)."""
        retry = RETRY_FIRST_SECONDS
        next_check = next_spool = 0.0
        try:
            while not self.stop.is_set():
                try:
                    if self.conn is None:
                        if not self.connect():
                            self.stop.wait(retry)
                            retry = min(retry * 2, self.retry_max)
                            continue
                        retry = RETRY_FIRST_SECONDS
                        next_check = time.monotonic() + self.digest_seconds
                    self.process(
                        timeout=max(0.0, min(1.0, next_check - time.monotonic(), next_spool - time.monotonic()))
                    )
                    if time.monotonic() >= next_spool:
                        next_spool = time.monotonic() + SPOOL_POLL_SECONDS
                        self._check_updates_logged()
                    if self.conn is not None and time.monotonic() >= next_check:
                        self.check_xml()
                        next_check = time.monotonic() + self.digest_seconds
                except Exception:  # the database away, a bug: log, wait, keep watching
                    logger.exception("event watcher of host %s", self.host_id or self.host_name)
                    self.stop.wait(retry)
                    retry = min(retry * 2, self.retry_max)
                finally:
                    close_old_connections()
        finally:
            self.close()

    def _check_updates_logged(self) -> None:
        """check_updates, its failure logged: whatever the spool holds, the XML check after it
        still runs (it also sees the net-updates a hook marked)."""
        try:
            self.check_updates()
        except Exception:
            logger.exception("event watcher of host %s: the network-updates spool", self.host_id or self.host_name)


def watcher_start(
    host_id: int | None = None, stop: threading.Event | None = None, **options
) -> tuple[threading.Thread, HostWatcher]:
    """Run a HostWatcher for `host_id` (or `host_name=`) in a daemon thread; set its `stop` to end it."""
    watcher = HostWatcher(host_id, stop=stop, **options)
    label = host_id if host_id is not None else options.get("host_name")
    thread = threading.Thread(target=watcher.run, name=f"kvmweb-watch-{label}", daemon=True)
    thread.start()
    return thread, watcher


def hosts_to_watch(names: list[str] | None = None) -> list[Host]:
    """The hosts `watchhosts` follows: those named, else every host except those whose own host
    worker was seen within three heartbeats (it watches its host itself). Hosts on the test
    driver are left out: its state lives in the process that opened it, so another process
    would only see (and mirror) a copy of its own."""
    hosts = Host.objects.order_by("name")
    if names:
        return list(hosts.filter(name__in=names))
    recent = timezone.now() - timedelta(seconds=3 * settings.KVMWEB_HOST_WORKER_HEARTBEAT_SECONDS)
    return [
        host
        for host in hosts.exclude(worker_seen_at__gte=recent).only("pk", "name", "uri")
        if not host.uri.startswith("test:")
    ]
