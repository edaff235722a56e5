"""Mirroring a host: read it in bulk through the hypervisor layer, then write the rows.

A host sync loads the digests of the host's rows once (a few queries), compares them with the
digests of what libvirt returned (snapshot: a hash of each object's XML, state flags and
leases, as read), parses and writes only what differs, and writes that in set-based statements
(one INSERT per table for new rows; one UPDATE … FROM (VALUES …) per table for the rows that
changed, FROM UNNEST on PostgreSQL; one DELETE per table for what is gone; a changed network's
reservations compared one by one when its <ip>s are unchanged, so that a reservation added is
one row written). So its number of queries does not grow with the host, and a host
found unchanged costs its reads, those few SELECTs and one UPDATE of the host row (its facts
and `last_sync_at`): no mirror row is written, and no XML parsed.

What counts as unchanged: a network whose live and persistent XML and active/autostart/
persistent flags are what they were (its DHCP leases have a digest of their own, so a renewed
lease rewrites the leases alone); a guest whose XML and guest-agent addresses are (a changed
state alone is a one-column write); a node device whose parsed values are. Everything the
mirror stores about an object is derived from those, so an object whose digest matches needs
no write. A row's `synced_at` is therefore the time it last changed (or the event watcher last
read it, below); `Host.last_sync_at` says when the host was last found to match.
`mirror_host(..., full=True)` rewrites every row (snapshot.DIGEST_VERSION does the same for
every host at once, when the mirror starts to derive a stored value differently).

The event watcher (services.watch) writes single objects while a sync may be reading the whole
host. Both writers lock the host row (`lock_host`) for their write, so they take turns; and a
sync is given the time its read began (`read_at`): a row written after that (its `synced_at`,
which the watcher stamps with the time of its own read, is newer) holds fresher data than the
sync's read, and that sync neither updates nor deletes it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import Model
from django.utils import timezone

from networks.choices import AuditSource, HostStatus, OperationKind
from networks.hypervisor import networks as hv_networks
from networks.hypervisor import snapshot
from networks.hypervisor.errors import HypervisorError, NotFound, brief_message
from networks.hypervisor.snapshot import GuestRead, HostRead, NetworkRead, device_digest
from networks.hypervisor.types import GuestInfo, HostInventory, NetworkInfo, NodeDeviceInfo
from networks.models import (
    DhcpLease,
    DhcpRange,
    DhcpReservation,
    DnsRecord,
    ForwardInterface,
    Guest,
    GuestInterface,
    Host,
    Network,
    NetworkIp,
    NodeDevice,
    Operation,
    Portgroup,
)
from networks.operation_kinds import HOST, operation_kind

from .connections import host_connection
from .db_retry import retry_write
from .drift import xml_differs
from .operations import Outcome, Progress, host_sync_request

logger = logging.getLogger(__name__)


@operation_kind(OperationKind.HOST_SYNC, lock=HOST)
def host_sync_run(operation: Operation, progress: Progress) -> Outcome:
    host = operation.host
    progress.step(10, f"Connecting to {host.name}")
    try:
        conn = host_connection(host)
        progress.step(30, "Reading networks, guests and devices")
        read_at = timezone.now()  # rows written after this hold newer data than this read
        found = snapshot.read_host(conn)
    except HypervisorError as error:  # unreachable, refused URI, authentication refused...
        # Shown on the hosts page: libvirt's first line only, never the file it quotes.
        Host.objects.filter(pk=host.pk).update(status=HostStatus.UNREACHABLE, last_error=brief_message(str(error)))
        raise
    progress.step(70, "Updating the mirror")
    counts = mirror_host(host, found, read_at=read_at)
    for warning in found.warnings:
        progress.log(f"warning: {warning}")
    return Outcome(result=counts)


def lock_host(host_id: int) -> None:
    """Take the host row's lock until the end of the transaction: the sync, the event watcher
    and an operation's re-read write a host's mirror one at a time. (mirror_host takes the same
    lock by updating the host row first.)"""
    Host.objects.select_for_update().only("pk").get(pk=host_id)


def mirror_host(host: Host, found: HostRead | HostInventory, *, full: bool = False, read_at=None) -> dict:
    """Make the rows of `host` match what was read; objects gone from the host are removed.
    Only what differs from the mirror is written (everything with `full`). With `read_at`
    (when the read began), rows written since (by the event watcher) are left as they are."""
    if isinstance(found, HostInventory):
        found = HostRead.of(found)
    with transaction.atomic():
        now = timezone.now()
        _mirror_facts(host, found, now)  # first: updating the host row takes its lock (lock_host)
        stored = _load_host(host, fresh_after=read_at)
        networks = _NetworkWriter(host, now, full, stored.networks)
        networks.write(found.networks, whole_host=True)
        unlinked = {guest_id for guest_id, source in stored.unlinked if source in networks.ids}
        guests = _GuestWriter(host, now, full, stored.guests, networks.ids, networks.created_names, unlinked)
        guests.write(found.guests, whole_host=True)
        devices = mirror_devices(host, found.devices, stored.devices)
    return {
        "networks": len(found.networks),
        "guests": len(found.guests),
        "devices": len(found.devices),
        "written": {"networks": networks.written, "guests": guests.written, "devices": devices},
    }


def _mirror_facts(host: Host, found: HostRead, now) -> None:
    facts = found.facts
    updated = Host.objects.filter(pk=host.pk).update(
        status=HostStatus.REACHABLE,
        last_error="",
        last_sync_at=now,
        hostname=facts.hostname,
        hypervisor_type=facts.hypervisor_type,
        hypervisor_version=facts.hypervisor_version,
        libvirt_version=facts.libvirt_version,
        cpu_model=facts.cpu_model,
        cpus=facts.cpus,
        memory_mib=facts.memory_mib,
        host_bridges=list(facts.host_bridges),
        iommu_support=facts.iommu_support,
        vfio_support=facts.vfio_support,
        passthrough_note=facts.passthrough_note[:500],
        nic_uses=dict(facts.nic_uses),
        sync_warnings=list(found.warnings),
    )
    if not updated:
        raise Host.DoesNotExist(f"host {host.pk} was removed")


# ---------------------------------------------------------------- what the mirror holds


@dataclass
class _Stored:
    """Rows of one table: name → (pk, digest, a third value), and the names of the rows
    written after the sync's read began (by the event watcher: newer than what was read)."""

    rows: dict[str, tuple] = field(default_factory=dict)
    fresh: set[str] = field(default_factory=set)

    def add(self, pk: int, name: str, digest: str, third, fresh) -> None:
        self.rows[name] = (pk, digest, third)
        if fresh:
            self.fresh.add(name)


