"""Benchmark: a host sync against the floor of reading the same host with libvirt-python.

    .venv/bin/python bench/bench_sync.py [--runs 7] [--scale 1] [--postgres URL] [--no-sqlite]

The host is libvirt's test driver on a generated `test:///…xml` file (written to a temporary
directory): 50 NAT networks with 20 DHCP reservations each, 500 guests with 2 NICs each (one
in ten shut off), an SR-IOV PF with 8 VFs and a few more PCI and net devices (`--scale`
multiplies the networks and guests). One connection stays open for the whole run.

- floor: libvirt-python alone reads what a sync reads, over that open connection: every
  network (list, XMLDesc live and inactive, DHCP leases where the driver has them), every
  domain (list, state, XMLDesc), the PCI and net node devices (list, XMLDesc) and the host's
  facts (info, versions, hostname, interfaces, capabilities, domain capabilities). No
  parsing, no database.
- first sync: kvmweb's sync (read through the hypervisor layer, then mirror) into an empty
  mirror.
- changed host: before each measured sync, 10% of the objects change on the host (a DHCP
  reservation added to or removed from 5 networks; 25 running guests paused or resumed; 25
  shut-off guests redefined with a NIC's link toggled).
- unchanged host: the same host synced again with nothing changed.

Printed for each database (SQLite always unless --no-sqlite; PostgreSQL when --postgres gives
a server URL, in a database of its own that is dropped afterwards): p50 in ms, the ratio to
the floor's p50 measured in the same run (a floor read before each measured sync, so a
machine whose load changes during the run moves both alike), the queries of one sync
(CaptureQueriesContext, in a round of its own: recording the queries slows the sync) and the
peak RSS of the process. Targets: a changed host within 2x the floor, an unchanged one
within 1.3x, and a number of queries that does not grow with the host (compare --scale 0.2).
Each database runs in a child process of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

NETWORKS, RESERVATIONS, GUESTS, NICS, VFS = 50, 20, 500, 2, 8
CHANGED_NETWORKS, PAUSED_GUESTS, REDEFINED_GUESTS = 5, 25, 25
TARGET_CHANGED, TARGET_UNCHANGED = 2.0, 1.3


# ---------------------------------------------------------------- the host file


def _network(n: int, reservations: int) -> str:
    subnet = f"10.{100 + n // 250}.{n % 250}"
    hosts = "".join(
        f"<host mac='52:54:01:{n // 256:02x}:{n % 256:02x}:{h:02x}' name='r{n}-{h}' ip='{subnet}.{10 + h}'/>"
        for h in range(reservations)
    )
    return (
        f"<network><name>net{n:03d}</name><uuid>00000000-0000-4000-8000-{n:012x}</uuid>"
        f"<forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward>"
        f"<bridge name='virbr{n}' stp='on' delay='0'/><domain name='net{n}.lan'/>"
        f"<ip address='{subnet}.1' netmask='255.255.255.0'><dhcp>"
        f"<range start='{subnet}.100' end='{subnet}.199'/>{hosts}</dhcp></ip></network>"
    )


def _domain(g: int, networks: int, nics: int, shutoff: bool) -> str:
    interfaces = "".join(
        f"<interface type='network'><mac address='52:54:02:{g // 256:02x}:{g % 256:02x}:{i:02x}'/>"
        f"<source network='net{(g + i) % networks:03d}'/><model type='virtio'/>"
        f"<address type='pci' domain='0x0000' bus='0x00' slot='0x{3 + i:02x}' function='0x0'/></interface>"
        for i in range(nics)
    )
    return (
        f"<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>"
        f"<name>guest{g:04d}</name><uuid>00000000-0000-4000-9000-{g:012x}</uuid>"
        f"<memory unit='MiB'>1024</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
        f"<devices><disk type='file' device='disk'><source file='/var/lib/libvirt/images/g{g}.qcow2'/>"
        f"<target dev='vda' bus='virtio'/></disk>{interfaces}</devices>"
        f"<test:runstate>{5 if shutoff else 1}</test:runstate></domain>"
    )


def _pci(bus: int, slot: int, function: int, extra: str, group: int) -> str:
    address = f"domain='0x0000' bus='0x{bus:02x}' slot='0x{slot:02x}' function='0x{function:x}'"
    return (
        f"<device><name>pci_0000_{bus:02x}_{slot:02x}_{function:x}</name><parent>computer</parent>"
        f"<capability type='pci'><class>0x020000</class><domain>0</domain><bus>{bus}</bus><slot>{slot}</slot>"
        f"<function>{function}</function><product id='0x10fb'>NIC</product><vendor id='0x8086'>Intel</vendor>"
        f"{extra}<iommuGroup number='{group}'><address {address}/></iommuGroup></capability></device>"
    )


def _devices(vfs: int) -> str:
    def address(function):
        return f"<address domain='0x0000' bus='0x01' slot='0x10' function='0x{function:x}'/>"

    pf_address = "<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>"
    parts = [
        _pci(1, 0, 0, f"<capability type='virt_functions' maxCount='63'>{''.join(map(address, range(vfs)))}"
             "</capability>", 14),
        _pci(0, 0x19, 0, "", 7),
        *(_pci(1, 0x10, f, f"<capability type='phys_function'>{pf_address}</capability>", 40 + f) for f in range(vfs)),
        "<device><name>net_ens1f0_90_e2_ba_5a_00_10</name><parent>pci_0000_01_00_0</parent>"
        "<capability type='net'><interface>ens1f0</interface><address>90:e2:ba:5a:00:10</address>"
        "<link speed='10000' state='up'/><capability type='80203'/></capability></device>",
    ]  # fmt: skip
    return "".join(parts)


def host_xml(networks=NETWORKS, reservations=RESERVATIONS, guests=GUESTS, nics=NICS, vfs=VFS) -> str:
    """A test driver file: `networks` NAT networks, `guests` guests (one in ten shut off)."""
    return (
        "<?xml version='1.0'?><node><cpu><mhz>2900</mhz><model>x86_64</model><active>16</active>"
        "<nodes>1</nodes><sockets>1</sockets><cores>8</cores><threads>2</threads></cpu>"
        "<memory>67108864</memory>"
        + "".join(_network(n, reservations) for n in range(networks))
        + "".join(_domain(g, networks, nics, shutoff=g % 10 == 9) for g in range(guests))
        + "<interface type='ethernet' name='ens1f0'><start mode='onboot'/><mac address='90:e2:ba:5a:00:10'/>"
        "</interface><device><name>computer</name><capability type='system'><product>bench</product>"
        "<hardware><uuid>00000000-0000-4000-8000-0000000000b1</uuid></hardware>"
        "</capability></device>" + _devices(vfs) + "</node>"
    )


# ---------------------------------------------------------------- the floor and the changes


def floor_read(conn) -> int:
    """What a sync reads, by libvirt-python alone. Returns the bytes of XML read."""
    import libvirt

    size = 0
    for net in conn.listAllNetworks():
        size += len(net.XMLDesc(0))
        if net.isPersistent():
            with contextlib.suppress(libvirt.libvirtError):  # the test driver has no separate one
                size += len(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
        net.isActive(), net.autostart()
        with contextlib.suppress(libvirt.libvirtError):  # not on the test driver
            net.DHCPLeases()
    for dom in conn.listAllDomains():
        dom.state()
        size += len(dom.XMLDesc(0))
    wanted = libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV | libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET
    for dev in conn.listAllDevices(wanted):
        size += len(dev.XMLDesc(0))
    conn.getInfo(), conn.getVersion(), conn.getLibVersion(), conn.getHostname(), conn.getType()
    for iface in conn.listAllInterfaces():
        size += len(iface.XMLDesc(0))
    size += len(conn.getCapabilities())
    with contextlib.suppress(libvirt.libvirtError):  # not on the test driver
        size += len(conn.getDomainCapabilities())
    return size


def change_host(conn, round_number: int, scale: float) -> None:
    """10% of the objects change: reservations on 5 networks, 25 guests paused or resumed,
    25 shut-off guests redefined."""
    import libvirt
    from lxml import etree

    networks, guests = _sizes(scale)
    adding = round_number % 2 == 0
    for k in range(max(1, CHANGED_NETWORKS * networks // NETWORKS)):
        n = (k * 7 + round_number - round_number % 2) % networks  # an odd round removes what the even one added
        net = conn.networkLookupByName(f"net{n:03d}")
        subnet = f"10.{100 + n // 250}.{n % 250}"
        host = f"<host mac='52:54:03:{n // 256:02x}:{n % 256:02x}:01' name='extra{n}' ip='{subnet}.90'/>"
        with contextlib.suppress(libvirt.libvirtError):  # already there / gone: another round's network
            net.update(
                libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST if adding else libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, host,
                libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
            )  # fmt: skip
    running = [g for g in range(guests) if g % 10 != 9]
    shutoff = [g for g in range(guests) if g % 10 == 9]
    for g in running[: max(1, PAUSED_GUESTS * guests // GUESTS)]:
        dom = conn.lookupByName(f"guest{g:04d}")
        dom.suspend() if dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING else dom.resume()
    for g in shutoff[: max(1, REDEFINED_GUESTS * guests // GUESTS)]:
        root = etree.fromstring(conn.lookupByName(f"guest{g:04d}").XMLDesc(0))
        iface = root.find("devices/interface")
        link = iface.find("link")
        if link is None:
            etree.SubElement(iface, "link", state="down")
        else:
            iface.remove(link)
        conn.defineXML(etree.tostring(root, encoding="unicode"))


def _sizes(scale: float) -> tuple[int, int]:
    return max(2, int(NETWORKS * scale)), max(10, int(GUESTS * scale))


# ---------------------------------------------------------------- one database, in a child process


def _p50_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def child(args) -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from networks.choices import AuditSource
    from networks.hypervisor import client, snapshot
    from networks.models import Host
    from networks.services import operations
    from networks.services.hosts import host_create
    from networks.services.sync import mirror_host

    call_command("migrate", verbosity=0)
    operations.enqueue = lambda operation: None  # no broker: the sync is run here
    networks, guests = _sizes(args.scale)
    path = Path(os.environ["KVMWEB_BENCH_DIR"]) / "host.xml"
    path.write_text(host_xml(networks=networks, guests=guests))
    uri = f"test://{path}"
    user = get_user_model().objects.create_superuser("bench")
    host = host_create(name="bench", uri=uri, actor=user, source=AuditSource.WEB)
    conn = client.connect(uri, test_driver_dirs=(str(path.parent),), uri_paths_allowed=())
    host = Host.objects.get(pk=host.pk)

    written = {}

    def sync(count: bool = False) -> tuple[float, int]:
        """What a host sync operation runs: read the host, then mirror it. With `count`, its
        queries are counted (and its time is not a fair one: recording each query with its
        parameters, as Django's query log does, costs ~2 ms of a changed host's sync)."""
        connection.queries_log.clear()  # it keeps at most 9,000: counted from empty each time
        with CaptureQueriesContext(connection) if count else contextlib.nullcontext() as queries:
            started = time.perf_counter()
            read_at = timezone.now()  # as host_sync_run: rows the watcher wrote since are left alone
            counts = mirror_host(host, snapshot.read_host(conn), read_at=read_at)
            elapsed = time.perf_counter() - started
        written.update(counts.get("written", {}))
        return elapsed, len(queries.captured_queries) if count else 0

    floors = []

    def floor() -> None:
        started = time.perf_counter()
        floor_read(conn)
        floors.append(time.perf_counter() - started)

    floor_read(conn)  # warm up
    floor()
    first, first_queries = sync(count=True)  # one run: its queries counted as it is timed
    changed, unchanged = [], []
    for round_number in range(args.runs):
        change_host(conn, round_number, args.scale)
        floor()  # what the host holds now, read right before the sync that reads it
        changed.append(sync()[0])
        floor()
        unchanged.append(sync()[0])
    change_host(conn, args.runs, args.scale)  # one more round, its queries counted, not timed
    changed_queries, unchanged_queries = sync(count=True)[1], sync(count=True)[1]
    floor = _p50_ms(floors)
    result = {
        "engine": connection.vendor,
        "networks": networks,
        "guests": guests,
        "floor_ms": floor,
        "rows": [
            ("first sync", first * 1000, first * 1000 / floor, first_queries),
            ("changed host (10%)", _p50_ms(changed), _p50_ms(changed) / floor, changed_queries),
            ("unchanged host", _p50_ms(unchanged), _p50_ms(unchanged) / floor, unchanged_queries),
        ],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print("RESULT " + json.dumps(result))


def _pg_admin(server_url: str, sql: str) -> None:
    import psycopg

    parts = urlsplit(server_url)
    with psycopg.connect(
        host=parts.hostname, port=parts.port or 5432, user=parts.username, password=parts.password,
        dbname=parts.path.lstrip("/") or "postgres", autocommit=True,
    ) as conn:  # fmt: skip
        conn.execute(sql)


def run_database(engine: str, args, scratch: Path) -> dict:
    data_dir = scratch / engine
    data_dir.mkdir()
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", KVMWEB_DATA_DIR=str(data_dir))
    env["KVMWEB_BENCH_DIR"] = env["KVMWEB_TEST_DRIVER_DIRS"] = str(data_dir)
    dbname = f"kvmweb_bench_sync_{os.getpid()}"
    if engine == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{data_dir / 'bench.sqlite3'}"
    else:
        env["DATABASE_URL"] = urlunsplit(urlsplit(args.postgres)._replace(path=f"/{dbname}"))
        _pg_admin(args.postgres, f"DROP DATABASE IF EXISTS {dbname}")
        _pg_admin(args.postgres, f"CREATE DATABASE {dbname}")
    try:
        command = [sys.executable, __file__, "--child", "--runs", str(args.runs), "--scale", str(args.scale)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{engine}: the benchmark failed:\n{done.stderr[-4000:]}")
        line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
        return json.loads(line.removeprefix("RESULT "))
    finally:
        if engine != "sqlite":
            _pg_admin(args.postgres, f"DROP DATABASE IF EXISTS {dbname}")


def report(result: dict) -> str:
    lines = [
        f"\n{result['engine']}: {result['networks']} networks x {RESERVATIONS} reservations, "
        f"{result['guests']} guests x {NICS} NICs, {VFS + 3} node devices; peak RSS {result['peak_rss_mb']:.0f} MB",
        f"  {'':22} {'p50 ms':>9} {'x floor':>8} {'queries':>8}  target",
        f"  {'floor (libvirt-python)':22} {result['floor_ms']:9.1f} {1:8.2f} {0:8}",
    ]
    targets = {"changed host (10%)": TARGET_CHANGED, "unchanged host": TARGET_UNCHANGED}
    for label, ms, ratio, queries in result["rows"]:
        target = targets.get(label)
        verdict = "" if target is None else f"<= {target}x: {'met' if ratio <= target else 'NOT met'}"
        lines.append(f"  {label:22} {ms:9.1f} {ratio:8.2f} {queries:8}  {verdict}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the networks and guests")
    parser.add_argument("--postgres", default=os.environ.get("KVMWEB_BENCH_POSTGRES", ""), help="server URL")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    engines = ([] if args.no_sqlite else ["sqlite"]) + (["postgresql"] if args.postgres else [])
    with tempfile.TemporaryDirectory(prefix="kvmweb-bench-sync-") as scratch:
        for engine in engines:
            print(report(run_database(engine, args, Path(scratch))), flush=True)


if __name__ == "__main__":
    main()
