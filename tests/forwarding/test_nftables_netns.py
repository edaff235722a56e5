"""The nftables backend, proved without libvirt >= 10: throwaway namespaces where a table
shaped like libvirt's `ip libvirt_network` rejects new connections into a "guest" bridge, as
libvirt's nftables backend does (its forward chain jumps to guest_input, which accepts only
established traffic to the network and rejects the rest). kvmweb's rules must get a client's
connection through that reject to the guest, with the client's own address.

Namespaces (all made and deleted here): HOST (bridge kvnft0 10.93.0.1/24, uplink veth
198.51.100.9/30, forwarding on), GUEST (10.93.0.10 on the bridge, a tiny HTTP server that
answers with its peer's address), CLIENT (198.51.100.10/30)."""

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from networks.forwarding import rules as fw
from tests.forwarding.test_rules import web

REPO = Path(__file__).resolve().parents[2]
HOST_UPLINK, CLIENT_ADDRESS, GUEST_IP = "198.51.100.9", "198.51.100.10", "10.93.0.10"

LIBVIRT_SHAPED_TABLE = """
table ip libvirt_network {
    chain forward {
        type filter hook forward priority 0; policy accept;
        counter jump guest_cross
        counter jump guest_input
        counter jump guest_output
    }
    chain guest_output {
        ip saddr 10.93.0.0/24 iif "kvnft0" counter accept
        iif "kvnft0" counter reject
    }
    chain guest_input {
        oif "kvnft0" ip daddr 10.93.0.0/24 ct state related,established counter accept
        oif "kvnft0" counter reject
    }
    chain guest_cross {
        iif "kvnft0" oif "kvnft0" counter accept
    }
    chain guest_nat {
        type nat hook postrouting priority 100; policy accept;
    }
}
"""

# The guest's server: answers every GET with "PEER <client address>".
SERVER = """
import http.server
class Peer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"PEER {self.client_address[0]}\\n".encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("0.0.0.0", 80), Peer).serve_forever()
"""

GET = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())"

# Run inside HOST: replace kvmweb's rules with the JSON list on stdin, print the states.
APPLY = """
import json, sys
from networks.forwarding import rules as fw
request = json.load(sys.stdin)
rules = [fw.ForwardRule(**dict(r, source_cidrs=tuple(r["source_cidrs"]))) for r in request]
backend = sys.argv[1] if len(sys.argv) > 1 else fw.NFTABLES
fw.replace_rules(backend, rules)
print(json.dumps(fw.states(backend, rules, {r.guest_name for r in rules})))
"""

# The host's own server (on every address of HOST): answers "HOST".
HOST_SERVER = SERVER.replace('f"PEER {self.client_address[0]}', 'f"HOST {self.client_address[0]}').replace(
    '("0.0.0.0", 80)', '("0.0.0.0", 8080)'
)


def _ip(*argv):
    subprocess.run(["ip", *argv], check=True, capture_output=True)


@pytest.fixture
def topology():
    with _topology(libvirt_table=True) as (host, guest, client):
        yield host, client


@pytest.fixture(params=["nftables", "iptables"])
def any_backend(request):
    """The topology for either backend (for iptables without the nft table shaped like
    libvirt's: an iptables accept could not undo its reject)."""
    if request.param == "iptables" and not shutil.which("iptables-save"):
        pytest.skip("needs iptables")
    with _topology(libvirt_table=request.param == "nftables", host_server=True) as (host, guest, client):
        yield request.param, host, guest, client


