"""Port forwards on a real libvirtd (9.0, iptables backend) with one real guest serving HTTP.

The "host" is the private daemon's network namespace; a client namespace reaches it over a
veth pair with TEST-NET-2 addresses (198.51.100.0/30, on that veth only). The engine runs in
the daemon's namespaces as the host worker would, and installs its hooks into the daemon's
private /etc/libvirt/hooks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from networks.forwarding.rules import ForwardRule
from networks.hypervisor import xml
from networks.hypervisor.types import DhcpHost, DhcpRange, IpConfig

from .forwarding import REPO as _REPO
from .forwarding import http_from, http_in_daemon, in_daemon_namespaces, iptables_save, run_engine, wait_for
from .guests import boot_guest
from .libvirtd import PrivateLibvirtd

pytestmark = pytest.mark.realvirt

REPO = Path(__file__).resolve().parents[2]
NETWORK, BRIDGE = "kvpf", "kvpf0"
GUEST, GUEST_MAC, GUEST_IP = "pf-web", "52:54:00:5f:00:10", "10.91.0.10"
HOST_ADDRESS, CLIENT_ADDRESS = "198.51.100.1", "198.51.100.2"
HOST_PORT = 8080


def forward(**overrides) -> ForwardRule:
    values = {
        "forward_id": 1,
        "protocol": "tcp",
        "host_address": None,
        "host_port_start": HOST_PORT,
        "host_port_end": HOST_PORT,
        "guest_name": GUEST,
        "guest_mac": GUEST_MAC,
        "guest_address": GUEST_IP,
        "guest_port_start": 80,
        "guest_port_end": 80,
        "bridge": BRIDGE,
    }
    return ForwardRule(**(values | overrides))


@pytest.fixture(scope="module")
def daemon(_swept):
    """A daemon of this module's own: its hooks and restarts touch no other test."""
    caps = os.environ.get("KVMWEB_LIBVIRT_CAPS_CACHE") or REPO / "var" / "libvirt-caps"
    lvd = PrivateLibvirtd(caps_cache=caps).start()
    try:
        yield lvd
    finally:
        lvd.stop()


@pytest.fixture(scope="module")
def guest(daemon, guest_image):
    """The guest, with a reservation so that it keeps its address across restarts."""
    ip = IpConfig("10.91.0.1", 24, "ipv4", (DhcpRange("10.91.0.100", "10.91.0.150"),),
                  (DhcpHost(GUEST_IP, GUEST_MAC, GUEST),))  # fmt: skip
    conn = daemon.connect()
    conn.networkDefineXML(xml.build_network_xml(name=NETWORK, bridge=BRIDGE, ips=(ip,))).create()
    booted = boot_guest(conn, GUEST, guest_image, daemon.scratch / "guests", network=NETWORK, mac=GUEST_MAC)
    assert booted.wait_for_lease(timeout=90) == GUEST_IP
    try:
        yield booted
    finally:
        conn.close()
        daemon.reset()


@pytest.fixture(scope="module")
def client(daemon, guest):
    return daemon.add_client_netns(client_cidr=f"{CLIENT_ADDRESS}/30", host_cidr=f"{HOST_ADDRESS}/30")


@pytest.fixture
def clean(daemon, guest):
    """Each test leaves the host without forwards."""
    yield
    run_engine(daemon, "apply", [])


def url(path: str = "/cgi-bin/peer") -> str:
    return f"http://{HOST_ADDRESS}:{HOST_PORT}{path}"


def rules_of_kvmweb(saved: str) -> list[str]:
    return [line for line in saved.splitlines() if "KVMWEB" in line or "kvmweb" in line]


def test_a_forward_reaches_the_guest_which_sees_the_clients_address(daemon, guest, client, clean):
    assert http_from(client, url()) is None  # nothing forwarded yet
    t0 = time.monotonic()
    states, backend = run_engine(daemon, "apply", [forward()])
    body = wait_for(lambda: http_from(client, url(), timeout=1), 10)
    elapsed = time.monotonic() - t0
    assert (states, backend) == ({1: "present"}, "iptables")
    assert body == f"PEER {CLIENT_ADDRESS}\n", body
    print(f"\nengine apply to first connection through: {elapsed:.2f} s")

    forward_chain = [line for line in iptables_save(daemon).splitlines() if line.startswith("-A FORWARD ")]
    assert forward_chain[0] == "-A FORWARD -j KVMWEB_FORWARD"  # before libvirt's reject
    assert "-A FORWARD -j LIBVIRT_FWI" in forward_chain
    for kind in ("qemu", "network"):
        assert daemon.private_path(f"/etc/libvirt/hooks/{kind}.d/kvmweb").stat().st_mode & 0o111
    # what the network hook counts as running guests: libvirt's status file of each
    assert daemon.private_path(f"/run/libvirt/qemu/{GUEST}.xml").exists()


def test_applying_the_same_forwards_twice_changes_nothing(daemon, guest, client, clean):
    run_engine(daemon, "apply", [forward()])
    once = rules_of_kvmweb(iptables_save(daemon))
    assert run_engine(daemon, "apply", [forward()])[0] == {1: "present"}
    assert rules_of_kvmweb(iptables_save(daemon)) == once
    assert run_engine(daemon, "check", [forward()])[0] == {1: "present"}