@dataclass
class _HostRows:
    networks: _Stored = field(default_factory=_Stored)  # third value: the leases digest
    guests: _Stored = field(default_factory=_Stored)  # third value: the state
    devices: _Stored = field(default_factory=_Stored)  # third value: the PF's pk, as text
    unlinked: list[tuple[int, str]] = field(default_factory=list)  # (guest pk, network name)


def _load_host(host: Host, fresh_after) -> _HostRows:
    """The digests of every network, guest and node device of `host`, and the interfaces of type
    network that link to no network, in one query (the ORM has no UNION ALL of tables whose
    columns differ). Each row's `fresh` is computed by the database: no timestamp is loaded."""
    quote = connection.ops.quote_name
    tables = {model: quote(model._meta.db_table) for model in (Network, Guest, NodeDevice, GuestInterface)}
    fresh, fresh_params = "FALSE", []
    if fresh_after is not None:
        fresh, fresh_params = "synced_at > %s", [connection.ops.adapt_datetimefield_value(fresh_after)]
    sql = (
        f"SELECT 'network', id, name, digest, leases_digest, {fresh} FROM {tables[Network]} WHERE host_id = %s "
        f"UNION ALL SELECT 'guest', id, name, digest, state, {fresh} FROM {tables[Guest]} WHERE host_id = %s "
        f"UNION ALL SELECT 'device', id, name, digest, CAST(physical_function_id AS VARCHAR(20)), FALSE "
        f"FROM {tables[NodeDevice]} WHERE host_id = %s "
        f"UNION ALL SELECT 'unlinked', i.guest_id, i.source, '', '', FALSE FROM {tables[GuestInterface]} i "
        f"JOIN {tables[Guest]} g ON g.id = i.guest_id "
        f"WHERE g.host_id = %s AND i.network_id IS NULL AND i.type = 'network'"
    )
    params = [*fresh_params, host.pk, *fresh_params, host.pk, host.pk, host.pk]
    found = _HostRows()
    tables_of = {"network": found.networks, "guest": found.guests, "device": found.devices}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for kind, pk, name, digest, third, is_fresh in cursor.fetchall():
            if kind == "unlinked":
                found.unlinked.append((pk, name))
            else:
                tables_of[kind].add(pk, name, digest, third, is_fresh)
    return found


def _load_named(model: type[Model], host: Host, names: list[str], third: str) -> _Stored:
    """As _load_host, for the few objects named (one network or guest, written on its own)."""
    stored = _Stored()
    for pk, name, digest, value in (
        model.objects.filter(host=host, name__in=names).order_by().values_list("pk", "name", "digest", third)
    ):
        stored.add(pk, name, digest, value, False)
    return stored


# ---------------------------------------------------------------- networks