@contextlib.contextmanager
def _topology(*, libvirt_table: bool, host_server: bool = False):
    if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"):
        pytest.skip("needs root, nftables and iproute2")
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    host, guest, client = (f"kvmweb-nft-{tag}-{n}" for n in ("h", "g", "c"))
    made, servers = [], []
    try:
        for ns in (host, guest, client):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", host, "link", "add", "kvnft0", "type", "bridge")
        _ip("-n", host, "addr", "add", "10.93.0.1/24", "dev", "kvnft0")
        _ip("-n", host, "link", "set", "kvnft0", "up")
        _ip("-n", host, "link", "add", "kvg0", "type", "veth", "peer", "name", "eth0", "netns", guest)
        _ip("-n", host, "link", "set", "kvg0", "master", "kvnft0", "up")
        _ip("-n", guest, "addr", "add", f"{GUEST_IP}/24", "dev", "eth0")
        _ip("-n", guest, "link", "set", "eth0", "up")
        _ip("-n", guest, "route", "add", "default", "via", "10.93.0.1")
        _ip("-n", host, "link", "add", "kvu0", "type", "veth", "peer", "name", "eth0", "netns", client)
        _ip("-n", host, "addr", "add", f"{HOST_UPLINK}/30", "dev", "kvu0")
        _ip("-n", host, "link", "set", "kvu0", "up")
        _ip("-n", client, "addr", "add", f"{CLIENT_ADDRESS}/30", "dev", "eth0")
        _ip("-n", client, "link", "set", "eth0", "up")
        subprocess.run(["ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        if libvirt_table:
            subprocess.run(["ip", "netns", "exec", host, "nft", "-f", "-"], input=LIBVIRT_SHAPED_TABLE, text=True,
                           check=True)  # fmt: skip
        servers.append(subprocess.Popen(["ip", "netns", "exec", guest, sys.executable, "-c", SERVER]))
        if host_server:  # the host's own service on 8080 (on every address)
            servers.append(subprocess.Popen(["ip", "netns", "exec", host, sys.executable, "-c", HOST_SERVER]))
        yield host, guest, client
    finally:
        for server in servers:
            server.kill()
            server.wait()
        for ns in made:
            subprocess.run(["ip", "netns", "delete", ns], check=False)


def apply(host: str, rules, backend: str = "nftables") -> dict[int, str]:
    done = subprocess.run(
        ["ip", "netns", "exec", host, sys.executable, "-c", APPLY, backend],
        input=json.dumps([asdict(r) for r in rules]), capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {int(k): v for k, v in json.loads(done.stdout).items()}


def get(client: str, address: str = HOST_UPLINK) -> str | None:
    done = subprocess.run(["ip", "netns", "exec", client, sys.executable, "-c", GET, f"http://{address}:8080/"],
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout if done.returncode == 0 else None


def ruleset(host: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", host, "nft", "list", "ruleset"], capture_output=True, text=True
    ).stdout


def nft(host: str, command: str) -> None:
    subprocess.run(["ip", "netns", "exec", host, "nft", command], check=True)


def forward(**overrides):
    return web(guest_address=GUEST_IP, bridge="kvnft0", **overrides)


def _wait_for_server(client):
    # Before any forward the client cannot get through; give the server a moment to listen.
    time.sleep(0.5)


def test_nft_rules_get_a_client_past_libvirts_reject_and_the_guest_sees_its_address(topology):
    host, client = topology
    _wait_for_server(client)
    assert get(client) is None  # nothing forwarded: nothing listens on the host's 8080
    assert apply(host, [forward()]) == {7: "present"}
    assert get(client) == f"PEER {CLIENT_ADDRESS}\n"
    listed = ruleset(host)
    assert "table ip kvmweb" in listed
    forward_chain = listed.split("chain forward {")[1].split("}")[0]
    assert forward_chain.strip().splitlines()[1].strip() == "jump kvmweb_forward"  # first, before guest_input


def test_without_the_accept_in_libvirts_table_the_dnat_alone_is_rejected(topology):
    host, client = topology
    _wait_for_server(client)
    apply(host, [forward()])
    nft(host, "flush chain ip libvirt_network kvmweb_forward")  # our table's DNAT is still there
    assert get(client) is None
    assert apply(host, [forward()]) == {7: "present"}
    assert get(client) == f"PEER {CLIENT_ADDRESS}\n"


def test_a_jump_that_libvirt_put_above_ours_is_found_and_moved_back(topology):
    host, client = topology
    apply(host, [forward()])
    nft(host, "insert rule ip libvirt_network forward counter jump guest_input")  # what libvirt does
    assert fw.nft_present(forward(), _read(host)) is False
    assert apply(host, [forward()]) == {7: "present"}
    assert [t for _, t in _read(host).forward_rules].count("kvmweb_forward") == 1


def test_applying_twice_is_applying_once(topology):
    host, _ = topology
    apply(host, [forward()])
    once = ruleset(host)
    apply(host, [forward()])
    assert _without_handles_and_counters(ruleset(host)) == _without_handles_and_counters(once)


def test_a_source_outside_the_allowed_cidrs_is_not_forwarded(topology):
    host, client = topology
    _wait_for_server(client)
    apply(host, [forward(source_cidrs=("10.0.0.0/8",))])
    assert get(client) is None
    apply(host, [forward(source_cidrs=("198.51.100.8/30",))])
    assert get(client) == f"PEER {CLIENT_ADDRESS}\n"


def test_an_empty_list_leaves_nothing_of_kvmweb_and_libvirts_table_as_it_was(topology):
    host, client = topology
    before = _without_handles_and_counters(ruleset(host))
    apply(host, [forward()])
    assert apply(host, []) == {}
    after = ruleset(host)
    assert "kvmweb" not in after
    assert _without_handles_and_counters(after) == before
    assert get(client) is None


def _read(host: str) -> fw.NftState:
    done = subprocess.run(["ip", "netns", "exec", host, "nft", "-j", "list", "ruleset"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return fw.parse_nft_json(done.stdout)


def _without_handles_and_counters(text: str) -> list[str]:
    import re

    return [re.sub(r"counter packets \d+ bytes \d+", "counter", line).strip() for line in text.splitlines()]


def test_a_moved_range_is_forwarded_port_by_port_through_its_map(topology):
    host, client = topology
    _wait_for_server(client)
    moved = forward(host_port_start=8079, host_port_end=8080, guest_port_start=79, guest_port_end=80)
    assert apply(host, [moved]) == {7: "present"}
    assert ruleset(host).count("dnat to") == 2  # one rule per chain, not one per port
    assert get(client) == f"PEER {CLIENT_ADDRESS}\n"  # 8080 -> 80


def test_every_address_leaves_the_hosts_localhost_and_the_guests_gateway_alone(any_backend):
    """A forward of 8080 on every address: the host's own 127.0.0.1:8080 and the guest's
    connection to its gateway 10.93.0.1:8080 still reach the host's server; the client (and the
    host itself, on its uplink address) reach the guest."""
    backend, host, guest, client = any_backend
    _wait_for_server(client)
    assert get(host, "127.0.0.1") == "HOST 127.0.0.1\n"
    assert apply(host, [forward()], backend) == {7: "present"}
    assert get(client) == f"PEER {CLIENT_ADDRESS}\n"
    assert get(host, "127.0.0.1") == "HOST 127.0.0.1\n"
    assert get(guest, "10.93.0.1") == f"HOST {GUEST_IP}\n"
    assert get(host, HOST_UPLINK) == f"PEER {HOST_UPLINK}\n"  # the OUTPUT DNAT still works
