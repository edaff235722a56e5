"""The registry of operation kinds: what each kind runs, what it locks, how it retries and
how an interrupted run is recovered.

This module is a leaf: it imports no service. Each service declares its kinds next to
their run functions with `@operation_kind(...)`; the dispatcher in
`networks.services.operations` looks them up here, and a system check (networks/checks.py)
fails start-up when an `OperationKind` has no entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

NETWORK = "network"  # excludes other operations on the same network, and host-wide ones
HOST = "host"  # excludes every other operation on the host (a sync reads all of it)
LOCK_SCOPES = (NETWORK, HOST)


@dataclass(frozen=True)
class RetryPolicy:
    """How often an operation whose host is unreachable is tried again, and how long it waits.

    Only errors marked retryable (connection lost or refused, timeouts) are retried;
    permanent ones (bad XML, authentication refused) fail at once.
    """

    # 2, 4, 8, 16 and 30 s: about a minute, long enough for a libvirtd restart on a busy host.
    attempts: int = 6  # in all, the first included
    first_delay: float = 2.0  # seconds before the second attempt, doubling each time
    max_delay: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the `attempt`-th failed try (1-based)."""
        return min(self.first_delay * 2 ** (attempt - 1), self.max_delay)


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class KindSpec:
    kind: str
    run: Callable  # (operation, progress) -> Outcome
    lock: str = NETWORK
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # (operation, progress) -> Outcome: called instead of `run` for an operation whose worker
    # died mid-way, with what the run recorded in `operation.checkpoint`. None: an interrupted
    # run is ended as failed ("interrupted") and its host synced again, so the row and the
    # mirror stay honest; a kind whose run is safe to repeat passes a recover that repeats it.
    recover: Callable | None = None


_registry: dict[str, KindSpec] = {}


def operation_kind(kind: str, *, lock: str = NETWORK, retry: RetryPolicy | None = None, recover=None):
    """Register the decorated function as the run function of `kind`."""
    if lock not in LOCK_SCOPES:
        raise ValueError(f"lock must be one of {LOCK_SCOPES}, not {lock!r}")

    def register(run: Callable) -> Callable:
        if kind in _registry and _registry[kind].run is not run:
            raise ValueError(f"operation kind {kind!r} is registered twice")
        _registry[kind] = KindSpec(kind, run, lock, retry or RetryPolicy(), recover)
        return run

    return register


def spec(kind: str) -> KindSpec:
    try:
        return _registry[kind]
    except KeyError:
        raise LookupError(f"no run function is registered for operation kind {kind!r}") from None


def registered_kinds() -> set[str]:
    return set(_registry)
