"""Addresses from a guest's agent: asked only where it is safe and cheap, never failing a sync.

No database. The real daemon's side (a channel no agent opened) is in
tests/realvirt/test_guest_page_real.py; the guests built for the tests run no agent, so a slow or
failing agent is played here by a stand-in domain object.
"""

import subprocess
import sys
import threading
import time

import libvirt
import pytest

from networks.hypervisor import client, inventory
from networks.hypervisor.inventory import AgentSilent, GuestAgentReader, addresses_by_mac, agent_addresses
from networks.hypervisor.types import GuestInfo, GuestInterface
from tests.conftest import DEMO_URI, REPO

# What libvirt-python's virDomain.interfaceAddresses() returns (a dict per guest NIC name).
AGENT_ANSWER = {
    "lo": {"hwaddr": "00:00:00:00:00:00", "addrs": [{"type": 0, "addr": "127.0.0.1", "prefix": 8}]},
    "eth0": {
        "hwaddr": "52:54:00:AA:00:01",
        "addrs": [
            {"type": 0, "addr": "192.168.122.57", "prefix": 24},
            {"type": 1, "addr": "fe80::5054:ff:feaa:1", "prefix": 64},
            {"type": 1, "addr": "fd00:30::57", "prefix": 64},
        ],
    },
    "eth1": {"hwaddr": "52:54:00:aa:00:02", "addrs": None},
}


def test_a_sync_of_the_test_driver_never_asks_a_guest_agent():
    # mon01 in the demo has an agent channel and a NIC on a network without IPv4: on the test
    # driver interfaceAddresses() would kill the process with SIGSEGV. Read in a child process
    # so that, should the guard fail, this test fails instead of the whole run dying.
    program = (
        "from networks.hypervisor import client, inventory\n"
        f"found = inventory.read_host(client.connect({DEMO_URI!r}))\n"
        "mon01 = next(g for g in found.guests if g.name == 'mon01')\n"
        "print('channel', repr(mon01.agent_channel), 'state', mon01.state)\n"
    )
    child = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr[-2000:]
    assert "channel '' state running" in child.stdout


def test_the_test_driver_is_never_asked_whatever_its_guests_say(demo_uri):
    reader = GuestAgentReader(client.connect(demo_uri), [])
    assert not reader.wanted(GuestInfo("g", "u", "running", agent_channel="connected"))


def _reader(warnings=None) -> GuestAgentReader:
    reader = GuestAgentReader(client.connect("test:///default"), warnings if warnings is not None else [])
    reader.enabled = True  # as on a qemu host
    return reader


def test_only_a_running_guest_with_an_agent_channel_is_asked():
    reader = _reader()
    assert reader.wanted(GuestInfo("g", "u", "running", agent_channel="connected"))
    assert reader.wanted(GuestInfo("g", "u", "running", agent_channel=""))  # no state given: libvirt decides
    assert not reader.wanted(GuestInfo("g", "u", "running", agent_channel="disconnected"))
    assert not reader.wanted(GuestInfo("g", "u", "running", agent_channel=None))
    assert not reader.wanted(GuestInfo("g", "u", "paused", agent_channel="connected"))
    assert not reader.wanted(GuestInfo("g", "u", "shutoff", agent_channel="connected"))


def test_the_answer_is_sorted_by_mac_without_loopback_or_link_local_addresses():
    assert addresses_by_mac(AGENT_ANSWER) == {"52:54:00:aa:00:01": ("192.168.122.57/24", "fd00:30::57/64")}
    assert addresses_by_mac({}) == {} and addresses_by_mac(None) == {}


class StandInDomain:
    """Plays a domain whose agent answers `answer`, fails, or waits until `release` is set."""

    def __init__(self, answer=None, error: str = "", release: threading.Event | None = None):
        self.answer, self.error, self.release = answer, error, release
        self.calls = 0

    def interfaceAddresses(self, source, flags=0):  # libvirt's name
        assert source == libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT
        self.calls += 1
        if self.release is not None:
            self.release.wait(30)
        if self.error:
            raise libvirt.libvirtError(self.error)
        return self.answer


def _guest(uuid: str) -> GuestInfo:
    nics = (GuestInterface("network", mac="52:54:00:aa:00:01"), GuestInterface("network", mac="52:54:00:aa:00:02"))
    return GuestInfo("vm", uuid, "running", interfaces=nics, agent_channel="connected")


def test_agent_addresses_land_on_the_interface_with_their_mac():
    guest = _reader().completed(StandInDomain(AGENT_ANSWER), _guest("uuid-answers"))
    assert [iface.agent_addresses for iface in guest.interfaces] == [("192.168.122.57/24", "fd00:30::57/64"), ()]


