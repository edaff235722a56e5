"""The host worker's queue lookup (scripts/host-worker.sh asks it) and its heartbeat."""

import io
import time

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from networks.models import Host
from networks.services import hostworker
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
