"""The mirror follows the real daemon by itself: `manage.py watchhosts` (a process of its own, as
`make run` starts it) and a Celery worker (for the reconciliation syncs) against a private
libvirtd. Changes made with libvirt-python behind kvmweb's back reach the mirror within seconds,
with the periodic sync left at its default (300 s); a killed libvirtd shows the host
unreachable at once, and when libvirtd is back the host is reachable and the mirror current."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest
from django.test import override_settings

from networks.choices import AuditSource, HostStatus, OperationKind, OperationStatus
from networks.models import DhcpReservation, Guest, Host, Network, Operation
from networks.services import hosts as host_services
from tests.conftest import REPO, _database_url, _stop
from tests.factories import UserFactory

from .guests import boot_guest
from .kvmweb_setup import nat_network_xml

pytestmark = [pytest.mark.realvirt, pytest.mark.worker]


def _wait(predicate, timeout: float, what: str) -> float:
    """Seconds until `predicate()` held; fails after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def _syncs(host, status=OperationStatus.SUCCEEDED) -> int:
    return Operation.objects.filter(host=host, kind=OperationKind.HOST_SYNC, status=status).count()


def _state(host, name: str) -> str | None:
    return Guest.objects.filter(host=host, name=name).values_list("state", flat=True).first()


def _start_watchhosts(tmp_path: Path, broker_url: str, host_name: str, socket_dir: str):
    log_path = tmp_path / "watchhosts.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "kvmweb.settings",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": broker_url,
        "KVMWEB_DATA_DIR": str(tmp_path),
        "KVMWEB_SECRET_KEY": "watch-test",
        "KVMWEB_URI_PATHS_ALLOWED": socket_dir,
        "PYTHONUNBUFFERED": "1",
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "watchhosts", "--host", host_name],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return process, log_path


def test_the_mirror_follows_the_real_daemon_without_a_sync(
    new_private_libvirtd, guest_image, redis_socket, start_celery_worker, tmp_path
):
    daemon = new_private_libvirtd()
    socket_dir = str(daemon.socket_dir)
    conn = daemon.connect()  # behind kvmweb's back, as virsh would be
    conn.networkDefineXML(nat_network_xml("watchnet", "virbr-watch", "10.84.0")).create()
    boot_guest(conn, "w1", guest_image, daemon.scratch / "guests", network="watchnet")

    start_celery_worker(redis_socket, KVMWEB_URI_PATHS_ALLOWED=socket_dir)
    with override_settings(KVMWEB_URI_PATHS_ALLOWED=[socket_dir]):
        host = host_services.host_create(
            name="lvw", uri=daemon.uri, actor=UserFactory(username="netops"), source=AuditSource.WEB
        )
    _wait(lambda: _syncs(host) == 1, 60, "the first sync")
    watcher, log_path = _start_watchhosts(tmp_path, redis_socket, "lvw", socket_dir)
    try:
        # The watcher's start requests a reconciliation sync; let it finish first, so that what
        # follows can only reach the mirror through the watcher.
        _wait(lambda: Host.objects.get(pk=host.pk).watched_at is not None, 30, "the watcher to connect")
        _wait(lambda: _syncs(host) == 2, 60, "the reconciliation sync")
        syncs_before = _syncs(host)
        assert _state(host, "w1") == "running"

        conn.lookupByName("w1").destroy()
        took_guest = _wait(lambda: _state(host, "w1") == "shutoff", 5, "the destroyed guest shown shut off")

        conn.networkLookupByName("watchnet").update(
            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
            libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
            -1,
            "<host mac='52:54:00:84:00:07' ip='10.84.0.7' name='printer'/>",
            libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
        )
        # No event for a net-update: the XML check (every 15 s by default) finds it.
        took_reservation = _wait(
            lambda: DhcpReservation.objects.filter(network__host=host, mac="52:54:00:84:00:07", address="10.84.0.7")
            .exists(),
            20,
            "the reservation added with net-update",
        )  # fmt: skip

        conn.networkDefineXML(nat_network_xml("latenet", "virbr-late", "10.85.0"))
        took_network = _wait(
            lambda: Network.objects.filter(host=host, name="latenet").exists(), 5, "the network defined"
        )
        assert _syncs(host) == syncs_before, "no sync ran: the watcher mirrored each change"

        conn.lookupByName("w1").create()
        _wait(lambda: _state(host, "w1") == "running", 10, "the guest started again")
        qemu_pid = int(daemon.private_path("/run/libvirt/qemu/w1.pid").read_text())
        conn.close()

        daemon.stop_libvirtd()
        took_unreachable = _wait(
            lambda: Host.objects.get(pk=host.pk).status == HostStatus.UNREACHABLE, 30, "the host shown unreachable"
        )
        # The reason shown: the lost connection, then each failed attempt to reconnect.
        assert Host.objects.get(pk=host.pk).last_error.startswith(("Connection lost", "Event watcher cannot connect"))
        # While nobody listens, the guest dies: only the reconciliation can tell.
        os.kill(qemu_pid, 9)
        _wait(lambda: not Path(f"/proc/{qemu_pid}").exists(), 10, "qemu to exit")

        daemon.start_libvirtd()
        took_back = _wait(
            lambda: Host.objects.get(pk=host.pk).status == HostStatus.REACHABLE, 45, "the host reachable again"
        )
        _wait(lambda: _state(host, "w1") == "shutoff", 60, "the mirror current after the reconnection")
        conn = daemon.connect()
        conn.networkDefineXML(nat_network_xml("afternet", "virbr-after", "10.86.0"))
        _wait(lambda: Network.objects.filter(host=host, name="afternet").exists(), 5, "events followed again")
        conn.close()
    finally:
        _stop(watcher)
        print(log_path.read_text())
    print(
        f"guest destroyed: {took_guest:.2f} s; reservation (XML check): {took_reservation:.2f} s; "
        f"network defined: {took_network:.2f} s; unreachable after libvirtd stopped: {took_unreachable:.2f} s; "
        f"reachable after it started: {took_back:.2f} s"
    )