def test_an_agent_that_fails_is_a_warning_and_the_guest_is_read_without_it():
    warnings = []
    guest = _reader(warnings).completed(StandInDomain(error="agent refused"), _guest("uuid-fails"))
    assert all(iface.agent_addresses == () for iface in guest.interfaces)
    assert len(warnings) == 1 and warnings[0].startswith("guest vm: no answer from its guest agent")


def test_a_slow_agent_is_given_up_after_the_timeout_and_not_asked_again_until_it_answers():
    release = threading.Event()
    slow = StandInDomain(AGENT_ANSWER, release=release)
    started = time.monotonic()
    try:
        with pytest.raises(AgentSilent, match=r"no reply within 0\.3 s"):
            agent_addresses(slow, "uuid-slow", timeout=0.3)
        assert time.monotonic() - started < 2
        with pytest.raises(AgentSilent, match="still awaited"):
            agent_addresses(slow, "uuid-slow", timeout=0.3)
        assert slow.calls == 1, "no second thread waits on the same agent"
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while inventory._agent_calls_waiting and time.monotonic() < deadline:
        time.sleep(0.02)
    assert agent_addresses(slow, "uuid-slow", timeout=2) == {
        "52:54:00:aa:00:01": ("192.168.122.57/24", "fd00:30::57/64")
    }


def _hostile_answer() -> dict:
    """1,000 addresses on one NIC, 40 on each of 10 more, and entries no agent should send."""
    flood = [{"type": 0, "addr": f"10.{n // 250}.{n % 250}.1", "prefix": 24} for n in range(1000)]
    answer = {"eth0": {"hwaddr": "52:54:00:aa:00:01", "addrs": flood}}
    for nic in range(10):
        addrs = [{"type": 0, "addr": f"172.16.{nic}.{n + 1}", "prefix": 16} for n in range(40)]
        answer[f"eth{nic + 1}"] = {"hwaddr": f"52:54:00:bb:00:{nic:02x}", "addrs": addrs}
    return answer


def test_a_flood_of_agent_addresses_is_capped_per_nic_and_per_guest():
    notes = []
    found = addresses_by_mac(_hostile_answer(), notes)
    assert len(found["52:54:00:aa:00:01"]) == 32
    assert found["52:54:00:aa:00:01"][:2] == ("10.0.0.1/24", "10.0.1.1/24")
    assert all(len(found[f"52:54:00:bb:00:{nic:02x}"]) == 32 for nic in range(7))  # 32 + 7 * 32 = 256
    assert "52:54:00:bb:00:07" not in found and len(found) == 8
    assert sum(len(addresses) for addresses in found.values()) == 256
    assert notes == [
        "its agent reported 1400 addresses; 1144 were left out (at most 32 per NIC and 256 per guest are kept)"
    ]


def test_a_flood_of_agent_addresses_is_a_warning_of_the_sync():
    warnings = []
    guest = _reader(warnings).completed(StandInDomain(_hostile_answer()), _guest("uuid-flood"))
    assert [len(iface.agent_addresses) for iface in guest.interfaces] == [32, 0]
    assert warnings == [
        "guest vm: its agent reported 1400 addresses; 1144 were left out "
        "(at most 32 per NIC and 256 per guest are kept)"
    ]


def test_an_agent_entry_with_a_bad_prefix_mac_or_address_is_left_out():
    lone_bool = {"eth0": {"hwaddr": "52:54:00:aa:00:01", "addrs": [{"type": 0, "addr": "10.0.0.2", "prefix": True}]}}
    assert addresses_by_mac(lone_bool) == {}, "not 10.0.0.2/True"
    answer = {
        "eth0": {
            "hwaddr": "52:54:00:aa:00:01",
            "addrs": [
                {"type": 0, "addr": "192.168.122.2", "prefix": True},  # isinstance(True, int) holds
                {"type": 0, "addr": "192.168.122.3", "prefix": 33},
                {"type": 1, "addr": "fd00::3", "prefix": 129},
                {"type": 0, "addr": "192.168.122.4", "prefix": -1},
                {"type": 0, "addr": "192.168.122.5", "prefix": "24"},
                {"type": 0, "addr": "not an address", "prefix": 24},
                {"type": 0, "addr": 3232266758, "prefix": 24},
                "junk",
                {"type": 0, "addr": "192.168.122.7"},  # no prefix given: the address alone
                {"type": 1, "addr": "fd00::8", "prefix": 128},
                {"type": 0, "addr": "192.168.122.9", "prefix": 0},
            ],
        },
        "eth1": {"hwaddr": "not-a-mac", "addrs": [{"type": 0, "addr": "192.168.122.10", "prefix": 24}]},
        "eth2": {"hwaddr": "52:54:00:aa:00:03", "addrs": "192.168.122.11"},
        "eth3": "junk",
    }
    assert addresses_by_mac(answer) == {"52:54:00:aa:00:01": ("192.168.122.7", "fd00::8/128", "192.168.122.9/0")}
