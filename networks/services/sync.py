"""Mirroring a host: read it in bulk through the hypervisor layer, then write the rows.

A host sync loads the host's rows once (a few queries), compares them with what libvirt
returned, parses and writes only what differs, and writes that in set-based statements
(bulk_create, bulk_update, one DELETE per table for what is gone). So its number of queries
does not grow with the host, and a host found unchanged costs its reads, those few SELECTs
and one UPDATE of the host row (its facts and `last_sync_at`): no mirror row is written.

What counts as unchanged: a network whose live and persistent XML, active/autostart/persistent
flags and DHCP leases are what the mirror holds; a guest whose XML, state and guest-agent
addresses are; a node device whose parsed values are. Everything the mirror stores about an
object is derived from those, so an object that compares equal needs no write. A row's
`synced_at` is therefore the time it last changed (or the event watcher last read it, below);
`Host.last_sync_at` says when the host was last found to match. `mirror_host(..., full=True)`
rewrites every row (after an upgrade that derives a stored value differently, for instance).

The event watcher (services.watch) writes single objects while a sync may be reading the whole
host. Both writers lock the host row (`lock_host`) for their write, so they take turns; and a
sync is given the time its read began (`read_at`): a row written after that (its `synced_at`,
which the watcher stamps with the time of its own read, is newer) holds fresher data than the
sync's read, and that sync neither updates nor deletes it.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from networks.choices import AuditSource, HostStatus, OperationKind
from networks.hypervisor import networks as hv_networks
from networks.hypervisor import snapshot
from networks.hypervisor.errors import HypervisorError, NotFound, brief_message
from networks.hypervisor.snapshot import GuestRead, HostRead, NetworkRead
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
    """Take the host row's lock until the end of the transaction: the sync and the event
    watcher write a host's mirror one at a time."""
    Host.objects.select_for_update().only("pk").get(pk=host_id)


def mirror_host(host: Host, found: HostRead | HostInventory, *, full: bool = False, read_at=None) -> dict:
    """Make the rows of `host` match what was read; objects gone from the host are removed.
    Only what differs from the mirror is written (everything with `full`). With `read_at`
    (when the read began), rows written since (by the event watcher) are left as they are."""
    if isinstance(found, HostInventory):
        found = HostRead.of(found)
    with transaction.atomic():
        lock_host(host.pk)
        now = timezone.now()
        _mirror_facts(host, found, now)
        networks = _NetworkWriter(host, now, full, fresh_after=read_at)
        networks.write(found.networks, whole_host=True)
        guests = _GuestWriter(
            host, now, full, networks.ids, created_networks=networks.created_names, fresh_after=read_at
        )
        guests.write(found.guests, whole_host=True)
        devices = mirror_devices(host, found.devices)
    return {
        "networks": len(found.networks),
        "guests": len(found.guests),
        "devices": len(found.devices),
        "written": {"networks": networks.written, "guests": guests.written, "devices": devices},
    }


