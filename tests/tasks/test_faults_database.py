"""The database goes away for a few seconds: a worker's write waits for it and then lands.

A private PostgreSQL (initdb + pg_ctl in a temporary directory, on a unix socket only, so
the machine's own server is never touched) is stopped and started again under a write.
"""

import threading
import time

import pytest
from django.db import OperationalError, connections

from networks.services.db_retry import retry_write
from tests.postgres import PrivatePostgres, private_postgres_as

ALIAS = "faultpg"


@pytest.fixture
def private_postgres(django_db_blocker):
    """A started PrivatePostgres, open to Django as the database alias ALIAS (this test's only:
    the test database stays blocked)."""
    with private_postgres_as(ALIAS) as server, django_db_blocker.unblock():
        yield server


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