def test_the_qemu_hook_removes_the_rules_when_the_guest_stops_and_restores_them_when_it_starts(
    daemon, guest, client, clean
):
    run_engine(daemon, "apply", [forward()])
    time.sleep(1)  # libvirtd re-reads its hooks after the SIGHUP the engine sent
    guest.dom.destroy()
    assert wait_for(lambda: not rules_of_kvmweb(iptables_save(daemon)), 5), "stopped guest kept its rules"
    assert run_engine(daemon, "check", [forward()])[0] == {1: "guest_stopped"}

    guest.dom.create()  # qemu truncates the serial log: the next lease marker is the new one
    assert wait_for(lambda: rules_of_kvmweb(iptables_save(daemon)), 5), "the started hook did not run"
    assert guest.wait_for_lease(timeout=90) == GUEST_IP
    assert wait_for(lambda: http_from(client, url(), timeout=1), 15) == f"PEER {CLIENT_ADDRESS}\n"


def test_after_a_libvirtd_restart_the_reconnect_hook_puts_lost_rules_back(daemon, guest, client, clean):
    run_engine(daemon, "apply", [forward()])
    # Rules lost while libvirtd is down (someone flushed the chain): reconnect restores them.
    daemon.stop_libvirtd()
    assert in_daemon_namespaces(daemon, ["iptables", "-F", "KVMWEB_FORWARD"]).returncode == 0
    assert run_engine(daemon, "check", [forward()])[0] == {1: "missing"}
    seconds = daemon.start_libvirtd()
    assert wait_for(lambda: run_engine(daemon, "check", [forward()])[0] == {1: "present"}, 10)
    assert wait_for(lambda: http_from(client, url(), timeout=1), 10) == f"PEER {CLIENT_ADDRESS}\n"
    print(f"\nlibvirtd back in {seconds:.2f} s")


def test_a_source_cidr_that_excludes_the_client_blocks_it(daemon, guest, client, clean):
    states, _ = run_engine(daemon, "apply", [forward(source_cidrs=("10.0.0.0/8",))])
    assert states == {1: "present"}
    assert http_from(client, url()) is None
    states, _ = run_engine(daemon, "apply", [forward(source_cidrs=("198.51.100.0/30",))])
    assert http_from(client, url()) == f"PEER {CLIENT_ADDRESS}\n"


def test_the_forward_of_a_guest_that_does_not_run_is_kept_for_its_next_start(daemon, guest, client, clean):
    other = forward(forward_id=2, guest_name="pf-stopped", host_port_start=2222, host_port_end=2222)
    states, _ = run_engine(daemon, "apply", [forward(), other])
    assert states == {1: "present", 2: "guest_stopped"}
    saved = iptables_save(daemon)
    assert '--comment "kvmweb:1"' in saved and "kvmweb:2" not in saved


def test_an_empty_list_closes_the_port_and_leaves_nothing_of_kvmweb(daemon, guest, client, clean):
    run_engine(daemon, "apply", [forward()])
    assert http_from(client, url()) is not None
    assert run_engine(daemon, "apply", [])[0] == {}
    assert http_from(client, url()) is None
    assert rules_of_kvmweb(iptables_save(daemon)) == []
    # libvirt's own rules are untouched
    assert "-A FORWARD -j LIBVIRT_FWI" in iptables_save(daemon)


def test_the_network_hook_reapplies_when_a_network_starts(daemon, guest, client, clean):
    """libvirt re-creates its chains when a network starts; the network hook then puts kvmweb's
    rules back in front (here: rules lost meanwhile, and a second network started)."""
    run_engine(daemon, "apply", [forward()])
    assert in_daemon_namespaces(daemon, ["iptables", "-F", "KVMWEB_FORWARD"]).returncode == 0
    conn = daemon.connect()
    ip = IpConfig("10.94.0.1", 24, "ipv4", ())
    other = conn.networkDefineXML(xml.build_network_xml(name="kvpf-other", bridge="kvpf1", ips=(ip,)))
    try:
        other.create()
        assert wait_for(lambda: run_engine(daemon, "check", [forward()])[0] == {1: "present"}, 5)
        assert http_from(client, url()) == f"PEER {CLIENT_ADDRESS}\n"
    finally:
        other.destroy()
        other.undefine()
        conn.close()


# The hypervisor's own service on 127.0.0.1 (only): answers "LOCAL".
LOCAL_SERVER = """
import sys, http.server
class Local(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"LOCAL\\n")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Local).serve_forever()
"""


def test_a_forward_on_every_address_leaves_the_hosts_own_localhost_alone(daemon, guest, client, clean):
    """A forward of 8080 on every address must not take the hypervisor's localhost:8080 (a DNAT from
    127.0.0.1 to a guest is a martian and the connection hangs); the host's connection to its own
    other addresses, and the client's, still reach the guest."""
    argv = ["nsenter", "--target", str(daemon.pids["virtlogd"]), "--mount", "--net", f"--wd={_REPO}", "--",
            sys.executable, "-c", LOCAL_SERVER, str(HOST_PORT)]  # fmt: skip
    local = subprocess.Popen(argv)
    try:
        local_url = f"http://127.0.0.1:{HOST_PORT}/"
        assert wait_for(lambda: http_in_daemon(daemon, local_url, timeout=1), 10) == "LOCAL\n"
        states, _ = run_engine(daemon, "apply", [forward()])
        assert states == {1: "present"}
        assert http_in_daemon(daemon, local_url) == "LOCAL\n"
        assert http_from(client, url()) == f"PEER {CLIENT_ADDRESS}\n"
        assert http_in_daemon(daemon, url()) == f"PEER {HOST_ADDRESS}\n"  # the OUTPUT DNAT, not loopback
        saved = iptables_save(daemon)
        assert (
            f"-A KVMWEB_OUTPUT ! -d 127.0.0.0/8 -p tcp -m addrtype --dst-type LOCAL -m tcp --dport {HOST_PORT}" in saved
        )
        assert f'-A KVMWEB_PREROUTING -i {BRIDGE} -m comment --comment "kvmweb:guest-bridge" -j RETURN' in saved
    finally:
        local.kill()
        local.wait()
