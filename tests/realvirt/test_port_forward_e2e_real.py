"""Port forwards end to end: kvmweb's API, the host worker started by scripts/host-worker.sh
inside the hypervisor's namespaces, a real libvirtd (iptables backend) and a real guest.

The "hypervisor" is the private daemon's network and mount namespaces; the host worker runs
there (its firewall, its /etc/libvirt/hooks) and reaches the test database (a SQLite file) and
the broker (a unix socket) through the file system, as nothing else of the machine is reachable
from inside. A client namespace reaches the host over a veth pair (198.51.100.0/30 only).

The host's stored URI is made unreachable once it is registered: the host worker reaches its
hypervisor's own daemon (KVMWEB_HOST_WORKER_URI, qemu:///system: in the daemon's mount
namespace, the private daemon's socket), not the URI central workers use. It checks its
forwards every second (KVMWEB_FORWARD_CHECK_SECONDS), so their states follow the guest."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.test import Client, override_settings

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client as hv_client
from networks.hypervisor import xml
from networks.hypervisor.types import DhcpHost, DhcpRange, IpConfig
from networks.models import Guest, Host, Network, Operation, PortForward
from networks.services import hosts as host_services
from tests.conftest import _database_url
from tests.factories import UserFactory

from .forwarding import http_from, in_daemon_namespaces, iptables_save, wait_for
from .guests import boot_guest

pytestmark = [pytest.mark.realvirt, pytest.mark.worker]

REPO = Path(__file__).resolve().parents[2]
HOST = "kvm-pf"
NETWORK, BRIDGE = "kvpe", "kvpe0"
GUEST, GUEST_MAC, GUEST_IP = "pe-web", "52:54:00:5e:00:10", "10.92.0.10"
HOST_ADDRESS, CLIENT_ADDRESS = "198.51.100.5", "198.51.100.6"
PEER = f"PEER {CLIENT_ADDRESS}\n"
URL = f"http://{HOST_ADDRESS}:8080/cgi-bin/peer"


def _terminal(operation_id: int, timeout: float = 60) -> Operation:
    found = wait_for(lambda: (op := Operation.objects.get(pk=operation_id)).is_terminal and op, timeout, 0.1)
    assert found, f"operation {operation_id} still {Operation.objects.get(pk=operation_id).status}"
    return found


def _succeeded(operation_id: int) -> Operation:
    finished = _terminal(operation_id)
    assert finished.status == OperationStatus.SUCCEEDED, f"{finished.error}\n{finished.log}"
    return finished


@pytest.fixture
def hypervisor(new_private_libvirtd, guest_image):
    """The daemon with a NAT network, the guest on it (reserved address) and a client."""
    daemon = new_private_libvirtd()
    ip = IpConfig("10.92.0.1", 24, "ipv4", (DhcpRange("10.92.0.100", "10.92.0.150"),),
                  (DhcpHost(GUEST_IP, GUEST_MAC, GUEST),))  # fmt: skip
    conn = daemon.connect()
    net = conn.networkDefineXML(xml.build_network_xml(name=NETWORK, bridge=BRIDGE, ips=(ip,)))
    net.create()
    net.setAutostart(True)
    guest = boot_guest(conn, GUEST, guest_image, daemon.scratch / "guests", network=NETWORK, mac=GUEST_MAC)
    conn.close()
    assert guest.wait_for_lease(timeout=90) == GUEST_IP
    client = daemon.add_client_netns(client_cidr=f"{CLIENT_ADDRESS}/30", host_cidr=f"{HOST_ADDRESS}/30")
    return daemon, guest, client


@pytest.fixture
def host_worker(hypervisor, redis_socket, tmp_path):
    """Factory: start scripts/host-worker.sh HOST in the daemon's namespaces; stopped by PID."""
    daemon = hypervisor[0]
    started = []

    def start() -> Path:
        log_path = tmp_path / "host-worker.log"
        env = {
            "PATH": os.environ["PATH"],
            "DJANGO_SETTINGS_MODULE": "kvmweb.settings",
            "DATABASE_URL": _database_url(),
            "CELERY_BROKER_URL": redis_socket,
            "KVMWEB_DATA_DIR": str(tmp_path / "host-worker"),
            "KVMWEB_SECRET_KEY": "host-worker-test",
            "KVMWEB_URI_PATHS_ALLOWED": str(daemon.socket_dir),
            "KVMWEB_LIBVIRTD_PIDFILE": str(daemon.scratch / "pids/libvirtd.pid"),
            "KVMWEB_HOST_WORKER_HEARTBEAT_SECONDS": "1",
            "KVMWEB_FORWARD_CHECK_SECONDS": "1",
            "KVMWEB_PYTHON": sys.executable,
        }
        # nsenter execs the script, which execs celery: the PID is the worker's.
        process = subprocess.Popen(
            ["nsenter", "--target", str(daemon.pids["virtlogd"]), "--mount", "--net", "--",
             str(REPO / "scripts/host-worker.sh"), HOST],
            env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append(process)
        ready = wait_for(lambda: "ready" in log_path.read_text() or process.poll() is not None, 60, 0.2)
        assert ready and process.poll() is None, log_path.read_text()
        return log_path

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def kvmweb(transactional_db, hypervisor, host_worker):
    """kvmweb with the daemon registered as a host whose operations go to its host worker."""
    daemon = hypervisor[0]
    admin = UserFactory(username="netops")
    with override_settings(KVMWEB_URI_PATHS_ALLOWED=[str(daemon.socket_dir)]):
        host = host_services.host_create(name=HOST, uri=daemon.uri, actor=admin, source=AuditSource.WEB, queue=HOST)
    log = host_worker()
    _succeeded(host.operations.get().pk)  # the first sync ran on the host worker
    operator = Client()
    operator.force_login(UserFactory(username="op", role="operator"))
    try:
        yield Host.objects.get(pk=host.pk), operator, log
    finally:
        hv_client.disconnect(daemon.uri)


def _state(forward: PortForward) -> str:
    return PortForward.objects.get(pk=forward.pk).state


def _write(api: Client, method: str, url: str, data=None) -> int:
    response = getattr(api, method)(url, data, content_type="application/json")
    assert response.status_code == 202, response.content
    return response.json()["operation"]["id"]


def test_a_forward_made_in_kvmweb_reaches_the_guest_through_restarts_until_it_is_deleted(hypervisor, kvmweb):
    daemon, guest, client = hypervisor
    host, api, worker_log = kvmweb
    assert wait_for(lambda: Host.objects.get(pk=host.pk).worker_seen_at, 10), "no heartbeat"
    assert Host.objects.get(pk=host.pk).firewall_backend == "iptables"
    assert http_from(client, URL) is None
    # from here on the stored URI leads nowhere: the host worker uses its local daemon
    Host.objects.filter(pk=host.pk).update(uri="qemu+ssh://root@kvm-pf.invalid/system")

    # create: from the POST to the first connection that reaches the guest
    guest_row = Guest.objects.get(host=host, name=GUEST)
    t0 = time.monotonic()
    operation_id = _write(api, "post", "/api/port-forwards/",
                          {"host": host.pk, "guest": guest_row.pk, "host_port": 8080, "guest_port": 80})  # fmt: skip
    body = wait_for(lambda: http_from(client, URL, timeout=1), 30, 0.05)
    first_connection = time.monotonic() - t0
    assert body == PEER, worker_log.read_text()[-3000:]
    _succeeded(operation_id)
    forward = PortForward.objects.get(host=host)
    assert forward.state == "present"
    print(f"\nPOST to the first connection reaching the guest: {first_connection:.2f} s")

    # the guest destroyed and started again: the qemu hook takes the rules away and back, and
    # the host worker's periodic check records what the firewall has each time
    guest.dom.destroy()
    assert wait_for(lambda: "KVMWEB" not in iptables_save(daemon), 5)
    assert wait_for(lambda: _state(forward) == "guest_stopped", 10), _state(forward)
    guest.dom.create()
    assert guest.wait_for_lease(timeout=90) == GUEST_IP
    assert wait_for(lambda: http_from(client, URL, timeout=1), 15) == PEER
    assert wait_for(lambda: _state(forward) == "present", 10), _state(forward)

    # someone flushes kvmweb's chains: the page reads "rules missing" at the next check
    assert in_daemon_namespaces(daemon, ["iptables", "-t", "nat", "-F", "KVMWEB_PREROUTING"]).returncode == 0
    assert wait_for(lambda: _state(forward) == "missing", 10), _state(forward)
    _succeeded(_write(api, "post", f"/api/port-forwards/{forward.pk}/reapply/", {}))
    assert wait_for(lambda: http_from(client, URL, timeout=1), 10) == PEER

    # a kvmweb network restart (re-plugs the guest, re-applies and verifies the forward)
    network = Network.objects.get(host=host, name=NETWORK)
    restart = _succeeded(_write(api, "post", f"/api/networks/{network.pk}/restart/", {}))
    assert [(f["id"], f["state"], f.get("verified")) for f in restart.result["forwards"]] == [
        (forward.pk, "present", True)
    ], restart.result
    assert wait_for(lambda: http_from(client, URL, timeout=1), 10) == PEER

    # a libvirtd restart (qemu keeps running; libvirtd reconnects and runs the hook)
    daemon.restart_libvirtd()
    assert wait_for(lambda: http_from(client, URL, timeout=1), 15) == PEER

    # allowed sources that exclude the client: the rules name them, and the client is refused
    _succeeded(_write(api, "patch", f"/api/port-forwards/{forward.pk}/", {"source_cidrs": ["10.0.0.0/8"]}))
    assert "-s 10.0.0.0/8" in iptables_save(daemon)
    assert http_from(client, URL) is None
    # ... and sources that include it: it reaches the guest again
    _succeeded(_write(api, "patch", f"/api/port-forwards/{forward.pk}/", {"source_cidrs": ["198.51.100.4/30"]}))
    saved = iptables_save(daemon)
    assert "-s 198.51.100.4/30" in saved and "10.0.0.0/8" not in saved
    assert wait_for(lambda: http_from(client, URL, timeout=1), 10) == PEER

    # deleted: closed, and nothing of kvmweb in the ruleset
    t0 = time.monotonic()
    _succeeded(_write(api, "delete", f"/api/port-forwards/{forward.pk}/"))
    print(f"DELETE until its operation ended: {time.monotonic() - t0:.2f} s")
    assert http_from(client, URL) is None
    saved = iptables_save(daemon)
    assert "KVMWEB" not in saved and "kvmweb" not in saved
    assert "-A FORWARD -j LIBVIRT_FWI" in saved
