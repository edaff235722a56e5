"""Benchmark: two worker processes sync a whole fleet of test-driver hosts.

    .venv/bin/python bench/bench_fleet_sync.py [--fleet-hosts 500] [--workers 2] [--postgres URL] [--no-sqlite]
                                               [--no-celery]

The fleet of the fleet-scale issue: 500 hosts, each a generated `test:///…xml` file with 20 NAT
networks of 10 DHCP reservations and 50 guests with 2 NICs (so 10,000 networks, 100,000
reservations, 25,000 guests and 50,000 interfaces in all; UUIDs differ from host to host).
The hosts are registered (host_create), then the periodic "sync every host" runs
(hosts_sync_all: one host sync operation per host) and the time until the last of them has
finished is measured, twice: the first sync into an empty mirror, then a re-sync of the
unchanged fleet.

The workers are real Celery workers (`celery -A kvmweb worker`, one process each, solo pool)
over the Redis at 127.0.0.1:6379 (database 13, so nothing else's queue is touched) when it
answers (and not --no-celery); else two plain processes that each run the operations of half
the hosts. Which one ran is printed. Each database runs in a child process of its own (SQLite always unless
--no-sqlite; PostgreSQL when --postgres gives a server URL, in a database of its own that is
dropped afterwards). On SQLite the two workers take turns at the one database file: that
contention is part of what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_sync import _pg_admin, host_xml  # noqa: E402 (after the path set-up)

NETWORKS, RESERVATIONS, GUESTS = 20, 10, 50
REDIS = ("127.0.0.1", 6379)
BROKER = "redis://127.0.0.1:6379/13"
QUEUE = "kvmweb"  # the central workers' queue (CELERY_TASK_DEFAULT_QUEUE), in a Redis database of its own


def redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def write_hosts(directory: Path, count: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    text = host_xml(networks=NETWORKS, reservations=RESERVATIONS, guests=GUESTS)
    paths = []
    for h in range(count):
        path = directory / f"host{h:04d}.xml"
        path.write_text(text.replace("00000000-0000-4000", f"{h:08x}-0000-4000"))
        paths.append(path)
    return paths


# ---------------------------------------------------------------- in the child process


def _setup():
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _register(paths: list[Path]) -> None:
    from django.contrib.auth import get_user_model

    from networks.choices import AuditSource
    from networks.services.hosts import host_create

    user = get_user_model().objects.create_superuser("bench")
    for n, path in enumerate(paths):
        host_create(name=f"host{n:04d}", uri=f"test://{path}", actor=user, source=AuditSource.WEB, sync=False)


def _wait_for(operation_ids: list[int], timeout: float) -> None:
    from networks.models import Operation

    deadline = time.monotonic() + timeout
    while Operation.objects.filter(pk__in=operation_ids, finished_at__isnull=True).exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"the syncs did not finish within {timeout:.0f} s")
        time.sleep(0.1)


def _sync_round(run_parts) -> dict:
    """Request a sync of every host (as the periodic task does) and wait for them all."""
    from django.db.models import Max, Min

    from networks.choices import OperationKind, OperationStatus
    from networks.models import Operation
    from networks.services.hosts import hosts_sync_all

    before = set(Operation.objects.values_list("pk", flat=True))
    started = time.perf_counter()
    hosts_sync_all()
    ids = sorted(set(Operation.objects.filter(kind=OperationKind.HOST_SYNC).values_list("pk", flat=True)) - before)
    run_parts(ids)
    _wait_for(ids, timeout=1800)
    elapsed = time.perf_counter() - started
    rows = Operation.objects.filter(pk__in=ids)
    span = rows.aggregate(first=Min("started_at"), last=Max("finished_at"))
    failed = rows.exclude(status=OperationStatus.SUCCEEDED).count()
    durations = sorted((end - begun).total_seconds() for begun, end in rows.values_list("started_at", "finished_at"))
    return {
        "hosts": len(ids),
        "seconds": elapsed,
        "run_seconds": (span["last"] - span["first"]).total_seconds(),
        "worker_seconds": sum(durations),
        "p50_ms": durations[len(durations) // 2] * 1000,
        "failed": failed,
    }


def _start_celery_workers(count: int, log_dir: Path) -> list[subprocess.Popen]:
    from kvmweb.celery import app

    app.control.purge()  # what an interrupted run left in the queue names operations of another database
    workers = []
    for n in range(count):
        log = open(log_dir / f"worker{n}.log", "w")  # noqa: SIM115 (open while the worker runs)
        command = [
            sys.executable, "-m", "celery", "-A", "kvmweb", "worker", "-Q", QUEUE, "-c", "1", "-P", "solo",
            "-n", f"fleet{n}-{os.getpid()}@%h", "--without-gossip", "--without-mingle", "-l", "WARNING",
        ]  # fmt: skip
        workers.append(subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))

    deadline = time.monotonic() + 60
    while len(app.control.ping(timeout=0.5)) < count:
        if time.monotonic() > deadline or any(worker.poll() is not None for worker in workers):
            _stop(workers)
            raise SystemExit(f"the Celery workers did not start (see {log_dir})")
    return workers


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:  # each by its own pid: a warm shutdown
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def child(args) -> None:
    _setup()
    from django.db import connection

    from networks.models import DhcpReservation, Guest, GuestInterface, Network
    from networks.services import operations

    scratch = Path(os.environ["KVMWEB_DATA_DIR"])
    paths = write_hosts(scratch / "hosts", args.fleet_hosts)
    _register(paths)
    workers: list[subprocess.Popen] = []
    if args.celery:
        mode = f"{args.workers} Celery workers (solo pool) over Redis"
        workers = _start_celery_workers(args.workers, scratch)

        def run_parts(ids):  # the workers take them from the queue
            pass
    else:
        mode = f"{args.workers} processes, each running the syncs of 1/{args.workers} of the hosts"
        operations.enqueue = lambda operation: None  # no broker: the parts below run them

        def run_parts(ids):
            command = [sys.executable, __file__, "--run-part"]
            parts = [
                subprocess.Popen([*command, ",".join(map(str, ids[n :: args.workers]))], env=os.environ)
                for n in range(args.workers)
            ]
            for part in parts:
                part.wait()

    try:
        rounds = {"first sync": _sync_round(run_parts), "re-sync, unchanged": _sync_round(run_parts)}
    finally:
        _stop(workers)
    mirrored = {
        "networks": Network.objects.count(),
        "reservations": DhcpReservation.objects.count(),
        "guests": Guest.objects.count(),
        "interfaces": GuestInterface.objects.count(),
    }
    print("RESULT " + json.dumps({"engine": connection.vendor, "mode": mode, "rounds": rounds, "mirrored": mirrored}))


def run_part(ids: str) -> None:
    import django

    django.setup()
    from networks.services.operations import operation_run

    for operation_id in map(int, ids.split(",")):
        operation_run(operation_id)


# ---------------------------------------------------------------- the parent


def run_database(engine: str, args, scratch: Path) -> dict:
    data_dir = scratch / engine
    data_dir.mkdir()
    env = dict(
        os.environ, DJANGO_SETTINGS_MODULE="kvmweb.settings", KVMWEB_DATA_DIR=str(data_dir),
        KVMWEB_SECRET_KEY="bench-only", KVMWEB_TEST_DRIVER_DIRS=str(data_dir / "hosts"), CELERY_BROKER_URL=BROKER,
    )  # fmt: skip
    dbname = f"kvmweb_bench_fleet_{os.getpid()}"
    if engine == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{data_dir / 'bench.sqlite3'}"
    else:
        env["DATABASE_URL"] = urlunsplit(urlsplit(args.postgres)._replace(path=f"/{dbname}"))
        _pg_admin(args.postgres, f"DROP DATABASE IF EXISTS {dbname}")
        _pg_admin(args.postgres, f"CREATE DATABASE {dbname}")
    try:
        command = [sys.executable, __file__, "--child", "--fleet-hosts", str(args.fleet_hosts)]
        command += ["--workers", str(args.workers)] + (["--celery"] if args.celery else [])
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{engine}: the benchmark failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
        return json.loads(line.removeprefix("RESULT "))
    finally:
        if engine != "sqlite":
            _pg_admin(args.postgres, f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


def report(result: dict, hosts: int) -> str:
    lines = [
        f"\n{result['engine']}: {hosts} hosts x ({NETWORKS} networks x {RESERVATIONS} reservations, "
        f"{GUESTS} guests x 2 NICs); {result['mode']}",
        f"  {'':20} {'seconds':>8} {'hosts/s':>8} {'worker s':>9} {'p50 ms':>7} {'failed':>7}",
    ]
    for label, row in result["rounds"].items():
        lines.append(
            f"  {label:20} {row['seconds']:8.1f} {row['hosts'] / row['seconds']:8.1f} "
            f"{row['worker_seconds']:9.1f} {row['p50_ms']:7.0f} {row['failed']:7}"
        )
    lines.append("  mirrored: " + ", ".join(f"{count:,} {what}" for what, count in result["mirrored"].items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fleet-hosts", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--postgres", default=os.environ.get("KVMWEB_BENCH_POSTGRES", ""), help="server URL")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-celery", action="store_true", help="plain processes even where Redis answers")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--celery", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run-part", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_part:
        run_part(args.run_part)
        return
    if args.child:
        child(args)
        return
    args.celery = not args.no_celery and redis_answers()
    engines = ([] if args.no_sqlite else ["sqlite"]) + (["postgresql"] if args.postgres else [])
    with tempfile.TemporaryDirectory(prefix="kvmweb-bench-fleet-") as scratch:
        for engine in engines:
            print(report(run_database(engine, args, Path(scratch)), args.fleet_hosts), flush=True)


if __name__ == "__main__":
    main()
