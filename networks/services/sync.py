"""Mirroring a host: read it in bulk through the hypervisor layer, then write the rows."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone

from networks.choices import AuditSource, HostStatus, OperationKind
from networks.hypervisor import inventory
from networks.hypervisor import networks as hv_networks
from networks.hypervisor.errors import HypervisorError, NotFound, brief_message
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
        found = inventory.read_host(conn)
    except HypervisorError as error:  # unreachable, refused URI, authentication refused...
        # Shown on the hosts page: libvirt's first line only, never the file it quotes.
        Host.objects.filter(pk=host.pk).update(status=HostStatus.UNREACHABLE, last_error=brief_message(str(error)))
        raise
    progress.step(70, "Updating the mirror")
    counts = mirror_host(host, found)
    for warning in found.warnings:
        progress.log(f"warning: {warning}")
    return Outcome(result=counts)


def mirror_host(host: Host, found: HostInventory) -> dict:
    """Make the rows of `host` match what was read; objects gone from the host are removed."""
    now = timezone.now()
    with transaction.atomic():
        _mirror_facts(host, found, now)
        networks = {info.name: mirror_network(host, info, now) for info in found.networks}
        host.networks.exclude(name__in=networks).delete()
        for info in found.guests:
            mirror_guest(host, info, networks, now)
        host.guests.exclude(name__in=[g.name for g in found.guests]).delete()
        _mirror_devices(host, found.devices)
    return {"networks": len(found.networks), "guests": len(found.guests), "devices": len(found.devices)}


def _mirror_facts(host: Host, found: HostInventory, now) -> None:
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


def mirror_network(host: Host, info: NetworkInfo, now=None) -> Network:
    """Write one network and replace its children with what the host reported, in one
    transaction: a reader never sees the network without its reservations, and a failure
    part way leaves the previous mirror whole."""
    with transaction.atomic():
        return _write_network(host, info, now)


def _write_network(host: Host, info: NetworkInfo, now) -> Network:
    network, _ = Network.objects.update_or_create(
        host=host,
        name=info.name,
        defaults={
            "uuid": info.uuid,
            "forward_mode": info.forward_mode,
            "forward_dev": info.forward_dev,
            "bridge": info.bridge,
            "stp": info.stp,
            "mtu": info.mtu,
            "domain_name": info.domain_name,
            "active": info.active,
            "autostart": info.autostart,
            "persistent": info.persistent,
            "connections": info.connections,
            "live_xml": info.live_xml,
            "inactive_xml": info.inactive_xml,
            "drifted": info.active and info.persistent and xml_differs(info.live_xml, info.inactive_xml),
            "leases_known": info.leases_known,
            "synced_at": now or timezone.now(),
        },
    )
    _replace_network_children(network, info)
    return network


def _replace_network_children(network: Network, info: NetworkInfo) -> None:
    network.ips.all().delete()  # cascades to ranges and reservations
    network.dns_records.all().delete()
    network.portgroups.all().delete()
    network.forward_interfaces.all().delete()
    network.dhcp_leases.all().delete()
    for position, ip_info in enumerate(info.ips):
        ip = NetworkIp.objects.create(
            network=network, position=position, address=ip_info.address, prefix=ip_info.prefix, family=ip_info.family
        )
        DhcpRange.objects.bulk_create(DhcpRange(ip=ip, start=r.start, end=r.end) for r in ip_info.dhcp_ranges)
        DhcpReservation.objects.bulk_create(
            DhcpReservation(network=network, ip=ip, address=h.ip, mac=h.mac, host_id=h.host_id, name=h.name)
            for h in ip_info.dhcp_hosts
        )
    DnsRecord.objects.bulk_create(DnsRecord(network=network, **vars(record)) for record in info.dns_records)
    Portgroup.objects.bulk_create(Portgroup(network=network, **_portgroup_values(pg)) for pg in info.portgroups)
    ForwardInterface.objects.bulk_create(
        ForwardInterface(network=network, **vars(fwd)) for fwd in info.forward_interfaces
    )
    DhcpLease.objects.bulk_create(_lease_row(network, lease) for lease in info.leases)


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


def _lease_row(network: Network, lease) -> DhcpLease:
    expires = datetime.fromtimestamp(lease.expires, tz=UTC) if lease.expires else None
    return DhcpLease(
        network=network,
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


def mirror_guest(host: Host, info: GuestInfo, networks: dict[str, Network], now) -> None:
    """Write one guest and its interfaces into the mirror, as read from its host."""
    guest, _ = Guest.objects.update_or_create(
        host=host,
        name=info.name,
        defaults={
            "uuid": info.uuid,
            "state": info.state,
            "hostdev_addresses": list(info.hostdev_addresses),
            "xml": info.xml,
            "synced_at": now,
        },
    )
    guest.interfaces.all().delete()
    GuestInterface.objects.bulk_create(
        GuestInterface(
            guest=guest,
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
            network=networks.get(iface.network),
        )
        for position, iface in enumerate(info.interfaces)
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


def _mirror_devices(host: Host, devices: tuple[NodeDeviceInfo, ...]) -> None:
    host.node_devices.all().delete()
    created = NodeDevice.objects.bulk_create(NodeDevice(host=host, **_device_values(dev)) for dev in devices)
    by_address = {dev.pci_address: dev for dev in created if dev.pci_address}
    pf_by_name = {info.name: info.pf_address for info in devices if info.pf_address}
    for device in created:
        pf = by_address.get(pf_by_name.get(device.name, ""))
        if pf is not None:
            device.physical_function = pf
    NodeDevice.objects.bulk_update(created, ["physical_function"])


def _device_values(info: NodeDeviceInfo) -> dict:
    values = vars(info).copy()
    values.pop("pf_address")
    values["vf_addresses"] = list(info.vf_addresses)
    return values
