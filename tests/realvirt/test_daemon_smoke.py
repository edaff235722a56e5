"""Proof that the private libvirtd and the tiny guest work, and that nothing
leaks to the host. Plain pytest, no Django. Prints TIMING lines (see -s)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from networks.hypervisor import restart

from .guests import Lease, boot_guest, interface_xml, read_leases
from .libvirtd import PrivateLibvirtd, netns_pids, pid_is_gone

pytestmark = pytest.mark.realvirt


def nat_network_xml(name: str, bridge: str, prefix: str) -> str:
    """A NAT network on prefix.0/24 with DHCP. stp='off': with STP the bridge
    holds every new port ~4.4 s before forwarding."""
    net = etree.Element("network")
    etree.SubElement(net, "name").text = name
    etree.SubElement(net, "forward", mode="nat")
    etree.SubElement(net, "bridge", name=bridge, stp="off", delay="0")
    ip = etree.SubElement(net, "ip", address=f"{prefix}.1", netmask="255.255.255.0")
    dhcp = etree.SubElement(ip, "dhcp")
    etree.SubElement(dhcp, "range", start=f"{prefix}.10", end=f"{prefix}.100")
    return etree.tostring(net, encoding="unicode")


def probe_network_xml(name: str, bridge: str, prefix: str) -> str:
    """nat_network_xml plus a DNS domain and records for a guest to look up:
    probe-target (A, prefix.50), probe-txt (TXT), _probe._tcp (SRV)."""
    net = etree.fromstring(nat_network_xml(name, bridge, prefix))
    at = net.index(net.find("ip"))
    domain = etree.Element("domain", name="probe.test", localOnly="yes")
    dns = etree.Element("dns")
    host = etree.SubElement(dns, "host", ip=f"{prefix}.50")
    etree.SubElement(host, "hostname").text = "probe-target"
    etree.SubElement(dns, "txt", name="probe-txt", value="hello probe")
    srv = {"service": "probe", "protocol": "tcp", "domain": "probe.test", "target": "probe-target.probe.test"}
    etree.SubElement(dns, "srv", srv, port="8080", priority="10", weight="5")
    net.insert(at, dns)
    net.insert(at, domain)
    return etree.tostring(net, encoding="unicode")


def dhcp_host_xml(mac: str, ip: str) -> str:
    return etree.tostring(etree.Element("host", mac=mac, ip=ip), encoding="unicode")


def start_nat_network(conn, name, bridge, prefix) -> libvirt.virNetwork:
    net = conn.networkDefineXML(nat_network_xml(name, bridge, prefix))
    net.create()
    return net


def timing(label: str, seconds: float) -> None:
    print(f"\nTIMING {label}: {seconds:.2f} s")


def host_has_link(name: str) -> bool:
    """Whether the HOST network namespace has this interface."""
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


def dnsmasq_pids(lvd: PrivateLibvirtd) -> list[int]:
    return [p for p in netns_pids(lvd.netns) if _comm(p) == "dnsmasq"]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_namespace_has_no_uplink(private_libvirtd):
    """No default route and no physical link: besides lo, only virtual links
    made inside the namespace (libvirt's bridges and taps, client veths)."""
    links = json.loads(private_libvirtd.exec_in_ns(["ip", "-j", "-d", "link", "show"]))
    kinds = {link["ifname"]: link.get("linkinfo", {}).get("info_kind") for link in links}
    assert kinds.pop("lo") is None
    assert set(kinds.values()) <= {"bridge", "tun", "veth"}, kinds
    assert private_libvirtd.exec_in_ns(["ip", "route", "show", "default"]).strip() == ""


def test_nat_network_stays_in_namespace(private_libvirtd, private_conn):
    t0 = time.monotonic()
    net = start_nat_network(private_conn, "smoke-nat", "kvmt-smoke0", "192.168.150")
    timing("net define+start", time.monotonic() - t0)

    assert "kvmt-smoke0" in private_libvirtd.exec_in_ns(["ip", "-br", "link", "show", "type", "bridge"])
    assert not host_has_link("kvmt-smoke0")
    dns = dnsmasq_pids(private_libvirtd)
    assert dns, "libvirt started no dnsmasq in the namespace"

    net.destroy()
    assert "kvmt-smoke0" not in private_libvirtd.exec_in_ns(["ip", "-br", "link"])
    wait_until(lambda: all(pid_is_gone(p) for p in dns), 5, "dnsmasq still running after destroy")


def test_guest_gets_lease_and_answers_http(private_libvirtd, private_conn, guest_image, guest_log_dir):
    net = start_nat_network(private_conn, "smoke-guest", "kvmt-guest0", "192.168.151")
    t0 = time.monotonic()
    guest = boot_guest(private_conn, "smoke-guest-1", guest_image, guest_log_dir, network="smoke-guest")
    ip = guest.wait_for_lease(timeout=60)
    timing("guest start to lease", time.monotonic() - t0)

    assert ip.startswith("192.168.151.")
    leases = net.DHCPLeases()
    assert any(le["mac"] == guest.mac and le["ipaddr"] == ip for le in leases), leases
    assert "smoke-guest-1" in private_libvirtd.http_get(f"http://{ip}/")
    echo = private_libvirtd.run_in_netns(["busybox", "nc", "-w", "3", ip, "7"], input="ping\n", timeout=15)
    assert echo.stdout == "ping\n"
    assert [le.mac for le in read_leases(guest.serial_log)] == [guest.mac]


def test_hotplugged_nic_gets_lease_then_acpi_shutdown(private_conn, guest_image, guest_log_dir):
    """The guest DHCPs a NIC attached while it runs, and powers off when
    domain.shutdown() presses the ACPI power button."""
    start_nat_network(private_conn, "smoke-hp", "kvmt-hp0", "192.168.155")
    guest = boot_guest(private_conn, "smoke-hp-1", guest_image, guest_log_dir)  # no NIC
    wait_for_marker(guest.serial_log, "KVMWEB-READY", 60)
    t0 = time.monotonic()
    guest.dom.attachDeviceFlags(interface_xml(network="smoke-hp"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    assert guest.wait_for_lease(timeout=30).startswith("192.168.155.")
    timing("hot-plug to lease", time.monotonic() - t0)

    t0 = time.monotonic()
    guest.dom.shutdown()
    wait_until(lambda: not guest.dom.isActive(), 30, "guest ignored the ACPI power button")
    assert "KVMWEB-POWEROFF" in guest.serial_log.read_text(errors="replace")
    timing("ACPI shutdown", time.monotonic() - t0)


def wait_until(predicate, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def wait_for_marker(path: Path, marker: str, timeout: float) -> None:
    wait_until(lambda: path.exists() and marker in path.read_text(errors="replace"), timeout, f"{marker} not in {path}")


def test_failed_start_cleans_up(realvirt_available, monkeypatch):
    lvd = PrivateLibvirtd()

    def broken():
        raise RuntimeError("simulated libvirtd failure")

    monkeypatch.setattr(lvd, "_start_libvirtd", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        lvd.start()
    assert_nothing_left(lvd)


def test_full_cycle_leaves_nothing_behind(new_private_libvirtd, guest_image, tmp_path):
    """Own daemon: start, NAT network, guest to lease, stop. Afterwards no
    namespace, no daemon, qemu or dnsmasq process, no scratch dir."""
    t0 = time.monotonic()
    lvd = new_private_libvirtd()
    with lvd:  # stop() on exit; the fixture's own stop() then does nothing
        timing("daemon start", lvd.start_seconds)
        conn = lvd.connect()
        start_nat_network(conn, "cycle", "kvmt-cycle0", "192.168.152")
        guest = boot_guest(conn, "cycle-1", guest_image, tmp_path, network="cycle")
        guest.wait_for_lease(timeout=60)
        spawned = netns_pids(lvd.netns)  # qemu, dnsmasq and the daemons
        assert len(spawned) >= 4
        conn.close()
        t_stop = time.monotonic()
    timing("daemon stop (guest running)", time.monotonic() - t_stop)
    timing("whole cycle", time.monotonic() - t0)
    assert_nothing_left(lvd, extra_pids=spawned)


def assert_nothing_left(lvd: PrivateLibvirtd, extra_pids=()) -> None:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lvd.netns not in namespaces
    assert all(pid_is_gone(p) for p in [*lvd.pids.values(), *extra_pids])
    assert lvd.scratch is None or not lvd.scratch.exists()


def test_restart_keeps_network_and_dnsmasq(new_private_libvirtd):
    """restart_libvirtd() restarts only the daemon, as on a real host."""
    lvd = new_private_libvirtd()
    conn = lvd.connect()
    start_nat_network(conn, "restart", "kvmt-rst0", "192.168.153")
    dns_before = dnsmasq_pids(lvd)
    old_pid = lvd.pids["libvirtd"]
    conn.close()

    timing("libvirtd restart", lvd.restart_libvirtd())

    assert pid_is_gone(old_pid) and lvd.pids["libvirtd"] != old_pid
    conn = lvd.connect()
    assert conn.networkLookupByName("restart").isActive()
    assert dnsmasq_pids(lvd) == dns_before
    conn.close()


def test_client_namespace_reaches_guest_through_dnat(private_libvirtd, private_conn, guest_image, guest_log_dir):
    """The building blocks of port-forwarding tests: a client namespace on a
    veth "uplink", DNAT to a guest in the daemon's namespace (rules as in
    docs/libvirt.md: the FORWARD accept must precede libvirt's reject)."""
    start_nat_network(private_conn, "smoke-fwd", "kvmt-fwd0", "192.168.154")
    guest = boot_guest(private_conn, "smoke-fwd-1", guest_image, guest_log_dir, network="smoke-fwd")
    client = private_libvirtd.add_client_netns("10.254.0.2/24", "10.254.0.1/24")
    ip = guest.wait_for_lease(timeout=60)
    rules = [
        ["-t", "nat", "-I", "PREROUTING", "-p", "tcp", "--dport", "8080", "-j", "DNAT", "--to", f"{ip}:80"],
        ["-I", "FORWARD", "-o", "kvmt-fwd0", "-p", "tcp", "-d", ip, "--dport", "80", "-j", "ACCEPT"],
    ]
    for rule in rules:
        private_libvirtd.exec_in_ns(["iptables", *rule])

    assert "smoke-fwd-1" in client.http_get("http://10.254.0.1:8080/")
    # The client namespace is as isolated as the daemon's: lo and its veth only.
    links = client.run(["ip", "-br", "link"], check=True).stdout.split("\n")
    assert sorted(line.split("@")[0].split()[0] for line in links if line.strip()) == sorted(["lo", client.interface])


LIVE_AND_CONFIG = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG


def test_guest_probes_dns_and_dhcp_from_inside(private_libvirtd, private_conn, guest_image, guest_log_dir):
    """The guest's CGI probes, on one guest: (a) its lookups reach the
    network's dnsmasq (named by its lease) and see the <dns> records; (b) after
    a live reservation for its MAC, release-renew brings the reserved address
    at once, and a plain renew after a change gets NAKed into the new one;
    (c) /cgi-bin/addr reports each address."""
    lvd, prefix = private_libvirtd, "10.156.7"
    gateway = f"{prefix}.1"
    net = private_conn.networkDefineXML(probe_network_xml("smoke-probe", "kvmt-probe0", prefix))
    net.create()
    guest = boot_guest(private_conn, "smoke-probe-1", guest_image, guest_log_dir, network="smoke-probe")
    first_ip = guest.wait_for_lease(timeout=60)

    lease = guest.lease_info(lvd)
    assert (lease["ip"], lease["dns"], lease["domain"]) == (first_ip, gateway, "probe.test"), lease
    assert guest.addresses(lvd) == {"eth0": [f"{first_ip}/24"]}

    # (a) DNS from inside, through the resolv.conf the DHCP lease wrote.
    t0 = time.monotonic()
    found = guest.lookup(lvd, "probe-target")
    timing("lookup from inside the guest (whole host round trip)", time.monotonic() - t0)
    assert (found.status, found.server, found.addresses) == ("OK", gateway, [f"{prefix}.50"]), found.raw
    assert guest.lookup(lvd, "no-such-host").status == "NXDOMAIN"
    assert guest.lookup(lvd, "probe-txt.", type="txt").values("TXT") == ["hello probe"]
    srv = guest.lookup(lvd, "_probe._tcp.probe.test", type="srv")
    assert srv.values("SRV") == ["10 5 8080 probe-target.probe.test"], srv.raw
    # dnsmasq also answers for the name the guest sent with its DHCP request.
    assert guest.lookup(lvd, "smoke-probe-1").addresses == [first_ip]

    # A renew with nothing changed: same address, RENEW marker.
    t0 = time.monotonic()
    since = guest.renew(lvd)
    assert guest.wait_for_new_lease(since, timeout=10) == Lease("RENEW", "eth0", first_ip, guest.mac)
    timing("renew (unchanged) to marker", time.monotonic() - t0)

    # (b) A live+config reservation (outside the dynamic range, so surely a
    # new address), then release-renew.
    reserved = f"{prefix}.150"
    net.update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
        libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
        0,
        dhcp_host_xml(guest.mac, reserved),
        LIVE_AND_CONFIG,
    )
    t0 = time.monotonic()
    since = guest.release_renew(lvd)
    assert guest.wait_for_new_lease(since, timeout=15) == Lease("LEASE", "eth0", reserved, guest.mac)
    timing("release-renew to reserved address", time.monotonic() - t0)
    # (c) probes now go to the new address (wait_for_new_lease updated .ip).
    assert guest.addresses(lvd) == {"eth0": [f"{reserved}/24"]}
    wait_until(
        lambda: [le["ipaddr"] for le in net.DHCPLeases() if le["mac"] == guest.mac] == [reserved],
        5,
        "libvirt's lease list does not show the reserved address alone",
    )

    # Change the reservation again; a plain renew is NAKed (dnsmasq: "static
    # lease available") and udhcpc pauses 3 s before it DISCOVERs again.
    moved = f"{prefix}.151"
    net.update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY,
        libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
        0,
        dhcp_host_xml(guest.mac, moved),
        LIVE_AND_CONFIG,
    )
    t0 = time.monotonic()
    since = guest.renew(lvd)
    assert guest.wait_for_new_lease(since, timeout=15) == Lease("LEASE", "eth0", moved, guest.mac)
    timing("renew (NAKed) to changed reservation", time.monotonic() - t0)
    assert guest.addresses(lvd) == {"eth0": [f"{moved}/24"]}


def test_guest_measures_its_own_gateway_gap_across_restarts(private_libvirtd, private_conn, guest_image, guest_log_dir):
    """The guest pings its gateway itself (/cgi-bin/pinggap), so a restart's
    interruption is measured without the host's 1 s ARP retry. (a) A plain
    destroy + create leaves the tap off the bridge: the guest sees the whole
    cut, and replies again once the bridge flip re-plugs it. (b) kvmweb's
    restart_network keeps the guest's gap short. Prints MEASURED lines (-s)."""
    lvd, name, bridge = private_libvirtd, "smoke-gap", "kvmt-gap0"
    net = start_nat_network(private_conn, name, bridge, "192.168.157")
    guest = boot_guest(private_conn, "smoke-gap-1", guest_image, guest_log_dir, network=name)
    guest.wait_for_lease(timeout=60)

    # (a) Plain restart, 3 s off the bridge, then the bridge flip.
    guest.start_gateway_pings(lvd)
    _wait_for_replies(guest, lvd, lambda report: report.replies >= 10, "pings before the restart")
    clock = guest.guest_clock(lvd)  # maps host monotonic time onto guest uptime
    captured = restart.interfaces_on_network(private_conn, name)  # before destroy: the ports go with it
    assert [i.mac for i in captured] == [guest.mac]
    net.destroy()
    net.create()
    time.sleep(3)  # the cut under test: the tap stays off the bridge this long
    replug_started = time.monotonic()
    replugged = restart.reattach_missing(private_conn, name, bridge, captured)
    replugged_at = time.monotonic()
    assert [(r.ok, r.method) for r in replugged] == [(True, restart.BRIDGE_FLIP)], replugged
    after_replug = clock.guest_time(replugged_at) + clock.uncertainty
    _wait_for_replies(guest, lvd, lambda report: (report.last or 0) > after_replug + 0.5, "replies after the re-plug")
    cut = guest.stop_gateway_pings(lvd)
    print(
        f"\nMEASURED guest-side longest gap, plain restart + 3 s + bridge flip: {cut.longest_gap:.2f} s "
        f"({cut.replies} replies; clock uncertainty {clock.uncertainty:.2f} s)"
    )
    assert cut.longest_gap >= 3.0, cut.raw  # the cut was real, and the guest saw it
    # The gap closed only with the re-plug, and replies went on after it.
    assert cut.gap_end is not None and cut.gap_end >= clock.guest_time(replug_started) - clock.uncertainty, cut.raw
    assert cut.last > after_replug, cut.raw

    # (b) kvmweb's restart with the guest pinging. How short its gap is, is the benchmark's
    # figure (bench/bench_restart.py); here: replies resume, sooner than after the plain cut.
    guest.start_gateway_pings(lvd)
    _wait_for_replies(guest, lvd, lambda report: report.replies >= 10, "pings before kvmweb's restart")
    outcome = restart.restart_network(private_conn, name)
    restarted_at = clock.guest_time(time.monotonic()) + clock.uncertainty
    assert [(r.ok, r.method) for r in outcome.interfaces] == [(True, restart.BRIDGE_FLIP)], outcome.interfaces
    _wait_for_replies(
        guest, lvd, lambda report: (report.last or 0) > restarted_at + 0.5, "replies after kvmweb's restart"
    )
    ours = guest.stop_gateway_pings(lvd)
    print(
        f"\nMEASURED guest-side longest gap, kvmweb restart_network: {ours.longest_gap:.2f} s "
        f"(network down {outcome.down_seconds:.2f} s, {ours.replies} replies)"
    )
    assert ours.longest_gap < cut.longest_gap, ours.raw


def _wait_for_replies(guest, lvd, condition, what: str, timeout: float = 60):
    """Poll the guest's ping report until `condition` holds; the bound is generous (a loaded
    machine is slow, not wrong)."""
    deadline = time.monotonic() + timeout
    while True:
        report = guest.gateway_ping_status(lvd)
        if condition(report):
            return report
        assert time.monotonic() < deadline, f"no {what} within {timeout} s: {report.raw}"
        time.sleep(0.2)
