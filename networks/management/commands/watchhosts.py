import logging
import signal
import threading
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from networks.models import Host
from networks.services.watch import hosts_to_watch, watcher_start

logger = logging.getLogger(__name__)

# How often the list of hosts to watch is read again (hosts added, removed, or now watched by
# their own host worker).
RESCAN_SECONDS = 30


class Command(BaseCommand):
    help = (
        "Follow libvirt events of hosts and keep the mirror current: one thread per host. By default "
        "every host except those whose own host worker runs (it watches its host itself) and test-driver "
        "hosts (their state lives in another process)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--host", action="append", dest="hosts", metavar="NAME", help="watch only this host (repeatable)"
        )

    def handle(self, *args, hosts=None, **options):
        if hosts:
            missing = sorted(set(hosts) - set(Host.objects.filter(name__in=hosts).values_list("name", flat=True)))
            if missing:
                raise CommandError(f"No host named {', '.join(missing)}.")
        done = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: done.set())
        running: dict[int, tuple[threading.Thread, threading.Event, str]] = {}
        try:
            while not done.is_set():
                try:
                    self._rescan(hosts, running)
                except Exception:  # the database away for a moment: the watchers go on, rescan later
                    logger.exception("watchhosts: reading the hosts to watch failed")
                finally:
                    close_old_connections()
                done.wait(RESCAN_SECONDS)
        finally:
            for _thread, stop, _name in running.values():
                stop.set()
            deadline = time.monotonic() + 10  # a thread stuck in a libvirt call is left behind
            for thread, _stop, _name in running.values():
                thread.join(max(0.0, deadline - time.monotonic()))
        self.stdout.write("watchhosts stopped")

    def _rescan(self, names, running) -> None:
        wanted = {host.pk: host.name for host in hosts_to_watch(names)}
        for host_id in list(running):
            thread, stop, name = running[host_id]
            if host_id not in wanted or not thread.is_alive():
                stop.set()
                del running[host_id]
                self.stdout.write(f"no longer watching {name}")
        for host_id, name in wanted.items():
            if host_id not in running:
                stop = threading.Event()
                thread, _watcher = watcher_start(host_id, stop=stop)
                running[host_id] = (thread, stop, name)
                self.stdout.write(f"watching {name}")
        self.stdout.flush()
