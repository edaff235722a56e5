"""The database goes away for a few seconds: a worker's write waits for it and then lands.

A private PostgreSQL (initdb + pg_ctl in a temporary directory, on a unix socket only, so
the machine's own server is never touched) is stopped and started again under a write.
"""

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from django.db import OperationalError, connections

from networks.services.db_retry import retry_write

PORT = 5439  # only names the socket file: the server listens on no TCP port
ALIAS = "faultpg"


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="kvmweb-pg-"))
        self.data = self.dir / "data"
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "kvmweb", "--auth=trust")

    def start(self) -> None:
        options = f"-k {self.dir} -c listen_addresses='' -p {PORT}"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"),
                  "-w", "start")  # fmt: skip

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def database(self) -> dict:
        return {
            "ENGINE": "django.db.backends.postgresql", "NAME": "postgres", "USER": "kvmweb", "PASSWORD": "",
            "HOST": str(self.dir), "PORT": str(PORT), "OPTIONS": {}, "TIME_ZONE": None, "CONN_MAX_AGE": 0,
            "CONN_HEALTH_CHECKS": False, "AUTOCOMMIT": True, "ATOMIC_REQUESTS": False, "TEST": {},
        }  # fmt: skip


@pytest.fixture
def private_postgres(django_db_blocker):
    """A started PrivatePostgres, open to Django as the database alias ALIAS (this test's only:
    the test database stays blocked)."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries are not installed (scripts/system-packages.sh postgres)")
    server = PrivatePostgres(bindir)
    server.init()
    server.start()
    connections.databases[ALIAS] = server.database()
    try:
        with django_db_blocker.unblock():
            yield server
    finally:
        connections[ALIAS].close()
        del connections.databases[ALIAS]
        server.remove()


def _execute(sql: str, params=()):
    with connections[ALIAS].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else None


def _restart_after(server: PrivatePostgres, seconds: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), server.start()), daemon=True)
    thread.start()
    return thread


def test_a_write_during_a_database_outage_lands_once_the_database_is_back(private_postgres):
    _execute("CREATE TABLE finished (operation integer PRIMARY KEY, status text)")
    private_postgres.stop()
    with pytest.raises(OperationalError):  # the outage is real: a plain write fails
        _execute("INSERT INTO finished VALUES (1, 'succeeded')")

    restarted = _restart_after(private_postgres, 3)
    started = time.monotonic()
    retry_write(lambda: _execute("INSERT INTO finished VALUES (2, 'succeeded')"), using=ALIAS)
    waited = time.monotonic() - started
    restarted.join(30)

    assert _execute("SELECT operation, status FROM finished") == [(2, "succeeded")]
    assert waited >= 2.5, "the write claims to have landed while the database was down"


def test_a_database_that_stays_away_makes_the_write_fail_after_the_bounded_retries(private_postgres):
    private_postgres.stop()
    slept = []
    with pytest.raises(OperationalError):
        retry_write(lambda: _execute("SELECT 1"), using=ALIAS, attempts=4, sleep=slept.append)
    assert slept == [0.5, 1.0, 2.0]
