"""The host worker: the Celery worker that runs on a hypervisor and consumes its host's queue.

Only it can reach the host's firewall and libvirt hooks, so port forwards need it. It says it
is alive by writing `Host.worker_seen_at` (and the firewall backend it found) when it starts
and every KVMWEB_HOST_WORKER_HEARTBEAT_SECONDS; the forward pages call a host whose worker
stayed silent for three beats "host worker absent" (networks.services.forwards). A second
thread checks the host's forwards every KVMWEB_FORWARD_CHECK_SECONDS (and at its start), so
their states stay current and a changed guest address is re-applied
(forwards.host_forwards_periodic_check); it is a thread of its own because a check may wait on
libvirt or on the rules lock, and the beats must go on meanwhile. The worker also runs its host's event watcher
(host_worker_watcher_start), so the mirror follows the host's changes within seconds. It
installs the libvirt hooks when it starts, not at its first port forward: the network hook is
how its watcher learns of net-updates, for which libvirt emits no event.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from networks.models import Host

logger = logging.getLogger(__name__)


class HostWorkerError(Exception):
    """The host worker cannot start for this host (unknown host, or no queue of its own)."""


def host_worker_queue(*, host_name: str) -> str:
    """The queue a host worker for `host_name` consumes: the host's own `queue`."""
    host = Host.objects.filter(name=host_name).first()
    if host is None:
        raise HostWorkerError(f"No host named {host_name!r}.")
    if not host.queue:
        raise HostWorkerError(
            f"Host {host_name} has no queue of its own: set its queue (e.g. {host_name}) so that "
            "its operations go to the worker on the hypervisor."
        )
    return host.queue


def host_worker_beat(*, host_name: str, firewall_backend: str) -> bool:
    """Record that the host worker of `host_name` is alive. False if the host is gone."""
    fields = {"worker_seen_at": timezone.now()}
    if firewall_backend:
        fields["firewall_backend"] = firewall_backend
    return Host.objects.filter(name=host_name).update(**fields) == 1


def host_worker_heartbeat_start(*, host_name: str) -> threading.Event:
    """Beat now and then every KVMWEB_HOST_WORKER_HEARTBEAT_SECONDS, and check the host's
    forwards now and then every KVMWEB_FORWARD_CHECK_SECONDS, in two daemon threads that end
    with the worker process (or when the returned event is set)."""
    stop = threading.Event()
    for target, name in ((_beat_forever, "heartbeat"), (_check_forever, "forward-check")):
        threading.Thread(target=target, args=(host_name, stop), name=f"kvmweb-host-worker-{name}", daemon=True).start()
    return stop


def host_worker_watcher_start(*, host_name: str) -> threading.Event:
    """Follow the host's libvirt events from inside its host worker (networks.services.watch),
    over the worker's own connection to the local daemon, in a daemon thread that ends with the
    worker process (or when the returned event is set). `manage.py watchhosts` leaves a host
    whose worker beats alone, so the thread starts whatever the database says now: a host not
    there yet (or a database briefly away) is looked up by name again, with backoff.

    The hooks are installed first: the network hook's markers (one per net-update) are how the
    watcher sees net-updates within a second."""
    from networks.forwarding.engine import HostPaths
    from networks.services.watch import watcher_start

    paths = HostPaths.from_settings()
    if not settings.KVMWEB_HOST_WORKER_URI.startswith("test:"):  # the test driver runs no hooks
        _install_hooks(paths)
    stop = threading.Event()
    watcher_start(stop=stop, host_name=host_name, updates_dir=paths.network_updates_dir)
    return stop


def _install_hooks(paths) -> None:
    """Install (or refresh) the hooks now. A failure is logged, not raised: the watcher still
    runs, and its periodic XML check sees net-updates without the hook, only later."""
    from networks.forwarding.engine import install_hooks

    try:
        for warning in install_hooks(paths).warnings:
            logger.warning("host worker: %s", warning)
    except Exception:
        logger.exception("host worker: installing the libvirt hooks failed")


def _beat_forever(host_name: str, stop: threading.Event) -> None:
    while True:
        _beat_once(host_name)
        if stop.wait(settings.KVMWEB_HOST_WORKER_HEARTBEAT_SECONDS):
            return


def _check_forever(host_name: str, stop: threading.Event) -> None:
    while True:
        _check_forwards_once(host_name)
        if stop.wait(settings.KVMWEB_FORWARD_CHECK_SECONDS):
            return


def _check_forwards_once(host_name: str) -> dict | None:
    """One periodic check of the host's forwards; a failure is logged and the next check comes."""
    from networks.services import forwards

    try:
        host = Host.objects.filter(name=host_name).first()
        return forwards.host_forwards_periodic_check(host) if host is not None else None
    except Exception:
        logger.exception("host worker: checking the port forwards of %s failed", host_name)
        return None
    finally:
        close_old_connections()


def _beat_once(host_name: str) -> None:
    # A database that is briefly away must not end the heartbeat: log, and beat again later.
    try:
        if not host_worker_beat(host_name=host_name, firewall_backend=_detect_backend()):
            logger.warning("host worker heartbeat: no host named %s", host_name)
    except Exception:
        logger.exception("host worker heartbeat for %s failed", host_name)
    finally:
        close_old_connections()


def _detect_backend() -> str:
    from networks.forwarding.engine import firewall_backend

    try:
        return firewall_backend()
    except Exception as exc:  # a missing tool must not stop the beat: the backend stays unknown
        logger.warning("host worker: firewall backend not detected: %s", exc)
        return ""