def mirror_network(host: Host, info: NetworkInfo, now=None) -> Network:
    """Write one network and replace its children with what the host reported, in one
    transaction: a reader never sees the network without its reservations, and a failure
    part way leaves the previous mirror whole. A network the mirror already holds as read
    is left as it is. The write holds the host's lock, as a sync's and the watcher's do."""
    with transaction.atomic():
        lock_host(host.pk)
        stored = _load_named(Network, host, [info.name], "leases_digest")
        writer = _NetworkWriter(host, now or timezone.now(), full=False, stored=stored)
        writer.write([NetworkRead.of(info)], whole_host=False)
        return writer.rows[info.name]


_NETWORK_FIELDS = (
    "uuid", "forward_mode", "forward_dev", "bridge", "stp", "mtu", "domain_name", "active", "autostart",
    "persistent", "connections", "live_xml", "inactive_xml", "drifted", "leases_known", "synced_at", "digest",
    "leases_digest",  # a row rewritten has its leases replaced too when they changed (_replace_leases)
)  # fmt: skip


class _NetworkWriter:
    """The networks of one host (or the few named): their digests loaded once, then only those
    that differ parsed and written, as a set."""

    def __init__(self, host: Host, now, full: bool, stored: _Stored):
        self.host, self.now, self.full = host, now, full
        self.stored, self.fresh = stored.rows, stored.fresh
        self.ids = {name: row[0] for name, row in self.stored.items()}
        self.rows: dict[str, Network] = {}  # the rows written (or found unchanged, by mirror_network)
        self.created_names: set[str] = set()
        self.written = 0

    def write(self, found: list[NetworkRead] | tuple[NetworkRead, ...], whole_host: bool) -> None:
        new, changed, leases_changed = [], [], []
        for read in found:
            row = self.stored.get(read.name)
            if row is None:
                new.append(read)
            elif read.name in self.fresh:
                continue
            else:
                if self.full or row[1] != read.digest:
                    changed.append(read)
                if self.full or row[2] != read.leases_digest:
                    leases_changed.append(read)
        if whole_host:
            kept = {read.name for read in found} | self.fresh
            gone = [row[0] for name, row in self.stored.items() if name not in kept]
            if gone:
                Network.objects.filter(pk__in=gone).delete()  # cascades to every child row
                self.ids = {name: pk for name, pk in self.ids.items() if name in kept}
        created = Network.objects.bulk_create(self._network_row(read) for read in new)
        updated = [self._network_row(read, pk=self.ids[read.name]) for read in changed]
        update_rows(Network, [_values(row, _NETWORK_FIELDS) for row in updated])
        for row in (*created, *updated):
            self.rows[row.name] = row
            self.ids[row.name] = row.pk
        self.created_names = {row.name for row in created}
        self._replace_children(new + changed, [row.pk for row in updated])
        self._replace_leases(new + leases_changed, [self.ids[read.name] for read in leases_changed])
        self.written = len({read.name for read in new + changed + leases_changed})
        if not whole_host:  # mirror_network returns the row, written or not
            for read in found:
                if read.name not in self.rows:
                    self.rows[read.name] = Network.objects.get(pk=self.ids[read.name])

    def _network_row(self, read: NetworkRead, pk: int | None = None) -> Network:
        info = read.info
        return Network(
            pk=pk,
            host=self.host,
            name=info.name,
            uuid=info.uuid,
            forward_mode=info.forward_mode,
            forward_dev=info.forward_dev,
            bridge=info.bridge,
            stp=info.stp,
            mtu=info.mtu,
            domain_name=info.domain_name,
            active=info.active,
            autostart=info.autostart,
            persistent=info.persistent,
            connections=info.connections,
            live_xml=info.live_xml,
            inactive_xml=info.inactive_xml,
            drifted=self._drifted(info),
            leases_known=info.leases_known,
            synced_at=self.now,
            digest=read.digest,
            leases_digest=read.leases_digest,
        )

    @staticmethod
    def _drifted(info: NetworkInfo) -> bool:
        # The same text never differs: compared as text first, and parsed only when it is not.
        if not (info.active and info.persistent) or info.live_xml == info.inactive_xml:
            return False
        return xml_differs(info.live_xml, info.inactive_xml)

    def _replace_children(self, reads: list[NetworkRead], old_ids: list[int]) -> None:
        """The <ip>s (with ranges and reservations), DNS records, portgroups and forward
        interfaces of `reads`, replacing those of the networks `old_ids`. A network whose <ip>s
        and DHCP ranges are as stored keeps those rows, and only the reservations that differ
        are written: a reservation added to a network of hundreds is one row (each row written
        costs its indexes and, on PostgreSQL, its foreign-key checks)."""
        kept = self._unchanged_ips(reads, old_ids)  # network id → its <ip> rows' ids, by position
        if old_ids:
            replaced = [network_id for network_id in old_ids if network_id not in kept]
            if replaced:
                delete_rows(DhcpReservation, "network_id", replaced)
                delete_rows(DhcpRange, "ip_id", replaced, via=(NetworkIp, "network_id"))
                delete_rows(NetworkIp, "network_id", replaced)
            for model in (DnsRecord, Portgroup, ForwardInterface):
                delete_rows(model, "network_id", old_ids)
        if not reads:
            return
        ips, ip_infos = [], []
        for read in reads:
            network_id = self.ids[read.name]
            if network_id in kept:
                continue
            for position, ip in enumerate(read.info.ips):
                ips.append({
                    "network_id": network_id, "position": position, "address": ip.address, "prefix": ip.prefix,
                    "family": ip.family, **NetworkIp.bounds_of(ip.address, ip.prefix),
                })  # fmt: skip
                ip_infos.append((network_id, ip))
        ip_ids = insert_rows(NetworkIp, ips, returning=True)
        insert_rows(DhcpRange, [
            {"ip_id": ip_id, "start": r.start, "end": r.end, "size": DhcpRange.size_of(r.start, r.end)}
            for ip_id, (_, ip) in zip(ip_ids, ip_infos, strict=True)
            for r in ip.dhcp_ranges
        ])  # fmt: skip
        added = self._changed_reservations(reads, kept)  # (deleting first those no longer there)
        added += [
            _reservation_row(network_id, ip_id, h)
            for ip_id, (network_id, ip) in zip(ip_ids, ip_infos, strict=True)
            for h in ip.dhcp_hosts
        ]
        insert_rows(DhcpReservation, added)
        insert_rows(DnsRecord, [
            {"network_id": self.ids[read.name], **vars(record)} for read in reads for record in read.info.dns_records
        ])  # fmt: skip
        insert_rows(Portgroup, [
            {"network_id": self.ids[read.name], **_portgroup_values(pg)}
            for read in reads
            for pg in read.info.portgroups
        ])  # fmt: skip
        insert_rows(ForwardInterface, [
            {"network_id": self.ids[read.name], **vars(fwd)} for read in reads for fwd in read.info.forward_interfaces
        ])  # fmt: skip

    def _unchanged_ips(self, reads: list[NetworkRead], old_ids: list[int]) -> dict[int, list[int]]:
        """The networks of `old_ids` whose stored <ip> rows (with their ranges) are what was
        read, each with those rows' ids by position."""
        if not old_ids:
            return {}
        stored: dict[int, dict[int, list]] = {}  # network id → ip id → [its shape, then its ranges]
        for network_id, ip_id, *ip, start, end, size in (
            NetworkIp.objects.filter(network_id__in=old_ids)
            .order_by("network_id", "position", "dhcp_ranges__id")
            .values_list(
                "network_id", "id", "position", "address", "prefix", "family", "subnet_start", "subnet_end",
                "dhcp_ranges__start", "dhcp_ranges__end", "dhcp_ranges__size",
            )
        ):  # fmt: skip
            shape = stored.setdefault(network_id, {}).setdefault(ip_id, [tuple(ip)])
            if start is not None:
                shape.append((start, end, size))
        kept = {}
        for read in reads:
            network_id = self.ids[read.name]
            if network_id in stored:
                rows = stored[network_id]
                if [tuple(shape) for shape in rows.values()] == _ip_shapes(read.info):
                    kept[network_id] = list(rows)
        return kept

    def _changed_reservations(self, reads: list[NetworkRead], kept: dict[int, list[int]]) -> list[dict]:
        """For the networks that kept their <ip> rows: the stored reservations that were not
        read are deleted; returns the rows of those read that are not stored."""
        if not kept:
            return []
        stored: dict[tuple, list[int]] = {}
        for pk, *key in DhcpReservation.objects.filter(network_id__in=list(kept)).values_list(
            "id", "network_id", "ip_id", "address", "mac", "host_id", "name"
        ):
            stored.setdefault(tuple(key), []).append(pk)
        added = []
        for read in reads:
            network_id = self.ids[read.name]
            for ip_id, ip in zip(kept.get(network_id, ()), read.info.ips, strict=network_id in kept):
                for host in ip.dhcp_hosts:
                    row = _reservation_row(network_id, ip_id, host)
                    same = stored.get(tuple(row.values()))
                    if same:
                        same.pop()
                    else:
                        added.append(row)
        delete_rows(DhcpReservation, "id", [pk for pks in stored.values() for pk in pks])
        return added

    def _replace_leases(self, reads: list[NetworkRead], old_ids: list[int]) -> None:
        """The leases of `reads`, replacing those of the networks `old_ids` (whose rows, where
        not rewritten, get the new leases digest)."""
        if old_ids:
            delete_rows(DhcpLease, "network_id", old_ids)
            rewritten = {row.pk for row in self.rows.values()}
            update_rows(Network, [
                {"id": self.ids[read.name], "leases_digest": read.leases_digest} for read in reads
                if self.ids[read.name] not in rewritten
            ])  # fmt: skip
        insert_rows(DhcpLease, [_lease_row(self.ids[read.name], lease) for read in reads for lease in read.leases])