def _mirror_facts(host: Host, found: HostRead, now) -> None:
    facts = found.facts
    Host.objects.filter(pk=host.pk).update(
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


# ---------------------------------------------------------------- networks


def mirror_network(host: Host, info: NetworkInfo, now=None) -> Network:
    """Write one network and replace its children with what the host reported, in one
    transaction: a reader never sees the network without its reservations, and a failure
    part way leaves the previous mirror whole. A network the mirror already holds as read
    is left as it is."""
    with transaction.atomic():
        writer = _NetworkWriter(host, now or timezone.now(), full=False, names=[info.name])
        writer.write([NetworkRead.of(info)], whole_host=False)
        return writer.rows[info.name]


_NETWORK_STATE = ("live_xml", "inactive_xml", "active", "autostart", "persistent", "leases_known")
_NETWORK_FIELDS = (
    "uuid", "forward_mode", "forward_dev", "bridge", "stp", "mtu", "domain_name", "active", "autostart",
    "persistent", "connections", "live_xml", "inactive_xml", "drifted", "leases_known", "synced_at",
)  # fmt: skip
_LEASE_FIELDS = ("mac", "address", "prefix", "hostname", "client_id", "expires_at")


class _NetworkWriter:
    """The networks of one host (or the few named), loaded once, then written as a set."""

    def __init__(self, host: Host, now, full: bool, names: list[str] | None = None, fresh_after=None):
        self.host, self.now, self.full = host, now, full
        rows = Network.objects.filter(host=host)
        if names is not None:
            rows = rows.filter(name__in=names)
        self.stored, self.fresh = {}, set()
        for *row, synced_at in rows.values_list("pk", "name", *_NETWORK_STATE, "synced_at"):
            self.stored[row[1]] = row
            if fresh_after and synced_at and synced_at > fresh_after:
                self.fresh.add(row[1])  # written after the read began: newer than what was read
        self.ids = {name: row[0] for name, row in self.stored.items()}
        leases = DhcpLease.objects.filter(network__in=rows.values("pk")).values_list("network_id", *_LEASE_FIELDS)
        self.stored_leases: dict[int, list] = defaultdict(list)
        for network_id, *values in leases:
            self.stored_leases[network_id].append(tuple(values))
        self.rows: dict[str, Network] = {}  # the rows written (or found unchanged, by mirror_network)
        self.created_names: set[str] = set()
        self.written = 0

    def write(self, found: list[NetworkRead] | tuple[NetworkRead, ...], whole_host: bool) -> None:
        new, changed, leases_changed = [], [], []
        for read in found:
            row = self.stored.get(read.name)
            if row is None:
                new.append(read)
                continue
            if read.name in self.fresh:
                continue
            if self.full or tuple(row[2:]) != tuple(getattr(read, name) for name in _NETWORK_STATE):
                changed.append(read)
            stored_leases = sorted(self.stored_leases.get(row[0], ()), key=repr)
            if self.full or stored_leases != sorted(map(_lease_values, read.leases), key=repr):
                leases_changed.append(read)
        if whole_host:
            found_names = {read.name for read in found}
            kept = found_names | self.fresh
            gone = [row[0] for name, row in self.stored.items() if name not in kept]
            if gone:
                Network.objects.filter(pk__in=gone).delete()  # cascades to every child row
                self.ids = {name: pk for name, pk in self.ids.items() if name in kept}
        created = Network.objects.bulk_create(self._network_row(read) for read in new)
        updated = [self._network_row(read, pk=self.ids[read.name]) for read in changed]
        if updated:
            Network.objects.bulk_update(updated, _NETWORK_FIELDS)
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
            drifted=info.active and info.persistent and xml_differs(info.live_xml, info.inactive_xml),
            leases_known=info.leases_known,
            synced_at=self.now,
        )

    def _replace_children(self, reads: list[NetworkRead], old_ids: list[int]) -> None:
        """The <ip>s (with ranges and reservations), DNS records, portgroups and forward
        interfaces of `reads`, replacing those of the networks `old_ids`."""
        if old_ids:
            NetworkIp.objects.filter(network_id__in=old_ids).delete()  # cascades to ranges and reservations
            DnsRecord.objects.filter(network_id__in=old_ids).delete()
            Portgroup.objects.filter(network_id__in=old_ids).delete()
            ForwardInterface.objects.filter(network_id__in=old_ids).delete()
        if not reads:
            return
        ips, ip_infos = [], []
        for read in reads:
            network_id = self.ids[read.name]
            for position, ip in enumerate(read.info.ips):
                ips.append(
                    NetworkIp(
                        network_id=network_id, position=position, address=ip.address, prefix=ip.prefix,
                        family=ip.family, **NetworkIp.bounds_of(ip.address, ip.prefix),
                    )
                )  # fmt: skip
                ip_infos.append((network_id, ip))
        NetworkIp.objects.bulk_create(ips)
        DhcpRange.objects.bulk_create(
            DhcpRange(ip=row, start=r.start, end=r.end, size=DhcpRange.size_of(r.start, r.end))
            for row, (_, ip) in zip(ips, ip_infos, strict=True)
            for r in ip.dhcp_ranges
        )
        DhcpReservation.objects.bulk_create(
            DhcpReservation(network_id=network_id, ip=row, address=h.ip, mac=h.mac, host_id=h.host_id, name=h.name)
            for row, (network_id, ip) in zip(ips, ip_infos, strict=True)
            for h in ip.dhcp_hosts
        )
        DnsRecord.objects.bulk_create(
            DnsRecord(network_id=self.ids[read.name], **vars(record))
            for read in reads
            for record in read.info.dns_records
        )
        Portgroup.objects.bulk_create(
            Portgroup(network_id=self.ids[read.name], **_portgroup_values(pg))
            for read in reads
            for pg in read.info.portgroups
        )
        ForwardInterface.objects.bulk_create(
            ForwardInterface(network_id=self.ids[read.name], **vars(fwd))
            for read in reads
            for fwd in read.info.forward_interfaces
        )

    def _replace_leases(self, reads: list[NetworkRead], old_ids: list[int]) -> None:
        if old_ids:
            DhcpLease.objects.filter(network_id__in=old_ids).delete()
        DhcpLease.objects.bulk_create(_lease_row(self.ids[read.name], lease) for read in reads for lease in read.leases)


