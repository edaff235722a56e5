"""Retrying a worker's database write across a short database outage.

A worker that changed a host must still record it once the database answers again:
otherwise the row says "running" while the host is already changed. Django does not
reconnect by itself after the server dropped a connection: the broken connection is
closed here, and the next query opens a new one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connections

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Errors of an unreachable or restarting server; anything else (a constraint, bad SQL) is a
# bug that retrying would only repeat.
_OUTAGE_ERRORS = (OperationalError, InterfaceError)


def retry_write(
    write: Callable[[], T],
    *,
    attempts: int = 6,
    first_delay: float = 0.5,
    max_delay: float = 8.0,
    using: str = "default",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `write()`; while the database is unreachable, close the broken connection and try
    again, waiting first_delay, doubling up to max_delay, `attempts` times in all (about 24 s
    with the defaults). The last error is raised if the database never came back.

    Inside a transaction nothing is retried: the transaction's earlier work is lost with
    the connection, so the caller must start it again.
    """
    connection = connections[using]
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return write()
        except _OUTAGE_ERRORS as error:
            if connection.in_atomic_block or attempt == attempts:
                raise
            logger.warning("Database unreachable (%s); try %s of %s in %.1f s", error, attempt + 1, attempts, delay)
            drop_connection(connection)
            sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")  # the loop returns or raises


def drop_connection(connection) -> None:
    # close() on a connection the server already dropped can fail too: it is gone either way.
    try:
        connection.close()
    except DatabaseError:
        connection.connection = None