# ---------------------------------------------------------------- guests


def mirror_guest(host: Host, info: GuestInfo, networks: dict[str, Network] | None = None, now=None) -> None:
    """Write one guest and its interfaces into the mirror, as read from its host. `networks`
    maps the host's network names to their rows (or ids): an interface on one links to it;
    without it they are loaded once the host is locked (so no sync changes them in between).
    The write holds the host's lock, as a sync's and the watcher's do."""
    with transaction.atomic():
        lock_host(host.pk)
        if networks is None:
            networks = dict(Network.objects.filter(host=host).order_by().values_list("name", "pk"))
        ids = {name: getattr(network, "pk", network) for name, network in networks.items()}
        stored = _load_named(Guest, host, [info.name], "state")
        writer = _GuestWriter(host, now or timezone.now(), full=True, stored=stored, network_ids=ids)
        writer.write([GuestRead.of(info)], whole_host=False)


class _GuestWriter:
    """The guests of one host (or the few named): their digests loaded once, then only those
    that differ parsed and written, as a set."""

    def __init__(
        self, host: Host, now, full: bool, stored: _Stored, network_ids: dict[str, int],
        created_networks: set[str] = frozenset(), unlinked: set[int] = frozenset(),
    ):  # fmt: skip
        self.host, self.now, self.full = host, now, full
        self.stored, self.fresh = stored.rows, stored.fresh
        self.network_ids, self.created_networks = network_ids, created_networks
        # Guests with an interface on one of the host's networks that lost its link (the network
        # was removed and defined again since the guest was written): they are written again.
        self.unlinked = unlinked
        self.written = 0

    def _needs_rewrite(self, read: GuestRead, pk: int, digest: str) -> bool:
        if self.full or digest != read.digest or pk in self.unlinked:
            return True
        if not self.created_networks:
            return False
        # A network created by this sync: guests whose XML names it link to it now, whatever the
        # interface's type (a hostdev or direct NIC from a pool network too). libvirt quotes
        # attributes with ' (and escapes a ' inside as &apos;); XML written elsewhere may use ".
        return any(
            f"network='{escape(name, {chr(39): '&apos;'})}'" in read.xml or f"network={quoteattr(name)}" in read.xml
            for name in self.created_networks
        )

    def write(self, found, whole_host: bool) -> None:
        new, rewritten, state_only = [], [], []
        for read in found:
            stored = self.stored.get(read.name)
            if stored is None:
                new.append(read)
            elif read.name in self.fresh:
                continue
            elif self._needs_rewrite(read, stored[0], stored[1]):
                rewritten.append((stored[0], read))
            elif stored[2] != read.state:
                state_only.append({"id": stored[0], "state": read.state, "synced_at": self.now})
        if whole_host:
            kept = {read.name for read in found} | self.fresh
            gone = [row[0] for name, row in self.stored.items() if name not in kept]
            if gone:
                Guest.objects.filter(pk__in=gone).delete()
        # A state change alone (started, paused, stopped): two columns, no XML parsed.
        update_rows(Guest, state_only)
        created = insert_rows(Guest, [self._guest_row(read) for read in new], returning=True)
        update_rows(Guest, [self._guest_row(read, pk) for pk, read in rewritten])
        written = [*zip(created, new, strict=True), *rewritten]
        interfaces = [
            _interface_row(pk, position, iface, self.network_ids)
            for pk, read in written
            for position, iface in enumerate(read.info.interfaces)
        ]
        insert_rows(GuestInterface, _write_changed_interfaces(interfaces, [pk for pk, _ in rewritten]))
        self.written = len(written) + len(state_only)

    def _guest_row(self, read: GuestRead, pk: int | None = None) -> dict:
        info = read.info
        row = {
            "host_id": self.host.pk, "name": info.name, "uuid": info.uuid, "state": info.state,
            "hostdev_addresses": list(info.hostdev_addresses), "xml": info.xml, "synced_at": self.now,
            "digest": read.digest,
        }  # fmt: skip
        return row if pk is None else {"id": pk, **row}


