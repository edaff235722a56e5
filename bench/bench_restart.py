"""Benchmark: how long guests are cut off when their network restarts.

    sudo .venv/bin/python bench/bench_restart.py [--repeat 3]

On a private real libvirtd (as the tests start it), with 1, 2 and 4 tiny real guests on a
NAT network, STP off and on: kvmweb's restart (record, destroy, start, re-plug each
interface by flipping it to type='bridge' and back) against the old script's approach
(destroy, start, then detach and attach every interface), measured in the same run.
Two measurements per guest, each in restarts of its own, printed as two tables of medians
with the old approach's ratio to kvmweb's:

- host side: from the moment the network runs again to the guest's first reply to pings
  from the host's side of the bridge (tests/realvirt/connectivity.py);
- guest side: the longest time between two consecutive replies the guest itself got
  pinging its gateway every 0.05 s (/cgi-bin/pinggap, started before the restart and
  stopped a few seconds after it), which includes the time the network was down.

Read the host-side figures knowing the host's ARP retransmit timer (1 s; a network
namespace other than the machine's own cannot change its default): the first ping after
the network is back sends an ARP request, and a guest re-plugged a few milliseconds later
answers only the retry, a second later. So most kvmweb host-side gaps are ~1 s although the
data path is back within milliseconds. The guest keeps its ARP entry for the gateway (the
bridge keeps its MAC), so its own pings are not delayed that way, PROVIDED the host sends
it nothing while it is cut off: a host-side ping at that moment leaves the host's entry for
the guest waiting for that retry, and the guest's echo replies wait with it (measured: with
host-side pings running too, one guest's kvmweb guest-side gap was ~1.6 s instead of ~0.55
s). So the guest-side restarts run without host-side pings and probe the guests only after a
fixed settling time.
"""

# bench: needs root
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import libvirt  # noqa: E402

from networks.hypervisor import restart, xml  # noqa: E402
from networks.hypervisor.types import DhcpRange, IpConfig  # noqa: E402
from tests.realvirt.connectivity import Pinger  # noqa: E402
from tests.realvirt.guests import GuestImage, boot_guest  # noqa: E402
from tests.realvirt.libvirtd import PrivateLibvirtd  # noqa: E402

NETWORK = "benchrs"
LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE


def define_network(conn, stp: bool) -> None:
    network_xml = xml.build_network_xml(
        name=NETWORK, bridge="benchrs0", stp=stp,
        ips=(IpConfig("10.90.0.1", 24, "ipv4", (DhcpRange("10.90.0.100", "10.90.0.200"),)),),
    )  # fmt: skip
    conn.networkDefineXML(network_xml).create()


def kvmweb_restart(conn) -> float:
    """Returns the monotonic time at which the network ran again."""
    started = time.monotonic()
    outcome = restart.restart_network(conn, NETWORK)
    assert all(r.ok for r in outcome.interfaces), outcome.interfaces
    return started + outcome.down_seconds


def old_script_restart(conn) -> float:
    captured = restart.interfaces_on_network(conn, NETWORK)
    net = conn.networkLookupByName(NETWORK)
    net.destroy()
    net.create()
    running_again = time.monotonic()
    for iface in captured:
        dom = conn.lookupByName(iface.domain)
        dom.detachDeviceFlags(restart._current_interface_xml(dom, iface.mac), LIVE)
        dom.attachDeviceFlags(restart.network_form(iface.xml), LIVE)
    return running_again


def host_gaps(daemon, guests, method) -> list[float]:
    """One restart by `method`, watched by pings from the host side."""
    pingers = [Pinger(daemon.netns, guest.ip) for guest in guests]
    try:
        assert all(p.wait_for_reply(15) for p in pingers), "guests unreachable before the restart"
        running_again = method(daemon.conn)
        deadline = running_again + 30
        while time.monotonic() < deadline and not all(p.replies and p.replies[-1] > running_again for p in pingers):
            time.sleep(0.05)
        return [next((t for t in p.replies if t > running_again), deadline) - running_again for p in pingers]
    finally:
        for p in pingers:
            p.stop()


