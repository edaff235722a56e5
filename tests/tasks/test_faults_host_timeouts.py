"""A host that accepts the connection and never answers must not hold a worker thread.

The "host" is a unix socket server in the test: it accepts and stays silent, as a hung
daemon or a half-dead machine behind a live TCP stack does.
"""

import socket
import threading
import time
from pathlib import Path

import pytest

from networks.choices import AuditSource, HostStatus, OperationStatus
from networks.hypervisor import client
from networks.hypervisor.errors import HostUnreachable
from networks.models import Host
from networks.operation_kinds import RetryPolicy
from networks.services import hosts as host_services
from tests.conftest import run_to_end

TIMEOUT = 4  # KVMWEB_HOST_CALL_TIMEOUT for these tests (its minimum)
SLACK = 3  # thread start-up and a loaded machine


class SilentHost:
    """Accepts every connection on a unix socket and never writes a byte."""

    def __init__(self, path: Path):
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed
                return
            self.accepted.append(conn)

    def close(self) -> None:
        # Closing the accepted sockets ends the opens libvirt still waits on.
        self.server.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_host(uri_dirs_allowed):
    path = Path(uri_dirs_allowed) / f"silent-{time.monotonic_ns()}.sock"
    host = SilentHost(path)
    client.disconnect(host.uri)
    yield host
    host.close()
    client.disconnect(host.uri)


def _in_thread(function, wait: float):
    """Run `function` in a thread; (finished, result or exception, seconds). A hang shows as
    finished=False after `wait` seconds instead of hanging the suite."""
    box = {}

    def run():
        started = time.monotonic()
        try:
            box["value"] = function()
        except Exception as error:
            box["value"] = error
        box["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(wait)
    return not thread.is_alive(), box.get("value"), box.get("seconds")


def _connect(host: SilentHost):
    return client.connect(host.uri, uri_paths_allowed=[str(host.path.parent)], call_timeout=TIMEOUT)


def test_connecting_to_a_silent_host_fails_within_the_bound_as_retryable(silent_host):
    finished, outcome, seconds = _in_thread(lambda: _connect(silent_host), wait=TIMEOUT + SLACK)

    assert finished, f"connect() still waiting after {TIMEOUT + SLACK} s: a hung host holds the thread"
    assert isinstance(outcome, HostUnreachable) and outcome.retryable
    assert f"no answer within {TIMEOUT} s" in str(outcome)
    assert seconds >= TIMEOUT - 0.5
    assert silent_host.accepted, "the test host never saw the connection: the test proves nothing"


def test_while_a_silent_host_is_pending_other_attempts_fail_fast_and_other_hosts_connect(silent_host, default_uri):
    first, _, _ = _in_thread(lambda: _connect(silent_host), wait=TIMEOUT + SLACK)
    assert first

    again, outcome, seconds = _in_thread(lambda: _connect(silent_host), wait=TIMEOUT + SLACK)
    assert again and isinstance(outcome, HostUnreachable) and outcome.retryable
    assert "earlier connection attempt still has no answer" in str(outcome)
    assert seconds < 1, "a second attempt must not park another thread on the same hung host"
    assert len(silent_host.accepted) == 1

    other, conn, _ = _in_thread(lambda: client.connect(default_uri), wait=SLACK)
    assert other and conn.getHostname()


def test_after_the_hung_open_ends_the_host_can_be_tried_again(silent_host):
    _in_thread(lambda: _connect(silent_host), wait=TIMEOUT + SLACK)
    for conn in silent_host.accepted:
        conn.close()  # the peer goes away: libvirt's waiting open fails and its thread ends
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(silent_host.accepted) < 2:
        _in_thread(lambda: _connect(silent_host), wait=0.5)
    assert len(silent_host.accepted) >= 2, "the URI stayed blocked after its hung open ended"


@pytest.mark.django_db(transaction=True)
def test_a_sync_of_a_silent_host_ends_failed_and_the_host_shows_unreachable(silent_host, admin, settings, redis_socket):
    settings.KVMWEB_HOST_CALL_TIMEOUT = TIMEOUT
    settings.KVMWEB_URI_PATHS_ALLOWED = [str(silent_host.path.parent)]
    host = host_services.host_create(name="silent", uri=silent_host.uri, actor=admin, source=AuditSource.WEB)
    operation = host.operations.get()

    finished, result, seconds = _in_thread(lambda: run_to_end(operation.pk), wait=4 * (TIMEOUT + SLACK))

    assert finished, "the sync of a silent host never ended"
    assert result.status == OperationStatus.FAILED, result.log
    assert "no answer" in result.error or "still has no answer" in result.error
    assert result.attempts == RetryPolicy().attempts and result.log.count("failed") >= RetryPolicy().attempts - 1
    assert Host.objects.get(pk=host.pk).status == HostStatus.UNREACHABLE