def _write_changed_interfaces(rows: list[dict], rewritten: list[int]) -> list[dict]:
    """Of `rows` (the interfaces of the guests written), returns those to insert. The stored
    interfaces of the guests `rewritten` are compared by position: one that differs is updated
    in place, one no longer there deleted. (A NIC's link toggled is one row written, not every
    NIC of the guest deleted and inserted again, each with its indexes and foreign keys.)"""
    if not rewritten:
        return rows
    names = [field.attname for field in GuestInterface._meta.concrete_fields]
    stored = {
        (values["guest_id"], values["position"]): values
        for values in GuestInterface.objects.filter(guest_id__in=rewritten).order_by().values(*names)
    }
    added, changed = [], []
    for row in rows:
        old = stored.pop((row["guest_id"], row["position"]), None)
        if old is None:
            added.append(row)
        elif any(old[name] != value for name, value in row.items()):
            changed.append({"id": old["id"], **row})
    delete_rows(GuestInterface, "id", [old["id"] for old in stored.values()])
    update_rows(GuestInterface, changed)
    return added


def _interface_row(guest_id: int, position: int, iface, network_ids: dict[str, int]) -> dict:
    return {
        "guest_id": guest_id, "position": position, "type": iface.type, "mac": iface.mac, "source": iface.source,
        "model": iface.model, "target_dev": iface.target_dev, "vlan_tags": list(iface.vlan_tags),
        "portgroup": iface.portgroup, "source_mode": iface.source_mode, "link_state": iface.link_state,
        "bandwidth": bandwidth_value(iface), "pci_address": iface.pci_address,
        "agent_addresses": list(iface.agent_addresses), "network_id": network_ids.get(iface.network),
    }  # fmt: skip


