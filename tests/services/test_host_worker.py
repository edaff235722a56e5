"""The host worker's queue lookup (scripts/host-worker.sh asks it), its heartbeat and the
periodic check of its host's forwards that the heartbeat runs."""

import io
import time

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from networks.models import Host
from networks.services import forwards, hostworker
from tests.factories import HostFactory


def hostqueue(name: str) -> str:
    out = io.StringIO()
    call_command("hostqueue", name, stdout=out)
    return out.getvalue()


def test_hostqueue_prints_the_hosts_own_queue_alone(db):
    HostFactory(name="kvm1", queue="kvm1-forwards")
    assert hostqueue("kvm1") == "kvm1-forwards\n"


def test_a_host_without_a_queue_gets_no_host_worker(db):
    HostFactory(name="kvm1", queue="")
    with pytest.raises(CommandError, match="kvm1 has no queue of its own"):
        hostqueue("kvm1")


def test_an_unknown_host_gets_no_host_worker(db):
    with pytest.raises(CommandError, match="No host named 'kvm9'"):
        hostqueue("kvm9")


def test_a_beat_records_when_the_worker_was_seen_and_its_firewall_backend(db):
    host = HostFactory(name="kvm1", queue="kvm1")
    before = timezone.now()
    assert hostworker.host_worker_beat(host_name="kvm1", firewall_backend="nftables")
    host.refresh_from_db()
    assert host.worker_seen_at >= before and host.firewall_backend == "nftables"


def test_a_beat_without_a_detected_backend_keeps_the_last_one(db):
    host = HostFactory(name="kvm1", queue="kvm1", firewall_backend="iptables")
    assert hostworker.host_worker_beat(host_name="kvm1", firewall_backend="")
    host.refresh_from_db()
    assert host.firewall_backend == "iptables"


def test_a_beat_for_a_removed_host_says_so(db):
    assert not hostworker.host_worker_beat(host_name="gone", firewall_backend="iptables")


def test_the_heartbeat_thread_beats_until_stopped(transactional_db, settings, monkeypatch):
    settings.KVMWEB_HOST_WORKER_HEARTBEAT_SECONDS = 1
    monkeypatch.setattr(hostworker, "_detect_backend", lambda: "iptables")  # the machine's firewall is not ours
    HostFactory(name="kvm1", queue="kvm1")
    stop = hostworker.host_worker_heartbeat_start(host_name="kvm1")
    try:
        first = _wait_for_beat(None)
        assert _wait_for_beat(first) > first
    finally:
        stop.set()


def _wait_for_beat(after, timeout: float = 5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = Host.objects.get(name="kvm1").worker_seen_at
        if seen and (after is None or seen > after):
            return seen
        time.sleep(0.05)
    raise AssertionError("no heartbeat")


def test_the_heartbeat_checks_the_hosts_forwards_at_start_and_then_every_check_interval(
    transactional_db, settings, monkeypatch
):
    settings.KVMWEB_HOST_WORKER_HEARTBEAT_SECONDS = 1
    settings.KVMWEB_FORWARD_CHECK_SECONDS = 2
    monkeypatch.setattr(hostworker, "_detect_backend", lambda: "iptables")
    checks = []
    monkeypatch.setattr(forwards, "host_forwards_periodic_check", lambda host: checks.append(time.monotonic()))
    HostFactory(name="kvm1", queue="kvm1")
    started = time.monotonic()
    stop = hostworker.host_worker_heartbeat_start(host_name="kvm1")
    try:
        deadline = time.monotonic() + 10
        while len(checks) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
    assert len(checks) >= 2, "no second check"
    assert checks[0] - started < 1, "the first check comes with the first beat"
    assert checks[1] - checks[0] >= 2 - 0.1, "not before the check interval"


def test_a_failing_check_is_logged_and_does_not_stop_the_heartbeat(db, monkeypatch, caplog):
    HostFactory(name="kvm1", queue="kvm1")

    def broken(host):
        raise OSError("rules file unreadable")

    monkeypatch.setattr(forwards, "host_forwards_periodic_check", broken)
    assert hostworker._check_forwards_once("kvm1") is None
    assert "checking the port forwards of kvm1 failed" in caplog.text


def test_a_slow_forward_check_does_not_hold_up_the_beats(transactional_db, settings, monkeypatch):
    """A check waiting on libvirt or the rules lock (here: until the test ends) must not make
    the host read "host worker absent"."""
    import threading

    settings.KVMWEB_HOST_WORKER_HEARTBEAT_SECONDS = 1
    monkeypatch.setattr(hostworker, "_detect_backend", lambda: "iptables")
    released = threading.Event()
    monkeypatch.setattr(forwards, "host_forwards_periodic_check", lambda host: released.wait(30))
    HostFactory(name="kvm1", queue="kvm1")
    stop = hostworker.host_worker_heartbeat_start(host_name="kvm1")
    try:
        first = _wait_for_beat(None)
        assert _wait_for_beat(first) > first, "the beats stopped while a check was running"
    finally:
        released.set()
        stop.set()