def test_a_hung_libvirtd_shows_unreachable_within_the_keepalive_window(
    new_private_libvirtd, transactional_db, monkeypatch
):
    """A daemon that keeps its socket but answers nothing (SIGSTOP): only keepalive can tell."""
    from networks.services import operations, watch
    from tests.factories import HostFactory

    monkeypatch.setattr(operations, "enqueue", lambda operation: None)  # no worker: syncs stay queued
    daemon = new_private_libvirtd()
    call_timeout = 4  # keepalive: a probe every 1 s, the connection dropped after 3 unanswered
    with override_settings(KVMWEB_URI_PATHS_ALLOWED=[str(daemon.socket_dir)], KVMWEB_HOST_CALL_TIMEOUT=call_timeout):
        host = HostFactory(name="hung", uri=daemon.uri)
        thread, watcher = watch.watcher_start(host.pk)
        try:
            _wait(lambda: Host.objects.get(pk=host.pk).status == HostStatus.REACHABLE, 10, "the watcher to connect")
            daemon.freeze_libvirtd()
            seen = []  # the row as it was when shown unreachable: a reconnect clears its error soon after

            def shown_unreachable():
                seen[:] = Host.objects.filter(pk=host.pk).values_list("status", "last_error")
                return seen[0][0] == HostStatus.UNREACHABLE

            try:
                took = _wait(shown_unreachable, 3 * call_timeout, "the hung host shown unreachable")
            finally:
                daemon.freeze_libvirtd(False)
            assert "keepalive" in seen[0][1]
            back = _wait(
                lambda: Host.objects.get(pk=host.pk).status == HostStatus.REACHABLE, 30, "the host reachable again"
            )
        finally:
            watcher.stop.set()
            thread.join(10)
    print(f"hung daemon shown unreachable after {took:.1f} s (keepalive window {call_timeout} s); back {back:.1f} s")


def _start_host_worker(daemon, tmp_path: Path, broker_url: str, host_name: str) -> tuple[subprocess.Popen, Path]:
    """scripts/host-worker.sh inside the daemon's mount and network namespaces, as on a
    hypervisor: its /etc/libvirt/hooks and qemu:///system are the private daemon's. The XML
    check is an hour apart, so only the network hook's markers can bring a net-update soon."""
    log_path = tmp_path / "host-worker.log"
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "kvmweb.settings",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": broker_url,
        "KVMWEB_DATA_DIR": str(tmp_path / "host-worker"),
        "KVMWEB_SECRET_KEY": "hook-watch-test",
        "KVMWEB_URI_PATHS_ALLOWED": str(daemon.socket_dir),
        "KVMWEB_LIBVIRTD_PIDFILE": str(daemon.scratch / "pids/libvirtd.pid"),
        "KVMWEB_XML_DIGEST_SECONDS": "3600",
        "KVMWEB_PYTHON": sys.executable,
        "PYTHONUNBUFFERED": "1",
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["nsenter", "--target", str(daemon.pids["virtlogd"]), "--mount", "--net", "--",
             str(REPO / "scripts/host-worker.sh"), host_name],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return process, log_path


def test_a_net_update_with_virsh_reaches_the_mirror_through_the_network_hook(
    new_private_libvirtd, redis_socket, transactional_db, tmp_path
):
    daemon = new_private_libvirtd()
    conn = daemon.connect()
    conn.networkDefineXML(nat_network_xml("hooknet", "virbr-hook", "10.87.0")).create()
    conn.close()
    with override_settings(KVMWEB_URI_PATHS_ALLOWED=[str(daemon.socket_dir)]):
        host = host_services.host_create(
            name="lvh", uri=daemon.uri, queue="lvh", actor=UserFactory(username="netops"), source=AuditSource.WEB
        )
    worker, log_path = _start_host_worker(daemon, tmp_path, redis_socket, "lvh")
    hook = daemon.private_path("/etc/libvirt/hooks/network.d/kvmweb")
    spool = tmp_path / "host-worker/forwards/network-updates"
    try:
        _wait(lambda: hook.exists(), 60, "the host worker to install its hooks at start")
        _wait(lambda: Host.objects.get(pk=host.pk).watched_at is not None, 30, "the host worker's watcher")
        _wait(lambda: _syncs(host) >= 1 and not _syncs(host, OperationStatus.QUEUED), 60, "the syncs")
        syncs = _syncs(host)
        assert Network.objects.filter(host=host, name="hooknet").exists()

        started = time.monotonic()
        done = subprocess.run(
            ["virsh", "-c", daemon.uri, "net-update", "hooknet", "add", "ip-dhcp-host",
             "<host mac='52:54:00:87:00:07' ip='10.87.0.7' name='printer'/>", "--live", "--config"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        took = _wait(
            lambda: DhcpReservation.objects.filter(network__host=host, mac="52:54:00:87:00:07", address="10.87.0.7")
            .exists(),
            20,
            "the reservation added with virsh net-update",
        )  # fmt: skip
        took_total = time.monotonic() - started
        assert _syncs(host) == syncs, "no sync ran: the watcher re-read the network"
        assert list(spool.iterdir()) == [], "the marker was taken"
    finally:
        _stop(worker)
        print(log_path.read_text())
    print(f"net-update to mirror through the network hook: {took:.2f} s ({took_total:.2f} s with virsh)")