def bandwidth_value(iface) -> dict:
    """The interface's limits as stored: {"inbound": {"average": 1000, …}, "outbound": {…}},
    each direction only where the XML sets it, each figure only where given."""
    value = {}
    for direction in ("inbound", "outbound"):
        limit = getattr(iface, direction)
        if limit is not None:
            value[direction] = {name: figure for name, figure in vars(limit).items() if figure is not None}
    return value


# ---------------------------------------------------------------- node devices


def mirror_devices(host: Host, devices: tuple[NodeDeviceInfo, ...], loaded: _Stored | None = None) -> int:
    """Node devices as read, and each SR-IOV VF linked to its PF (by the PF's PCI address).
    `loaded`: the host's device rows, when the caller loaded them already. Returns how many
    rows were written."""
    if loaded is None:
        loaded = _Stored()
        for row in (
            NodeDevice.objects.filter(host=host).order_by().values_list("pk", "name", "digest", "physical_function_id")
        ):
            loaded.add(*row, False)
    stored = {
        name: (pk, digest, None if pf_id is None else int(pf_id)) for name, (pk, digest, pf_id) in loaded.rows.items()
    }
    found_names = {info.name for info in devices}
    gone = {row[0] for name, row in stored.items() if name not in found_names}
    if gone:
        NodeDevice.objects.filter(pk__in=gone).delete()  # their VFs' links are cleared
    new, changed = [], []
    for info in devices:
        digest = device_digest(info)
        row = stored.get(info.name)
        if row is None:
            new.append(NodeDevice(host=host, digest=digest, **_device_values(info)))
        elif row[1] != digest:
            changed.append({"id": row[0], "digest": digest, **_device_values(info)})
    update_rows(NodeDevice, changed)
    ids = {name: row[0] for name, row in stored.items() if name in found_names}
    ids.update((device.name, device.pk) for device in NodeDevice.objects.bulk_create(new))
    by_address = {info.pci_address: ids[info.name] for info in devices if info.pci_address}
    relinked = []
    for info in devices:
        pf = by_address.get(info.pf_address) if info.pf_address else None
        row = stored.get(info.name)
        current = row[2] if row and row[2] not in gone else None  # a deleted PF's links were cleared
        if pf != current:
            relinked.append({"id": ids[info.name], "physical_function_id": pf})
    update_rows(NodeDevice, relinked)
    return len({row["id"] for row in (*changed, *relinked)} | {device.pk for device in new})


def _device_values(info: NodeDeviceInfo) -> dict:
    values = vars(info).copy()
    values.pop("pf_address")
    values["vf_addresses"] = list(info.vf_addresses)
    return values


# ---------------------------------------------------------------- set-based writes
#
# bulk_create and bulk_update build a model instance per row and, for bulk_update, a CASE per
# field with a branch per row: for the few hundred rows of a host that is most of a sync's time.
# These two write plain dicts (attribute name → value) in one statement per batch instead.

# Fields whose values (str, int, bool or None, as parsed) the database drivers take as they are.
_PLAIN_TYPES = frozenset({
    "CharField", "TextField", "BooleanField", "ForeignKey", "IntegerField", "SmallIntegerField",
    "BigIntegerField", "PositiveIntegerField", "PositiveSmallIntegerField", "PositiveBigIntegerField",
})  # fmt: skip


