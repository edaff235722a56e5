"""A simulated fleet, written straight into the database with bulk_create (no libvirt).

    DJANGO_SETTINGS_MODULE=tests.settings DATABASE_URL=... .venv/bin/python bench/fleet.py --size fleet
    DJANGO_SETTINGS_MODULE=tests.settings DATABASE_URL=... .venv/bin/python bench/fleet.py --size demo

The database must be migrated and empty (bench/bench_pages.py creates one of its own and
drops it afterwards). Sizes (`--scale` multiplies the fleet's):

| | fleet | demo |
|---|---|---|
| hosts | 500 | 3 |
| networks | 10,000 (20 a host; 1 in 5 dual-stack, 1 a host an SR-IOV pool) | 18 |
| DHCP reservations | 100,000 (2,000 on `big-net` of host0000) | 60 (20 on `big-net`) |
| DHCP leases | 30,000 (some pools 90-100% full) | 18 |
| guests / interfaces | 25,000 / 50,000 | 30 / 60 |
| operations | 200,000 (1 in 50 failed, some in the last day) | 200 |
| audit events | 1,000,000 | 1,000 |

Audit events are append-only (UPDATE and DELETE refused by triggers; INSERT is allowed): the
generator writes them with explicit ids and a correct hash chain (`networks.services.audit.
event_digest`), oldest first, so `manage.py verifyaudit` holds on the generated log; nothing is
disabled. On PostgreSQL the id sequence is moved past the last id afterwards.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

BATCH = 5000
BIG_NETWORK = "big-net"


@dataclass(frozen=True)
class Sizes:
    hosts: int
    networks_per_host: int
    reservations: int
    big_reservations: int
    leases: int
    guests_per_host: int
    operations: int
    audit_events: int

    @classmethod
    def fleet(cls, scale: float = 1.0) -> Sizes:
        def n(value):
            return max(1, int(value * scale))

        return cls(n(500), 20, n(100_000), min(2000, n(100_000)), n(30_000), 50, n(200_000), n(1_000_000))

    @classmethod
    def demo(cls) -> Sizes:
        return cls(3, 6, 60, 20, 18, 10, 200, 1000)


def _setup():
    import django

    django.setup()


def _mac(n: int) -> str:
    return "52:54:" + ":".join(f"{(n >> shift) & 0xFF:02x}" for shift in (24, 16, 8, 0))


def _network_xml(name: str, bridge: str, subnet: str, hosts: list[tuple[str, str, str]]) -> str:
    net = ipaddress.ip_network(subnet)
    gateway = net.network_address + 1
    entries = "".join(f"      <host mac='{mac}' name='{host}' ip='{ip}'/>\n" for mac, ip, host in hosts)
    return (
        f"<network>\n  <name>{name}</name>\n  <forward mode='nat'/>\n  <bridge name='{bridge}' stp='on'/>\n"
        f"  <ip address='{gateway}' prefix='{net.prefixlen}'>\n    <dhcp>\n"
        f"      <range start='{net.network_address + 100}' end='{net.network_address + 199}'/>\n{entries}"
        "    </dhcp>\n  </ip>\n</network>\n"
    )


def _ip_extra(model, address: str, prefix: int) -> dict:
    bounds = getattr(model, "bounds_of", None)
    return bounds(address, prefix) if bounds else {}


def _range_extra(model, start: str, end: str) -> dict:
    size_of = getattr(model, "size_of", None)
    return {"size": size_of(start, end)} if size_of else {}


def generate(sizes: Sizes, *, seed: int = 11, out=sys.stdout) -> dict:
    """Write the fleet; returns the names the page benchmark visits."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.utils import timezone

    from networks.choices import (
        AddressFamily,
        AuditSource,
        ForwardMode,
        GuestState,
        HostStatus,
        OperationKind,
        OperationStatus,
    )
    from networks.models import (
        AuditEvent,
        DhcpLease,
        DhcpRange,
        DhcpReservation,
        Guest,
        GuestInterface,
        Host,
        Network,
        NetworkIp,
        NodeDevice,
        Operation,
    )
    from networks.services.audit import CHAIN_FIELDS, event_digest

    rng = random.Random(seed)
    now = timezone.now()
    started = time.perf_counter()

    def say(text):
        print(f"  {time.perf_counter() - started:7.1f}s {text}", file=out, flush=True)

    get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-password")

    # ---------------------------------------------------------------- hosts
    hosts = []
    for h in range(sizes.hosts):
        status = HostStatus.REACHABLE
        if h % 50 == 7:
            status = HostStatus.UNREACHABLE
        elif h % 97 == 3:
            status = HostStatus.UNKNOWN
        hosts.append(
            Host(
                name=f"host{h:04d}",
                uri=f"qemu+ssh://root@host{h:04d}.example.com/system",
                status=status,
                last_error="Cannot recv data: Connection reset by peer" if status == HostStatus.UNREACHABLE else "",
                last_sync_at=now - timedelta(seconds=rng.randint(1, 600)),
                hostname=f"host{h:04d}.example.com",
                hypervisor_type="QEMU",
                libvirt_version="9.0.0",
                cpus=64,
                memory_mib=262144,
            )
        )
    Host.objects.bulk_create(hosts, batch_size=BATCH)
    hosts = list(Host.objects.order_by("name"))
    say(f"{len(hosts)} hosts")

    # ---------------------------------------------------------------- networks
    modes = [ForwardMode.NAT] * 12 + [ForwardMode.NONE] * 3 + [ForwardMode.ROUTE] * 2 + [ForwardMode.BRIDGE] * 2
    networks = []
    for h, host in enumerate(hosts):
        for i in range(sizes.networks_per_host):
            name = BIG_NETWORK if (h == 0 and i == 0) else f"net{i:02d}"
            mode = ForwardMode.HOSTDEV if i == sizes.networks_per_host - 1 else modes[i % len(modes)]
            index = h * sizes.networks_per_host + i
            subnet = f"10.{index // 256 % 256}.{index % 256}.0/24"
            bridge = "" if mode == ForwardMode.HOSTDEV else f"virbr{i}"
            xml = _network_xml(name, bridge, subnet, [])
            networks.append(
                Network(
                    host=host,
                    name=name,
                    uuid=f"{index:08x}-0000-4000-8000-{h:012x}",
                    forward_mode=mode,
                    bridge=bridge,
                    active=(i % 7 != 5),
                    autostart=True,
                    drifted=(index % 211 == 13),
                    leases_known=True,
                    connections=(i % 4) if mode == ForwardMode.HOSTDEV else 0,
                    live_xml=xml,
                    inactive_xml=xml,
                    synced_at=now,
                )
            )
    Network.objects.bulk_create(networks, batch_size=BATCH)
    networks = list(Network.objects.order_by("host__name", "name").select_related("host"))
    say(f"{len(networks)} networks")

    # ---------------------------------------------------------------- ips, ranges
    ips = []
    for index, network in enumerate(networks):
        if network.forward_mode in (ForwardMode.HOSTDEV, ForwardMode.BRIDGE):
            continue
        v4 = f"10.{index // 256 % 256}.{index % 256}.1"
        ips.append(
            NetworkIp(
                network=network, position=0, address=v4, prefix=24, family=AddressFamily.IPV4,
                **_ip_extra(NetworkIp, v4, 24),
            )
        )  # fmt: skip
        if index % 5 == 0:
            v6 = f"fd00:{index // 65536:x}:{index % 65536:x}::1"
            ips.append(
                NetworkIp(
                    network=network, position=1, address=v6, prefix=64, family=AddressFamily.IPV6,
                    **_ip_extra(NetworkIp, v6, 64),
                )
            )  # fmt: skip
    NetworkIp.objects.bulk_create(ips, batch_size=BATCH)
    v4_ips = list(NetworkIp.objects.filter(family=AddressFamily.IPV4, position=0).select_related("network"))
    v4_ips.sort(key=lambda ip: (ip.network.host_id, ip.network.name))
    ranges = []
    for ip in v4_ips:
        base = ip.address.rsplit(".", 1)[0]
        start, end = f"{base}.100", f"{base}.199"
        ranges.append(DhcpRange(ip=ip, start=start, end=end, **_range_extra(DhcpRange, start, end)))
    DhcpRange.objects.bulk_create(ranges, batch_size=BATCH)
    say(f"{len(ips)} subnets, {len(ranges)} DHCP ranges")

    # ---------------------------------------------------------------- reservations
    # big-net (10.0.0.0/24) gets its reservations in 10.0.0.0/24 and beyond (a /24 holds only
    # 254, so the big network's subnet is widened to a /20 below).
    big_ip = v4_ips[0]
    assert big_ip.network.name == BIG_NETWORK
    NetworkIp.objects.filter(pk=big_ip.pk).update(prefix=20, **_ip_extra(NetworkIp, "10.0.0.1", 20))
    reservations = []
    mac_counter = 1
    big_hosts = []
    for r in range(sizes.big_reservations):
        address = str(ipaddress.ip_address("10.0.0.0") + 256 + r)
        mac, name = _mac(mac_counter), f"big{r:04d}"
        mac_counter += 1
        reservations.append(DhcpReservation(network=big_ip.network, ip=big_ip, address=address, mac=mac, name=name))
        big_hosts.append((mac, address, name))
    others = v4_ips[1:]
    rest = sizes.reservations - sizes.big_reservations
    per_network, extra = divmod(rest, max(1, len(others)))
    made = 0
    for n, ip in enumerate(others):
        if made >= rest:
            break
        base = ip.address.rsplit(".", 1)[0]
        for k in range(min(per_network + (n < extra), 90, rest - made)):
            reservations.append(
                DhcpReservation(
                    network=ip.network, ip=ip, address=f"{base}.{10 + k}", mac=_mac(mac_counter),
                    name=f"res-{ip.network.host.name}-{ip.network.name}-{k}",
                )
            )  # fmt: skip
            mac_counter += 1
            made += 1
    DhcpReservation.objects.bulk_create(reservations, batch_size=BATCH)
    big_xml = _network_xml(BIG_NETWORK, "virbr0", "10.0.0.0/20", big_hosts)
    Network.objects.filter(pk=big_ip.network_id).update(live_xml=big_xml, inactive_xml=big_xml)
    say(f"{len(reservations)} reservations ({sizes.big_reservations} on {BIG_NETWORK})")

    # ---------------------------------------------------------------- leases
    leases = []
    # Most pools are lightly used; 1 in 40 is 90-100% full (the dashboard's warning).
    for n, ip in enumerate(v4_ips):
        if len(leases) >= sizes.leases:
            break
        base = ip.address.rsplit(".", 1)[0]
        count = rng.randint(90, 100) if n % 40 == 1 else rng.randint(0, 3)
        for k in range(min(count, sizes.leases - len(leases))):
            leases.append(
                DhcpLease(
                    network=ip.network, mac=_mac(0x40000000 + len(leases)), address=f"{base}.{100 + k}",
                    prefix=24, hostname=f"dyn{len(leases)}", expires_at=now + timedelta(hours=1),
                )
            )  # fmt: skip
    DhcpLease.objects.bulk_create(leases, batch_size=BATCH)
    say(f"{len(leases)} leases")

    # ---------------------------------------------------------------- guests, interfaces
    states = [GuestState.RUNNING] * 6 + [GuestState.SHUTOFF] * 3 + [GuestState.PAUSED]
    guests = []
    for h, host in enumerate(hosts):
        for g in range(sizes.guests_per_host):
            guests.append(
                Guest(
                    host=host, name=f"vm{g:03d}-{host.name}", uuid=f"{h:08x}-{g:04x}-4000-8000-000000000000",
                    state=states[g % len(states)], xml="<domain type='kvm'><name>vm</name></domain>", synced_at=now,
                )
            )  # fmt: skip
    Guest.objects.bulk_create(guests, batch_size=BATCH)
    guests = list(Guest.objects.order_by("host_id", "name").only("pk", "host_id"))
    by_host: dict[int, list] = {}
    for network in networks:
        if network.forward_mode not in (ForwardMode.HOSTDEV,):
            by_host.setdefault(network.host_id, []).append(network)
    interfaces = []
    for n, guest in enumerate(guests):
        nets = by_host.get(guest.host_id) or [None]
        for position in range(2):
            network = nets[(n + position * 7) % len(nets)]
            interfaces.append(
                GuestInterface(
                    guest=guest, position=position, type="network", mac=_mac(0x20000000 + 2 * n + position),
                    source=network.name if network else "", model="virtio", target_dev=f"vnet{position}",
                    network=network,
                )
            )  # fmt: skip
    GuestInterface.objects.bulk_create(interfaces, batch_size=BATCH)
    say(f"{len(guests)} guests, {len(interfaces)} interfaces")

    # ---------------------------------------------------------------- SR-IOV PFs and VFs
    devices = []
    for host in hosts:
        devices.append(
            NodeDevice(
                host=host, name="pci_0000_3b_00_0", capability="pci", pci_address="0000:3b:00.0", driver="ixgbe",
                vf_max=8, vf_addresses=[f"0000:3b:10.{k}" for k in range(4)], net_interface="ens1f0",
            )
        )  # fmt: skip
    NodeDevice.objects.bulk_create(devices, batch_size=BATCH)

    # ---------------------------------------------------------------- operations
    created_at = Operation._meta.get_field("created_at")
    created_at.auto_now_add = False  # the generator dates them itself
    try:
        kinds = [OperationKind.NETWORK_UPDATE] * 6 + [OperationKind.HOST_SYNC] * 3 + [OperationKind.NETWORK_RESTART]
        operations = []
        span = 90 * 86400
        for o in range(sizes.operations):
            network = networks[o % len(networks)]
            status = OperationStatus.FAILED if o % 50 == 0 else OperationStatus.SUCCEEDED
            when = now - timedelta(seconds=span * (sizes.operations - o) / sizes.operations)
            operations.append(
                Operation(
                    kind=kinds[o % len(kinds)], status=status, host_id=network.host_id, host_name=network.host.name,
                    network=network, target_name=network.name, lock_key=f"network:{network.host_id}:{network.name}",
                    progress=100, requested_by_name="bench", source=AuditSource.WEB, created_at=when,
                    started_at=when, finished_at=when + timedelta(seconds=1),
                    error="Requested operation is not valid: network is not active" if status == "failed" else "",
                )
            )  # fmt: skip
            if len(operations) >= BATCH:
                Operation.objects.bulk_create(operations)
                operations = []
        Operation.objects.bulk_create(operations)
    finally:
        created_at.auto_now_add = True
    say(f"{sizes.operations} operations")

    # ---------------------------------------------------------------- audit events (hash chain)
    actions = ["network.update.requested", "network.update.succeeded", "host.sync.succeeded", "network.start.requested"]
    previous = ""
    span = 90 * 86400
    batch = []
    with transaction.atomic():
        for e in range(1, sizes.audit_events + 1):
            host = hosts[e % len(hosts)]
            event = AuditEvent(
                id=e, created_at=now - timedelta(seconds=span * (sizes.audit_events - e) / sizes.audit_events),
                actor_name="bench", source=AuditSource.WEB, action=actions[e % len(actions)], host_id=host.pk,
                host_name=host.name, object_type="network", object_name=f"net{e % 20:02d}",
                message="Bench change", client_address=None,
            )  # fmt: skip
            previous = event.chain_hash = event_digest(previous, {name: getattr(event, name) for name in CHAIN_FIELDS})
            batch.append(event)
            if len(batch) >= BATCH:
                AuditEvent.objects.bulk_create(batch)
                batch = []
        AuditEvent.objects.bulk_create(batch)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                table = AuditEvent._meta.db_table
                cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", [table, sizes.audit_events])
    say(f"{sizes.audit_events} audit events")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    else:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    say("analyzed")
    sample_lease = leases[len(leases) // 2] if leases else None
    return {
        "big_network": big_ip.network_id,
        "search_ip": str(ipaddress.ip_address(others[len(others) // 2].address) + 50) if others else "10.0.0.77",
        "search_mac": reservations[len(reservations) // 2].mac.upper(),
        "search_name": sample_lease.hostname if sample_lease else "big0001",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("fleet", "demo"), default="fleet")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the fleet's sizes")
    args = parser.parse_args()
    _setup()
    sizes = Sizes.fleet(args.scale) if args.size == "fleet" else Sizes.demo()
    print(generate(sizes))


if __name__ == "__main__":
    main()