def guest_gaps(daemon, guests, method, settle: float) -> list[float]:
    """One restart by `method`, watched by each guest's own pings to its gateway. Nothing is
    sent to the guests from `method` returning until `settle` seconds later (see the module
    docstring); a gap still open when the pings are stopped counts as long as it lasted."""
    pinging = []
    try:
        for guest in guests:
            guest.start_gateway_pings(daemon)
            pinging.append(guest)
        for guest in guests:  # each guest's own pings get answers before the restart
            wait_for_guest_replies(daemon, guest)
        method(daemon.conn)
        time.sleep(settle)
        reports = [pinging.pop(0).stop_gateway_pings(daemon) for _ in guests]
        for guest, report in zip(guests, reports, strict=True):
            if report.silence_at_end() > 0.5:
                print(f"  note: {guest.name} had no reply for {report.silence_at_end():.2f} s at the stop", flush=True)
        return [max(r.longest_gap, r.silence_at_end()) for r in reports]
    finally:
        for guest in pinging:  # something failed half-way: stop the guests' pings anyway
            try:
                guest.stop_gateway_pings(daemon)
            except Exception as error:
                print(f"  could not stop {guest.name}'s pings: {error}", file=sys.stderr)


def wait_for_guest_replies(daemon, guest, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while guest.gateway_ping_status(daemon).replies < 3:
        assert time.monotonic() < deadline, f"{guest.name} gets no replies from its gateway"
        time.sleep(0.1)


def rounds(daemon, image, stp: bool, repeat: int) -> dict[tuple[int, str, str], list[float]]:
    """Gaps by (guest count, method, "host" or "guest" side)."""
    conn = daemon.conn
    define_network(conn, stp)
    log_dir = daemon.scratch / "bench"
    guests = [boot_guest(conn, f"bench-{stp}-{n}", image, log_dir, network=NETWORK) for n in range(4)]
    for guest in guests:
        guest.wait_for_lease(timeout=120)
    results = {}
    for count in (4, 2, 1):
        while len(guests) > count:
            guests.pop().destroy()
        for name, method in (("kvmweb", kvmweb_restart), ("old script", old_script_restart)):
            for _ in range(repeat):
                for side in ("host", "guest"):
                    if side == "host":
                        found = host_gaps(daemon, guests, method)
                    else:  # STP holds a re-plugged port ~4.4 s, the old script adds a re-DHCP
                        found = guest_gaps(daemon, guests, method, settle=9 if stp else 4)
                    results.setdefault((count, name, side), []).extend(found)
                    if name == "old script":  # the guests re-DHCP after a hot-plug: let them settle
                        time.sleep(2)
            host_median = statistics.median(results[(count, name, "host")])
            guest_median = statistics.median(results[(count, name, "guest")])
            print(
                f"  STP {'on' if stp else 'off'}, {count} guest(s), {name}: median host-side {host_median:.2f} s, "
                f"guest-side {guest_median:.2f} s (guest-side all: "
                f"{' '.join(f'{g:.2f}' for g in results[(count, name, 'guest')])})",
                flush=True,
            )
    for guest in guests:
        guest.destroy()
    net = conn.networkLookupByName(NETWORK)
    net.destroy()
    net.undefine()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: it starts a private libvirtd in a network namespace")
    image = GuestImage.from_dir(os.environ.get("KVMWEB_GUEST_CACHE") or REPO / "var" / "guest-image")
    if not image.kernel.exists():
        sys.exit("build the guest image first: scripts/build-guest-image.sh var/guest-image")
    if image.initrd.stat().st_mtime < (REPO / "scripts" / "build-guest-image.sh").stat().st_mtime:
        sys.exit("the guest image predates scripts/build-guest-image.sh (no /cgi-bin/pinggap?): build it again")
    with PrivateLibvirtd() as daemon:
        daemon.conn = daemon.connect()
        table = {}
        for stp in (False, True):
            for key, values in rounds(daemon, image, stp, args.repeat).items():
                table[(stp, *key)] = statistics.median(values)
        daemon.conn.close()
    print_table(table, "host", "Median gap from the network running again to each guest's first reply (seconds)")
    print_table(table, "guest", "Median guest-side longest gap: each guest's own pings to its gateway (seconds)")


def print_table(table, side: str, title: str) -> None:
    print(f"\n{title}")
    print(f"  {'STP':4} {'guests':>6} {'kvmweb':>8} {'old script':>11} {'old/kvmweb':>11}")
    for stp in (False, True):
        for count in (1, 2, 4):
            ours, old = table[(stp, count, "kvmweb", side)], table[(stp, count, "old script", side)]
            print(f"  {'on' if stp else 'off':4} {count:6} {ours:8.2f} {old:11.2f} {old / max(ours, 0.01):11.1f}")


if __name__ == "__main__":
    main()
