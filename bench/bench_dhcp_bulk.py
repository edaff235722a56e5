"""Benchmark: adding many DHCP reservations, kvmweb against a plain libvirt-python loop.

    .venv/bin/python bench/bench_dhcp_bulk.py [--test-count 1000] [--real-count 200] [--no-real]

Prints, from one run, for the test driver and (as root) a private real libvirtd:
  floor        a plain libvirt-python loop over one connection (live+config updates)
  kvmweb live  one bulk-import Operation, strategy (a): checked rows, one connection
  kvmweb config  the same with persistent-only updates (applied at the next restart)
  kvmweb (b)   persistent-only updates, then one restart that re-plugs guests (--b-count rows)
  per-op       separate single-reservation Operations (kvmweb's per-operation overhead)
with each figure's ratio to the floor measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kvmweb.settings")
os.environ.setdefault("KVMWEB_DATA_DIR", tempfile.mkdtemp(prefix="kvmweb-bench-"))
os.environ.setdefault("KVMWEB_SECRET_KEY", "bench")

import django  # noqa: E402

django.setup()

import libvirt  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from lxml import etree  # noqa: E402

from networks.hypervisor import client, xml  # noqa: E402
from networks.hypervisor.types import DhcpRange, IpConfig  # noqa: E402
from networks.models import Host, Network  # noqa: E402
from networks.services import hosts as host_services  # noqa: E402
from networks.services.connections import host_connection  # noqa: E402
from networks.services.netupdate import network_request_bulk_import, network_request_update  # noqa: E402
from networks.services.operations import operation_run  # noqa: E402

NETWORK = "benchnet"
LIVE_AND_CONFIG = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG


def reservations(count: int) -> list[tuple[str, str, str]]:
    """(mac, ip, name) inside 10.200.0.0/20, away from the gateway and the dynamic range."""
    rows = []
    for i in range(count):
        address = f"10.200.{4 + i // 250}.{1 + i % 250}"
        rows.append((f"52:54:00:c8:{i // 256:02x}:{i % 256:02x}", address, f"bench{i}"))
    return rows


def fresh_network(conn: libvirt.virConnect) -> None:
    for name in conn.listNetworks() + conn.listDefinedNetworks():
        if name == NETWORK:
            net = conn.networkLookupByName(name)
            if net.isActive():
                net.destroy()
            net.undefine()
    network_xml = xml.build_network_xml(
        name=NETWORK,
        bridge="kvbench0",
        ips=(IpConfig("10.200.0.1", 20, "ipv4", (DhcpRange("10.200.0.10", "10.200.0.250"),)),),
    )
    conn.networkDefineXML(network_xml).create()


def floor_loop(conn: libvirt.virConnect, rows) -> float:
    net = conn.networkLookupByName(NETWORK)
    started = time.perf_counter()
    for mac, ip, name in rows:
        fragment = etree.tostring(etree.Element("host", mac=mac, ip=ip, name=name), encoding="unicode")
        net.update(
            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, 0, fragment,
            LIVE_AND_CONFIG,
        )  # fmt: skip
    return time.perf_counter() - started


def synced_network(host: Host) -> Network:
    operation_run(host_services.host_request_sync(host=host, actor=None, source="system").pk)
    return Network.objects.get(host=host, name=NETWORK)


def kvmweb_bulk(host: Host, rows, strategy: str) -> float:
    network = synced_network(host)
    csv_text = "\n".join(",".join(row) for row in rows)
    started = time.perf_counter()
    operation = network_request_bulk_import(
        network=network, csv_text=csv_text, strategy=strategy, actor=None, source="system"
    )
    finished = operation_run(operation.pk)
    elapsed = time.perf_counter() - started
    assert finished.status == "succeeded", finished.error
    return elapsed


def kvmweb_one_operation_each(host: Host, rows) -> float:
    network = synced_network(host)
    started = time.perf_counter()
    for mac, ip, name in rows:
        operation = network_request_update(
            network=network, section="ip-dhcp-host", command="add-last",
            values={"mac": mac, "ip": ip, "name": name}, actor=None, source="system",
        )  # fmt: skip
        finished = operation_run(operation.pk)
        assert finished.status == "succeeded", finished.error
        network.refresh_from_db()
    return time.perf_counter() - started


def measure(label: str, uri: str, count: int, per_op_count: int, b_count: int) -> list[tuple[str, float]]:
    host = Host.objects.filter(uri=uri).first() or host_services.host_create(
        name=label.replace(" ", "-"), uri=uri, actor=None, source="system", sync=False
    )
    conn = host_connection(host)  # kvmweb's own cached connection: the test driver shares its state
    rows = reservations(count)
    results = []
    for name, row_count, run in (
        ("floor: libvirt-python loop", count, lambda: floor_loop(conn, rows)),
        ("kvmweb bulk (a), live", count, lambda: kvmweb_bulk(host, rows, "live")),
        ("kvmweb bulk, config only", count, lambda: kvmweb_bulk(host, rows, "config")),
        ("kvmweb bulk (b), config + restart", b_count, lambda: kvmweb_bulk(host, reservations(b_count), "restart")),
        ("kvmweb, single operations", per_op_count, lambda: kvmweb_one_operation_each(host, rows[:per_op_count])),
    ):
        fresh_network(conn)
        results.append((name, row_count, run()))
        print(f"  {label}: {name}, {row_count} rows: {results[-1][2]:.2f} s", flush=True)
    return results


def report(label: str, results) -> None:
    floor_rows, floor = results[0][1], results[0][2]
    print(f"\n{label}")
    print(f"  {'':36} {'rows':>6} {'seconds':>9} {'per row ms':>11} {'x floor':>8}")
    for name, rows, seconds in results:
        ratio = (seconds / rows) / (floor / floor_rows)
        print(f"  {name:36} {rows:6} {seconds:9.2f} {1000 * seconds / rows:11.2f} {ratio:8.2f}")
    print("  (x floor compares per-row cost with the floor's)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-count", type=int, default=1000)
    parser.add_argument("--real-count", type=int, default=200)
    parser.add_argument("--b-count", type=int, default=1000, help="rows for strategy (b)")
    parser.add_argument("--no-real", action="store_true")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)

    test_results = measure("test driver", "test:///default", args.test_count, min(200, args.test_count), args.b_count)
    report("test driver", test_results)
    if args.no_real or os.geteuid() != 0:
        print("\nreal daemon: skipped (needs root, or --no-real given)")
        return
    from tests.realvirt.libvirtd import PrivateLibvirtd

    with PrivateLibvirtd() as daemon:
        # kvmweb may open the private daemon's socket, as a deployer would allow /run/libvirt.
        settings.KVMWEB_URI_PATHS_ALLOWED = [str(daemon.socket_dir)]
        real_results = measure("real daemon", daemon.uri, args.real_count, args.real_count, args.b_count)
        client.disconnect(daemon.uri)
    report("real daemon, NAT network", real_results)


if __name__ == "__main__":
    main()