def _lease_values(lease) -> tuple:
    """A lease as the mirror stores it (the fields of _LEASE_FIELDS), for comparing."""
    row = _lease_row(None, lease)
    row.address = DhcpLease._meta.get_field("address").get_prep_value(row.address)
    return tuple(getattr(row, name) for name in _LEASE_FIELDS)


# ---------------------------------------------------------------- guests


def mirror_guest(host: Host, info: GuestInfo, networks: dict[str, Network], now) -> None:
    """Write one guest and its interfaces into the mirror, as read from its host. `networks`
    maps the host's network names to their rows (or ids): an interface on one links to it."""
    ids = {name: getattr(network, "pk", network) for name, network in networks.items()}
    writer = _GuestWriter(host, now or timezone.now(), full=True, network_ids=ids, names=[info.name])
    writer.write([GuestRead.of(info)], whole_host=False)


_GUEST_FIELDS = ("uuid", "state", "hostdev_addresses", "xml", "synced_at")


class _GuestWriter:
    """The guests of one host (or the few named), loaded once, then written as a set."""

    def __init__(
        self, host: Host, now, full: bool, network_ids: dict[str, int],
        created_networks: set[str] = frozenset(), names: list[str] | None = None, fresh_after=None,
    ):  # fmt: skip
        self.host, self.now, self.full = host, now, full
        self.network_ids, self.created_networks = network_ids, created_networks
        rows = Guest.objects.filter(host=host)
        if names is not None:
            rows = rows.filter(name__in=names)
        self.stored, self.fresh = {}, set()
        for pk, name, xml, state, synced_at in rows.values_list("pk", "name", "xml", "state", "synced_at"):
            self.stored[name] = (pk, xml, state)
            if fresh_after and synced_at and synced_at > fresh_after:
                self.fresh.add(name)  # written after the read began: newer than what was read
        self.written = 0
        if full:
            return
        # One query for what the XML does not tell: the guest agent's addresses, and interfaces on
        # one of the host's networks that lost their link (the network was removed and defined
        # again since their guest was written: their guests are written again).
        self.stored_agent: dict[int, dict[int, tuple]] = defaultdict(dict)
        self.unlinked: set[int] = set()
        interfaces = GuestInterface.objects.filter(guest__host=host)
        if names is not None:
            interfaces = interfaces.filter(guest__name__in=names)
        wanted = ~Q(agent_addresses=[]) | Q(network__isnull=True, type="network")
        for guest_id, position, addresses, network_id, source in interfaces.filter(wanted).values_list(
            "guest_id", "position", "agent_addresses", "network_id", "source"
        ):
            if addresses:
                self.stored_agent[guest_id][position] = tuple(addresses)
            if network_id is None and source in network_ids:
                self.unlinked.add(guest_id)

    def _needs_rewrite(self, read: GuestRead, pk: int, xml: str) -> bool:
        if self.full or xml != read.xml or pk in self.unlinked:
            return True
        if self.stored_agent.get(pk, {}) != read.agent_addresses:
            return True
        # A network created by this sync: guests whose XML names it link to it now, whatever the
        # interface's type (a hostdev or direct NIC from a pool network too). libvirt quotes
        # attributes with ' (and escapes a ' inside as &apos;); XML written elsewhere may use ".
        return any(
            f"network='{escape(name, {chr(39): '&apos;'})}'" in xml or f"network={quoteattr(name)}" in xml
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
                state_only.append(Guest(pk=stored[0], state=read.state, synced_at=self.now))
        if whole_host:
            found_names = {read.name for read in found}
            gone = [row[0] for name, row in self.stored.items() if name not in found_names | self.fresh]
            if gone:
                Guest.objects.filter(pk__in=gone).delete()
        # A state change alone (started, paused, stopped): one UPDATE per state reached, far
        # cheaper than bulk_update's CASE per row.
        by_state: dict[str, list[int]] = defaultdict(list)
        for row in state_only:
            by_state[row.state].append(row.pk)
        for state, pks in by_state.items():
            Guest.objects.filter(pk__in=pks).update(state=state, synced_at=self.now)
        created = Guest.objects.bulk_create(self._guest_row(read) for read in new)
        updated = [self._guest_row(read, pk) for pk, read in rewritten]
        if updated:
            Guest.objects.bulk_update(updated, _GUEST_FIELDS)
            GuestInterface.objects.filter(guest_id__in=[row.pk for row in updated]).delete()
        GuestInterface.objects.bulk_create(
            _interface_row(row.pk, position, iface, self.network_ids)
            for row, read in zip((*created, *updated), (*new, *(read for _, read in rewritten)), strict=True)
            for position, iface in enumerate(read.info.interfaces)
        )
        self.written = len(new) + len(rewritten) + len(state_only)

    def _guest_row(self, read: GuestRead, pk: int | None = None) -> Guest:
        info = read.info
        return Guest(
            pk=pk,
            host=self.host,
            name=info.name,
            uuid=info.uuid,
            state=info.state,
            hostdev_addresses=list(info.hostdev_addresses),
            xml=info.xml,
            synced_at=self.now,
        )


def _interface_row(guest_id: int, position: int, iface, network_ids: dict[str, int]) -> GuestInterface:
    return GuestInterface(
        guest_id=guest_id,
        position=position,
        type=iface.type,
        mac=iface.mac,
        source=iface.source,
        model=iface.model,
        target_dev=iface.target_dev,
        vlan_tags=list(iface.vlan_tags),
        portgroup=iface.portgroup,
        source_mode=iface.source_mode,
        link_state=iface.link_state,
        bandwidth=bandwidth_value(iface),
        pci_address=iface.pci_address,
        agent_addresses=list(iface.agent_addresses),
        network_id=network_ids.get(iface.network),
    )


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

_DEVICE_FIELDS = (
    "parent", "capability", "pci_address", "driver", "vendor", "product", "iommu_group", "vf_max",
    "vf_addresses", "net_interface", "net_mac", "xml",
)  # fmt: skip


def mirror_devices(host: Host, devices: tuple[NodeDeviceInfo, ...]) -> int:
    """Node devices as read, and each SR-IOV VF linked to its PF (by the PF's PCI address).
    Returns how many rows were written."""
    stored = {device.name: device for device in NodeDevice.objects.filter(host=host)}
    found_names = {info.name for info in devices}
    gone = [device.pk for name, device in stored.items() if name not in found_names]
    if gone:
        NodeDevice.objects.filter(pk__in=gone).delete()  # their VFs' links are cleared
    new, changed = [], []
    for info in devices:
        values = _device_values(info)
        device = stored.get(info.name)
        if device is None:
            new.append(NodeDevice(host=host, **values))
        elif any(getattr(device, name) != values[name] for name in _DEVICE_FIELDS):
            for name in _DEVICE_FIELDS:
                setattr(device, name, values[name])
            changed.append(device)
    if changed:
        NodeDevice.objects.bulk_update(changed, _DEVICE_FIELDS)
    rows = {device.name: device for device in NodeDevice.objects.bulk_create(new)}
    rows.update((name, device) for name, device in stored.items() if name in found_names)
    by_address = {device.pci_address: device.pk for device in rows.values() if device.pci_address}
    relinked = []
    for info in devices:
        device = rows[info.name]
        pf = by_address.get(info.pf_address) if info.pf_address else None
        current = None if device.physical_function_id in gone else device.physical_function_id
        if pf != current or device.physical_function_id in gone:
            device.physical_function_id = pf
            relinked.append(device)
    if relinked:
        NodeDevice.objects.bulk_update(relinked, ["physical_function"])
    return len(new) + len({device.name for device in (*changed, *relinked)} - {device.name for device in new})


def _device_values(info: NodeDeviceInfo) -> dict:
    values = vars(info).copy()
    values.pop("pf_address")
    values["vf_addresses"] = list(info.vf_addresses)
    return values


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


def _lease_row(network_id: int | None, lease) -> DhcpLease:
    expires = datetime.fromtimestamp(lease.expires, tz=UTC) if lease.expires else None
    return DhcpLease(
        network_id=network_id,
        mac=lease.mac,
        address=lease.ip,
        prefix=lease.prefix,
        hostname=lease.hostname,
        client_id=lease.client_id,
        expires_at=expires,
    )


def _portgroup_values(pg) -> dict:
    values = vars(pg).copy()
    values["vlan_tags"] = list(pg.vlan_tags)
    return values
