"""PostgreSQL restarts while a real worker is part way through an operation.

The worker, the private Redis and a private PostgreSQL (tests/postgres.py) are the real
programs; the database is stopped (pg_ctl stop -m fast: every connection is cut) while a
bulk import is writing its progress, and started again a few seconds later. The operation
must still end in a terminal state, with every row applied once, and the record of it
(result, mirror, audit event) must have landed.
"""

import os
import subprocess
import sys
import time

import pytest
from django.db import connections

from networks.models import AuditEvent, Network, Operation
from tests.conftest import DEMO_URI, REPO
from tests.postgres import PrivatePostgres, private_postgres_as

pytestmark = pytest.mark.worker

ALIAS = "workerpg"
# Every free address of the demo network's /24: a few seconds of rows for the worker.
ROWS = [(f"52:54:00:77:00:{n:02x}", f"192.168.122.{n}", f"bulk{n}") for n in range(20, 254)]
OUTAGE_SECONDS = 3


@pytest.fixture
def worker_database(transactional_db, django_db_blocker, tmp_path):
    """A private PostgreSQL, migrated, open to this test as the alias ALIAS; the worker and
    the set-up commands reach it through DATABASE_URL. (transactional_db comes first: the
    test case it sets up would otherwise bar the alias.)"""
    with private_postgres_as(ALIAS) as server:
        _manage(server, tmp_path, "", "migrate", "--no-input")
        with django_db_blocker.unblock():
            yield server


def _start_manage(server: PrivatePostgres, tmp_path, broker_url: str, *argv: str) -> subprocess.Popen:
    """Start manage.py on the private database, as the web server would run a request."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "kvmweb.settings",
        "DATABASE_URL": server.url(),
        "CELERY_BROKER_URL": broker_url or "redis://127.0.0.1:1/0",  # migrate sends nothing
        "KVMWEB_DATA_DIR": str(tmp_path),
        "KVMWEB_SECRET_KEY": "database-fault-test",
        "KVMWEB_TEST_DRIVER_DIRS": str(REPO / "demo"),
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", *argv], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _manage(server: PrivatePostgres, tmp_path, broker_url: str, *argv: str) -> str:
    """Run manage.py on the private database to its end; returns what it printed."""
    process = _start_manage(server, tmp_path, broker_url, *argv)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


REGISTER_DEMO_HOST = f"""
from networks.choices import AuditSource
from networks.services.hosts import host_create
from tests.factories import UserFactory

host = host_create(name="demo", uri={DEMO_URI!r}, actor=UserFactory(username="alice"), source=AuditSource.WEB)
print(host.operations.get().pk)
"""

REQUEST_IMPORT = """
from networks.choices import AuditSource
from networks.models import Network
from networks.services.netupdate import network_request_bulk_import
from tests.factories import UserFactory

operation = network_request_bulk_import(
    network=Network.objects.get(host__name="demo", name="default"), csv_text={csv!r}, strategy="live",
    actor=UserFactory(username="alice"), source=AuditSource.WEB,
)
print(operation.pk)
"""


def _operation(pk: int) -> Operation:
    return Operation.objects.using(ALIAS).get(pk=pk)


def _wait_for_operation(pk: int, done, timeout: float, what: str) -> Operation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        operation = _operation(pk)
        if done(operation):
            return operation
        time.sleep(0.05)
    raise AssertionError(f"operation {pk} still {operation.status} ({operation.step}) after {timeout} s: {what}")


def test_a_database_restart_during_a_bulk_import_still_ends_it_with_every_row_applied_once(
    worker_database, private_redis, start_celery_worker, tmp_path
):
    _, worker_log = start_celery_worker(private_redis.url, "dbfault", DATABASE_URL=worker_database.url())
    sync = int(_manage(worker_database, tmp_path, private_redis.url, "shell", "--no-imports", "-c", REGISTER_DEMO_HOST))
    assert _wait_for_operation(sync, lambda o: o.is_terminal, 120, "the first sync").status == "succeeded"

    csv = "mac,ip,name\n" + "".join(f"{mac},{ip},{name}\n" for mac, ip, name in ROWS)
    request = REQUEST_IMPORT.format(csv=csv)
    # The id is read as soon as it is printed: the worker is sending rows while that process exits.
    requesting = _start_manage(worker_database, tmp_path, private_redis.url, "shell", "--no-imports", "-c", request)
    first_line = requesting.stdout.readline()
    assert first_line.strip().isdigit(), first_line + requesting.communicate(timeout=60)[0]
    pk = int(first_line)
    # Its first progress report has landed: rows are being sent to the host.
    running = _wait_for_operation(pk, lambda o: o.is_terminal or " of " in o.step, 120, "the first rows")
    assert running.status == "running", f"the import ended before the outage: {running.status} {running.step}"
    connections[ALIAS].close()

    worker_database.stop()
    time.sleep(OUTAGE_SECONDS)
    worker_database.start()

    operation = _wait_for_operation(pk, lambda o: o.is_terminal, 120, "after the database came back")
    assert requesting.wait(60) == 0, requesting.stdout.read()
    assert "Database unreachable" in worker_log.read_text(), "the worker never met the outage"
    # A few seconds' outage is well inside the writes' retries (about 24 s): the import must
    # have gone on where it stopped, not merely failed with a message.
    assert operation.status == "succeeded", f"{operation.error}\n{operation.log}"
    total = len(ROWS)
    assert (operation.result["added"], operation.result["failed"], operation.result["already_present"]) == (
        total, 0, 0,
    )  # fmt: skip
    assert [row["status"] for row in operation.result["rows"]] == ["added"] * total
    assert operation.step == "Done" and operation.progress == 100

    # The mirror, as the worker re-read it from the host after the last row: each row once.
    # (The test driver cannot show a network's persistent config apart from its live one, so
    # the import is "live": the running network and its config both get each row.)
    network = Network.objects.using(ALIAS).get(host__name="demo", name="default")
    mirrored = list(network.dhcp_reservations.values_list("mac", "address", "name"))
    for row in ROWS:
        assert mirrored.count(row) == 1, row
    events = AuditEvent.objects.using(ALIAS).filter(operation_id=pk).values_list("action", flat=True)
    assert sorted(events) == ["network.bulk_import.requested", "network.bulk_import.succeeded"]