def _preparers(fields) -> list:
    """For each field, None where the value goes as it is, else what prepares it (JSON, dates,
    IP addresses: each as Django would write it)."""
    # The connection itself: through the `connection` proxy, every value prepared would cost a
    # thread-local lookup (a third of a changed host's write time).
    db = connections[DEFAULT_DB_ALIAS]
    preparers = []
    for model_field in fields:
        kind = model_field.get_internal_type()
        prepare = None if kind in _PLAIN_TYPES else functools.partial(model_field.get_db_prep_save, connection=db)
        if kind == "DateTimeField":  # the rows of one write share the sync's time: prepared once
            prepare = functools.lru_cache(maxsize=64)(prepare)
        preparers.append(prepare)
    return preparers


def _values(instance: Model, names) -> dict:
    """`names` of `instance`, and its pk as "id" (a row for update_rows)."""
    return {"id": instance.pk, **{name: getattr(instance, name) for name in names}}


def _params(rows: list[dict], names: list[str], preparers: list) -> list:
    values_of = operator.itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)
    prepared = [(n, prepare) for n, prepare in enumerate(preparers) if prepare is not None]
    params = []
    for row in rows:
        values = list(values_of(row))
        for n, prepare in prepared:
            values[n] = prepare(values[n])
        params += values
    return params


