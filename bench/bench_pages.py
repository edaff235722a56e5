"""Benchmark: server time and query count of the main pages at fleet scale, against the demo.

    .venv/bin/python bench/bench_pages.py [--scale 1] [--runs 20] [--postgres URL] [--no-sqlite]
    make bench KVMWEB_BENCH_POSTGRES=URL [KVMWEB_BENCH_SCALE=0.1]

For each database (SQLite always unless --no-sqlite; PostgreSQL when --postgres gives a server
URL, e.g. postgres://postgres:secret@127.0.0.1:5432/postgres, or KVMWEB_BENCH_POSTGRES) it
creates two private databases, a demo-sized one and the simulated fleet of bench/fleet.py
(`kvmweb_bench_demo` and `kvmweb_bench_fleet`; on SQLite files in a temporary directory), with
persistent connections (KVMWEB_DB_CONN_MAX_AGE=300, as a deployment sets it), migrates them, fills them, renders
each page in-process with Django's test Client (no network, no web server) logged in as a
superuser, and drops them afterwards. Each page is fetched once to count its queries, twice to
warm up, then `--runs` times for p50/p95 of the server time. Each database runs in a child
process of its own, so one run's caches do not help another.

Prints one table per database engine: p50/p95 in ms and queries, demo and fleet, and the
fleet's p95 as a ratio of the demo's. The target is a fleet p95 under 100 ms for every page on
PostgreSQL, and a query count that does not grow with the fleet.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_MS = 100.0


def _pages(names: dict) -> list[tuple[str, str, dict]]:
    """(label, url name or path, query) of each page measured."""
    from django.urls import NoReverseMatch, reverse

    def url(name, *args):
        try:
            return reverse(name, args=args)
        except NoReverseMatch:
            return None

    pages = [
        ("dashboard", url("networks:dashboard"), {}),
        ("hosts list", url("networks:host_list"), {}),
        ("networks list, page 1", url("networks:network_list"), {}),
        ("networks list, deep page", url("networks:network_list"), {"page": str(names["network_deep_page"])}),
        ("network with most reservations", url("networks:network_detail", names["big_network"]), {}),
        ("guests list", url("networks:guest_list"), {}),
        ("operations list", url("networks:operation_list"), {}),
        ("audit log, page 1", url("networks:audit_list"), {}),
        ("audit log, deep page", url("networks:audit_list"), names.get("audit_deep_query", {})),
        ("Addresses search, IP", url("networks:ipam"), {"q": names["search_ip"]}),
        ("Addresses search, MAC", url("networks:ipam"), {"q": names["search_mac"]}),
        ("global search", url("networks:search"), {"q": names["search_name"]}),
    ]
    return [page for page in pages if page[1] is not None]


def _audit_deep_query(client, path: str, middle: int) -> dict:
    """The query of a deep audit page, half-way down the log: `?older=<cursor of the row
    there>` on keyset pages, else `?page=<middle>` where the list pages by number."""
    import re

    body = client.get(path).content.decode()
    if "older=" in body:  # keyset pages: the cursor of the event in the middle of the log
        from networks.models import AuditEvent
        from networks.views.lists import encode_cursor

        row = AuditEvent.objects.order_by("-created_at", "-id")[middle * 50 : middle * 50 + 1].get()
        return {"older": encode_cursor(row)}
    if "cursor=" not in body:
        return {"page": str(middle)}
    query = {}
    for _ in range(min(middle, 200)):
        found = re.search(r'href="\?[^"]*cursor=([^"&]+)[^"]*"[^>]*>\s*(?:Next|Older|next|older)', body)
        if not found:
            break
        query = {"cursor": found.group(1)}
        body = client.get(path, query).content.decode()
    return query


def measure(runs: int) -> list[dict]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from networks.models import AuditEvent, Network

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    names = json.loads(os.environ["BENCH_NAMES"])
    names["network_deep_page"] = max(1, Network.objects.count() // 50 // 2)
    from django.urls import reverse

    audit_pages = max(1, AuditEvent.objects.count() // 50 // 2)
    names["audit_deep_query"] = _audit_deep_query(client, reverse("networks:audit_list"), audit_pages)
    results = []
    for label, path, query in _pages(names):
        with CaptureQueriesContext(connection) as captured:
            response = client.get(path, query)
        queries = len(captured.captured_queries)  # read now: the next request clears the log
        if response.status_code != 200:
            raise SystemExit(f"{label}: {path}?{query} answered {response.status_code}")
        for _ in range(2):
            client.get(path, query)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            client.get(path, query)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        p95 = times[min(len(times) - 1, max(0, round(0.95 * len(times)) - 1))]
        results.append(
            {
                "page": label,
                "p50": statistics.median(times),
                "p95": p95,
                "queries": queries,
                "bytes": len(response.content),
            }
        )
    return results


# ---------------------------------------------------------------- one database, in a child process


def child(args) -> None:
    """Create, migrate and fill one database, measure it, print JSON, drop it."""
    import django
    from django.core.management import call_command

    django.setup()
    from django.test.utils import setup_test_environment

    from bench import fleet

    setup_test_environment()  # lets the test Client's "testserver" in

    call_command("migrate", verbosity=0)
    sizes = fleet.Sizes.demo() if args.child == "demo" else fleet.Sizes.fleet(args.scale)
    started = time.perf_counter()
    names = fleet.generate(sizes, out=sys.stderr)
    print(f"  generated in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    os.environ["BENCH_NAMES"] = json.dumps(names)
    print(json.dumps(measure(args.runs)))


def _pg_admin(server_url: str, sql: str) -> None:
    import psycopg

    parts = urlsplit(server_url)
    with psycopg.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
        dbname=parts.path.lstrip("/") or "postgres",
        autocommit=True,
    ) as conn:
        conn.execute(sql)


def run_database(engine: str, size: str, args, scratch: Path) -> list[dict]:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", KVMWEB_DATA_DIR=str(scratch / f"{engine}-{size}"))
    # Persistent database connections, as a deployment configures them: the figures are the
    # page's work, not a new connection per request.
    env.setdefault("KVMWEB_DB_CONN_MAX_AGE", "300")
    dbname = f"kvmweb_bench_{size}"
    if engine == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{scratch / f'{dbname}.sqlite3'}"
    else:
        parts = urlsplit(args.postgres)
        env["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{dbname}"))
        _pg_admin(args.postgres, f"DROP DATABASE IF EXISTS {dbname}")
        _pg_admin(args.postgres, f"CREATE DATABASE {dbname}")
    try:
        print(f"{engine} {size}:", file=sys.stderr, flush=True)
        command = [sys.executable, __file__, "--child", size, "--scale", str(args.scale), "--runs", str(args.runs)]
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        if engine == "postgresql":
            _pg_admin(args.postgres, f"DROP DATABASE IF EXISTS {dbname}")


def table(engine: str, demo: list[dict], fleet: list[dict]) -> str:
    lines = [
        f"\n{engine}: server time in ms (in-process), queries per page",
        "| page | fleet p50 | fleet p95 | demo p50 | demo p95 | fleet/demo p95 | queries fleet / demo |",
        "|---|---|---|---|---|---|---|",
    ]
    demo_by_page = {row["page"]: row for row in demo}
    for row in fleet:
        small = demo_by_page.get(row["page"])
        if small is None:
            continue
        mark = "" if row["p95"] < TARGET_MS else " (over 100 ms)"
        lines.append(
            f"| {row['page']} | {row['p50']:.1f} | {row['p95']:.1f}{mark} | {small['p50']:.1f} | {small['p95']:.1f} "
            f"| {row['p95'] / small['p95']:.1f}x | {row['queries']} / {small['queries']} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale",
        type=float,
        default=float(os.environ.get("KVMWEB_BENCH_SCALE") or 1.0),
        help="multiplies the simulated fleet's sizes (default KVMWEB_BENCH_SCALE, else 1)",
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("KVMWEB_BENCH_POSTGRES", ""),
        help="a PostgreSQL server URL to create the databases on (default KVMWEB_BENCH_POSTGRES)",
    )
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--child", choices=("demo", "fleet"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    engines = ([] if args.no_sqlite else ["sqlite"]) + (["postgresql"] if args.postgres else [])
    output = [f"Simulated fleet at scale {args.scale} (1 = 500 hosts), {args.runs} timed runs per page"]
    with tempfile.TemporaryDirectory(prefix="kvmweb-bench-") as scratch:
        for engine in engines:
            demo = run_database(engine, "demo", args, Path(scratch))
            fleet = run_database(engine, "fleet", args, Path(scratch))
            output.append(table(engine, demo, fleet))
    print("\n".join(output))


if __name__ == "__main__":
    main()
