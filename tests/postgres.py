"""A private PostgreSQL server for fault tests: initdb + pg_ctl in a temporary directory,
listening on a unix socket only, so the machine's own server is never touched and a test
may stop and start it at will."""

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connections

PORT = 5439  # only names the socket file: the server listens on no TCP port


def postgres_bindir() -> Path | None:
    """Where the newest installed server's programs are; None when none is installed."""

    def version(path: str) -> tuple[int, ...]:  # .../postgresql/15/bin/pg_ctl: sorted by number, newest last
        return tuple(int(part) for part in Path(path).parts[-3].split(".") if part.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=version)
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
        """Stop at once (-m fast): open connections are cut, as when the server restarts."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def database(self) -> dict:
        """Its `postgres` database as a Django DATABASES entry."""
        return {
            "ENGINE": "django.db.backends.postgresql", "NAME": "postgres", "USER": "kvmweb", "PASSWORD": "",
            "HOST": str(self.dir), "PORT": str(PORT), "OPTIONS": {}, "TIME_ZONE": None, "CONN_MAX_AGE": 0,
            "CONN_HEALTH_CHECKS": False, "AUTOCOMMIT": True, "ATOMIC_REQUESTS": False, "TEST": {},
        }  # fmt: skip

    def url(self) -> str:
        """The same database as a DATABASE_URL (the socket directory as the host, percent-encoded)."""
        return f"postgres://kvmweb@{quote(str(self.dir), safe='')}:{PORT}/postgres"


@contextlib.contextmanager
def private_postgres_as(alias: str):
    """A started PrivatePostgres, open to Django as the database `alias` for the block, removed
    afterwards. Skips the test when no PostgreSQL server is installed."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries are not installed (scripts/system-packages.sh lists postgresql)")
    server = PrivatePostgres(bindir)
    server.init()
    server.start()
    connections.databases[alias] = server.database()
    try:
        yield server
    finally:
        connections[alias].close()
        del connections.databases[alias]
        server.remove()