def _batches(rows: list, per_row: int):
    size = max(1, (connection.features.max_query_params or 65535) // per_row)
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _row_source(fields, rows: list[dict], names: list[str]):
    """`rows` as the rows of a statement, with their parameters, columns named column1, …: on
    PostgreSQL one SELECT from UNNEST of one array per column (as Django's bulk_create does
    there), elsewhere a VALUES list per batch. A VALUES list of hundreds of placeholders cost
    PostgreSQL's driver more to parse than the server to run; one array per column keeps the
    statement short, the same for any number of rows."""
    preparers = _preparers(fields)
    if connection.vendor == "postgresql":
        params = _params(rows, names, preparers)
        yield _unnest_sql(fields, connection), [params[n :: len(fields)] for n in range(len(fields))]
        return
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    for chunk in _batches(rows, len(fields)):
        yield f"VALUES {', '.join([row_sql] * len(chunk))}", _params(chunk, names, preparers)


def _unnest_sql(fields, db) -> str:
    """SELECT * FROM UNNEST(one array per field) AS u(column1, …), each array cast to its
    column's type without a length (varchar, not varchar(100)): an explicit cast to varchar(100)
    would cut a longer value silently, where assigning a varchar to the column fails the write
    (as an INSERT of that value does)."""
    arrays = ", ".join(f"(%s)::{field.db_type(db).split('(')[0]}[]" for field in fields)
    aliases = ", ".join(f"column{n}" for n in range(1, len(fields) + 1))
    return f"SELECT * FROM UNNEST({arrays}) AS u({aliases})"


def insert_rows(model: type[Model], rows: list[dict], *, returning: bool = False) -> list[int]:
    """INSERT `rows`; a field a row leaves out gets its default. Returns the new rows' pks, in
    the order of `rows`, when `returning` (as bulk_create relies on, both databases return
    the rows of a multi-row INSERT … RETURNING in the order of its VALUES, or of its UNNEST)."""
    if not rows:
        return []
    opts = model._meta
    fields = [field for field in opts.concrete_fields if not field.primary_key]
    names = [field.attname for field in fields]
    known = frozenset(names)
    unknown = {key for row in rows for key in row.keys() - known}
    if unknown:  # a misspelt key would otherwise leave its column at the default, silently
        raise ValueError(f"{model.__name__} has no columns {sorted(unknown)}")
    missing = [field for field in fields if field.attname not in rows[0]]
    if missing:
        defaults = {field.attname: field.get_default() for field in missing}
        rows = [{**defaults, **row} for row in rows]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    tail = f" RETURNING {quote(opts.pk.column)}" if returning else ""
    ids = []
    with connection.cursor() as cursor:
        for source, params in _row_source(fields, rows, names):
            cursor.execute(f"INSERT INTO {quote(opts.db_table)} ({columns}) {source}{tail}", params)
            if returning:
                ids.extend(row[0] for row in cursor.fetchall())
    return ids


def update_rows(model: type[Model], rows: list[dict]) -> None:
    """UPDATE the rows whose pk is each dict's "id" with the dict's other values, as one
    UPDATE … FROM (VALUES (id, value, …), …) per batch (FROM UNNEST on PostgreSQL). Every
    dict has the same keys."""
    if not rows:
        return
    opts = model._meta
    names = list(rows[0])
    fields = [opts.pk if name == "id" else opts.get_field(name) for name in names]
    quote = connection.ops.quote_name
    table = quote(opts.db_table)
    assignments = ", ".join(
        f"{quote(field.column)} = v.column{n}" for n, field in enumerate(fields, start=1) if field is not opts.pk
    )
    match = f"{table}.{quote(opts.pk.column)} = v.column{names.index('id') + 1}"
    with connection.cursor() as cursor:
        for source, params in _row_source(fields, rows, names):
            cursor.execute(f"UPDATE {table} SET {assignments} FROM ({source}) AS v WHERE {match}", params)


def delete_rows(model: type[Model], column: str, ids: list[int], *, via: tuple[type[Model], str] | None = None) -> None:
    """DELETE the rows of `model` whose `column` is in `ids`, or with `via` (a parent model and
    its column), whose `column` names a row of the parent whose column is in `ids`: one
    statement per batch, where the ORM's delete() first collects what would cascade. Nothing
    cascades from here: the caller deletes the rows that point to these first."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    with connection.cursor() as cursor:
        for chunk in _batches(ids, 1):
            marks = ", ".join(["%s"] * len(chunk))
            if via is not None:
                parent, parent_column = via
                marks = f"SELECT {quote(parent._meta.pk.column)} FROM {quote(parent._meta.db_table)} "
                marks += f"WHERE {quote(parent_column)} IN ({', '.join(['%s'] * len(chunk))})"
            cursor.execute(f"DELETE FROM {table} WHERE {quote(column)} IN ({marks})", chunk)


class Touched:
    """Set by a run function just before its first change to the host (`guard.touch()`).

    It is also written into the row's checkpoint: a run that may have changed the host is
    never retried from the top (a change that went through would then be reported failed).
    """

    def __init__(self, operation: Operation):
        self.operation = operation
        self.host_changed = False

    def touch(self) -> None:
        if self.host_changed:
            return
        self.host_changed = True
        operation = self.operation
        operation.checkpoint = {**operation.checkpoint, "host_changing": True}
        rows = Operation.objects.filter(pk=operation.pk)
        retry_write(lambda: rows.update(checkpoint=operation.checkpoint))


@contextlib.contextmanager
def remirror_on_failure(operation: Operation):
    """Whatever stops a run after it changed the host, the mirror is re-read before the
    operation ends: the network is mirrored again from the host, or, when the host cannot
    be read, a host sync is requested. A run that failed before changing anything leaves
    the mirror alone (it is still right, and an unreachable host is not asked twice)."""
    guard = Touched(operation)
    try:
        yield guard
    except BaseException:
        if guard.host_changed:
            remirror_network(operation)
        raise


def remirror_network(operation: Operation) -> None:
    """Mirror `operation`'s network as the host now has it; request a host sync if that fails."""
    host, name = operation.host, operation.target_name
    try:
        info = hv_networks.get_network(host_connection(host), name)
    except NotFound:
        with transaction.atomic():
            lock_host(host.pk)
            host.networks.filter(name=name).delete()
        return
    except HypervisorError as error:
        logger.warning("Re-reading %s on %s failed (%s): requesting a sync", name, host.name, error)
        host_sync_request(
            host=host, actor=None, source=AuditSource.SYSTEM,
            message=f"re-read after operation #{operation.pk} stopped part way",
        )  # fmt: skip
        return
    mirror_network(host, info)


def _ip_shapes(info: NetworkInfo) -> list[tuple]:
    """Each <ip> as _unchanged_ips loads its row: (position, address, prefix, family, bounds),
    then its ranges (start, end, size)."""
    return [
        (
            (position, ip.address, ip.prefix, ip.family, *NetworkIp.bounds_of(ip.address, ip.prefix).values()),
            *((r.start, r.end, DhcpRange.size_of(r.start, r.end)) for r in ip.dhcp_ranges),
        )
        for position, ip in enumerate(info.ips)
    ]


def _reservation_row(network_id: int, ip_id: int, host) -> dict:
    # In the order of the key _changed_reservations compares.
    return {
        "network_id": network_id, "ip_id": ip_id, "address": host.ip, "mac": host.mac, "host_id": host.host_id,
        "name": host.name,
    }  # fmt: skip


def _lease_row(network_id: int, lease) -> dict:
    expires = datetime.fromtimestamp(lease.expires, tz=UTC) if lease.expires else None
    return {
        "network_id": network_id, "mac": lease.mac, "address": lease.ip, "prefix": lease.prefix,
        "hostname": lease.hostname, "client_id": lease.client_id, "expires_at": expires,
    }  # fmt: skip


def _portgroup_values(pg) -> dict:
    values = vars(pg).copy()
    values["vlan_tags"] = list(pg.vlan_tags)
    return values
