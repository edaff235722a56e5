"""Tiny real guests for tests against a real libvirtd.

The guest is the image built by scripts/build-guest-image.sh: a Debian cloud
kernel booted directly (no disk) with a busybox initramfs. Its /init DHCPs
every NIC and writes marker lines to the serial console, which libvirt writes
to a file on the host:

    KVMWEB-READY <hostname>
    KVMWEB-LEASE <nic> <ip> <mac>      (new lease)
    KVMWEB-RENEW <nic> <ip> <mac>      (renewed lease)
    KVMWEB-POWEROFF                    (ACPI power button pressed)

It serves HTTP on port 80 (a page containing its hostname, and /hostname) and
an echo service on TCP port 7. CGI probes on port 80 let a test ask the guest
to do things and report back (Guest.probe and the helpers around it):

    /cgi-bin/lookup?name=N&type=T   DNS query to the server its lease named
                                    (busybox nslookup; T: a, aaaa, txt, srv,
                                    mx, cname, ptr, ns, any); see lookup()
    /cgi-bin/renew?nic=ethN         udhcpc renews now (SIGUSR1)
    /cgi-bin/release-renew?nic=ethN DHCPRELEASE, then a fresh DISCOVER
    /cgi-bin/addr                   IPv4 addresses per NIC
    /cgi-bin/lease?nic=ethN         the current lease (router, dns, domain...)
    /cgi-bin/pinggap?start&nic=ethN the guest pings its DHCP router in the
                    ?status / ?stop background and reports its longest gap
                                    between replies (start_gateway_pings,
                                    gateway_ping_status, stop_gateway_pings)

renew and release-renew answer before they signal udhcpc (~0.3 s later), so a
changed address cannot swallow the reply; the outcome shows up as a new
KVMWEB-RENEW/LEASE marker (wait_for_new_lease).

pinggap measures an interruption as the guest sees it: busybox ping every
0.05 s to the gateway, each reply stamped with the guest's /proc/uptime (10 ms
steps). Host-side pings (tests/realvirt/connectivity.py) see up to 1 s more,
because the host's ARP retry timer is 1 s; the guest keeps its ARP entry for
the gateway across a restart (the bridge keeps its MAC). Times in a GapReport
are guest uptimes; guest_clock() maps host monotonic time onto them.

Emulated with TCG (`<domain type='qemu'>`): each guest costs ~230 MiB and
most of a core while booting, so boots are staggered and at most MAX_GUESTS
run at once.
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from xml.etree import ElementTree as ET

import libvirt

MAX_GUESTS = 4
# Seconds between two guest starts: a booting TCG guest saturates a core.
STAGGER_SECONDS = float(os.environ.get("KVMWEB_GUEST_STAGGER", "2"))
MEMORY_MIB = 128

LEASE_RE = re.compile(r"KVMWEB-(LEASE|RENEW) (\S+) (\d+\.\d+\.\d+\.\d+) ([0-9a-f:]{17})")

_start_lock = threading.Lock()
_last_start = 0.0


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path

    @classmethod
    def from_dir(cls, directory) -> GuestImage:
        d = Path(directory)
        return cls(kernel=d / "vmlinuz", initrd=d / "initrd.img")


@dataclass(frozen=True)
class Lease:
    kind: str  # "LEASE" or "RENEW"
    nic: str
    ip: str
    mac: str


@dataclass(frozen=True)
class GapReport:
    """A parsed /cgi-bin/pinggap status/stop answer. Times are the guest's
    uptime in seconds (10 ms resolution); first/last/gap_end are None
    without replies, gap_end also when no gap exceeded 0."""

    replies: int
    longest_gap: float  # the longest time between two consecutive replies
    first: float | None
    last: float | None
    gap_end: float | None = None  # the reply that ended the longest gap
    now: float | None = None  # the guest's uptime when it answered
    running: bool = False  # whether the pings were still going then
    raw: str = ""

    def silence_at_end(self) -> float:
        """Time since the last reply (or the whole run without one) when the
        guest answered: a gap that had not closed yet."""
        if self.now is None:
            return 0.0
        return max(0.0, self.now - (self.last if self.last is not None else self.now))


def parse_gap_report(text: str) -> GapReport:
    """Parse /cgi-bin/pinggap's "KEYWORD value" lines."""
    values = dict((line.split(" ", 1) + [""])[:2] for line in text.splitlines() if line.strip())
    if "REPLIES" not in values or "LONGEST_GAP" not in values:
        raise ValueError(f"not a pinggap report: {text!r}")

    def number(key):
        return float(values[key]) if values.get(key) else None

    return GapReport(
        replies=int(values["REPLIES"]),
        longest_gap=float(values["LONGEST_GAP"]),
        first=number("FIRST"),
        last=number("LAST"),
        gap_end=number("GAP_END"),
        now=number("NOW"),
        running=values.get("RUNNING") == "yes",
        raw=text,
    )


@dataclass(frozen=True)
class GuestClock:
    """Maps host time.monotonic() onto the guest's uptime, to within
    `uncertainty` seconds (half the probe's round trip)."""

    offset: float  # guest uptime - host monotonic
    uncertainty: float

    def guest_time(self, host_monotonic: float) -> float:
        return host_monotonic + self.offset


@dataclass(frozen=True)
class LookupResult:
    """A parsed /cgi-bin/lookup answer."""

    status: str  # OK, NODATA, NXDOMAIN, SERVFAIL, REFUSED, TIMEOUT or ERROR
    server: str | None  # the DNS server the guest asked
    records: tuple[tuple[str, str], ...]  # (ADDRESS|TXT|SRV|MX|CNAME|PTR|NS, value)
    raw: str

    def values(self, kind: str) -> list[str]:
        """Values of one record kind, e.g. values("SRV") -> ["10 5 8080 target.example."]."""
        return [value for k, value in self.records if k == kind.upper()]

    @property
    def addresses(self) -> list[str]:
        return self.values("ADDRESS")


def parse_lookup(text: str) -> LookupResult:
    """Parse /cgi-bin/lookup's "KEYWORD value" lines."""
    status, server, records = "ERROR", None, []
    for line in text.splitlines():
        kind, _, value = line.partition(" ")
        if kind == "STATUS":
            status = value.split()[0] if value else "ERROR"
        elif kind == "SERVER":
            server = value
        elif kind:
            records.append((kind, value))
    return LookupResult(status=status, server=server, records=tuple(records), raw=text)


class HttpGetter(Protocol):
    """Where probes are sent from: PrivateLibvirtd (the daemon's namespace, which
    holds the bridges) or a ClientNetns."""

    def http_get(self, url: str, timeout: float = 5) -> str: ...


def _sub(parent, tag, text=None, **attrs):
    el = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})
    if text is not None:
        el.text = str(text)
    return el


def interface_element(network=None, bridge=None, mac=None) -> ET.Element:
    """A virtio <interface> on a libvirt network or a bridge: used in the
    domain XML and, serialised, for hot-plug (attachDevice)."""
    if (network is None) == (bridge is None):
        raise ValueError("give exactly one of network= or bridge=")
    kind = "network" if network is not None else "bridge"
    iface = ET.Element("interface", type=kind)
    _sub(iface, "source", **{kind: network if network is not None else bridge})
    if mac:
        _sub(iface, "mac", address=mac.lower())  # libvirt prints MACs lowercase
    _sub(iface, "model", type="virtio")
    # No iPXE option ROM: the kernel is booted directly, and SeaBIOS would
    # spend time initialising it under TCG.
    _sub(iface, "rom", enabled="no")
    return iface


def interface_xml(network=None, bridge=None, mac=None) -> str:
    return ET.tostring(interface_element(network, bridge, mac), encoding="unicode")


def guest_domain_xml(
    name, kernel, initrd, network=None, bridge=None, mac=None, *, serial_log_path, hostname=None
) -> str:
    """Domain XML for the test guest. Without network/bridge it has no NIC
    (attach one later with interface_xml)."""
    dom = ET.Element("domain", type="qemu")  # TCG: this host's KVM can't run it
    _sub(dom, "name", name)
    _sub(dom, "memory", MEMORY_MIB, unit="MiB")
    _sub(dom, "vcpu", 1)
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_el, "kernel", kernel)
    _sub(os_el, "initrd", initrd)
    # loglevel=3 keeps kernel chatter from splitting the marker lines.
    _sub(os_el, "cmdline", f"console=ttyS0 loglevel=3 kvmweb.hostname={hostname or name}")
    features = _sub(dom, "features")
    _sub(features, "acpi")  # power button for domain.shutdown()
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    if network is not None or bridge is not None:
        devices.append(interface_element(network, bridge, mac))
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=serial_log_path)
    _sub(serial, "target", port=0)
    # No graphics, video, USB or balloon: less to emulate, faster boot.
    _sub(_sub(devices, "video"), "model", type="none")
    _sub(devices, "controller", type="usb", model="none")
    _sub(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


def read_leases(serial_log_path, since: int = 0) -> list[Lease]:
    """Every lease marker in the serial log from byte offset `since` on."""
    try:
        with open(serial_log_path, "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    return [Lease(*m.groups()) for m in LEASE_RE.finditer(text)]


def wait_for_lease(serial_log_path, timeout: float = 60, nic: str | None = None, since: int = 0) -> str:
    """Wait until the guest prints a lease (for `nic` if given) and return its
    IP. Pass `since` (a byte offset, e.g. Guest.log_size()) to ignore older
    leases, e.g. when waiting for a new address after a reservation change."""
    return wait_for_lease_marker(serial_log_path, timeout, nic=nic, since=since).ip


def wait_for_lease_marker(
    serial_log_path, timeout: float = 60, nic: str | None = None, since: int = 0, ip: str | None = None, poll=0.2
) -> Lease:
    """The first KVMWEB-LEASE/RENEW marker after byte offset `since` (for `nic`
    and with address `ip`, if given), as soon as the guest prints it."""
    deadline = time.monotonic() + timeout
    while True:
        for lease in read_leases(serial_log_path, since):
            if (nic is None or lease.nic == nic) and (ip is None or lease.ip == ip):
                return lease
        if time.monotonic() > deadline:
            want = "".join(f" {k}={v}" for k, v in (("nic", nic), ("ip", ip)) if v)
            raise TimeoutError(
                f"no DHCP lease{want} in {serial_log_path} after {timeout}s; log tail:\n{_tail(serial_log_path)}"
            )
        time.sleep(poll)


def _tail(path, n=2000) -> str:
    try:
        return Path(path).read_bytes()[-n:].decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no serial log yet)"


@dataclass
class Guest:
    name: str
    dom: libvirt.virDomain
    serial_log: Path
    macs: list[str] = field(default_factory=list)
    ip: str | None = None

    @property
    def mac(self) -> str | None:
        return self.macs[0] if self.macs else None

    def log_size(self) -> int:
        try:
            return self.serial_log.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_for_lease(self, timeout: float = 60, nic: str | None = "eth0", since: int = 0) -> str:
        self.ip = wait_for_lease(self.serial_log, timeout, nic=nic, since=since)
        return self.ip

    def wait_for_new_lease(self, since: int, timeout: float = 30, nic: str = "eth0", ip: str | None = None) -> Lease:
        """The first lease or renew marker printed after log offset `since`
        (e.g. the value renew() returned), optionally with address `ip`.
        Updates .ip, like wait_for_lease()."""
        lease = wait_for_lease_marker(self.serial_log, timeout, nic=nic, since=since, ip=ip, poll=0.05)
        self.ip = lease.ip
        return lease

    # ---- probes: ask the running guest over HTTP (see the module docstring) ----

    def probe(self, lvd: HttpGetter, path: str, timeout: float = 10) -> str:
        """GET `path` (e.g. "/cgi-bin/addr") from the guest at .ip and return
        the body; raises on an HTTP error (bad arguments get 400)."""
        if self.ip is None:
            raise RuntimeError(f"{self.name}: no known address; call wait_for_lease() first")
        return lvd.http_get(f"http://{self.ip}{path}", timeout=timeout)

    def lookup(
        self, lvd: HttpGetter, name: str, type: str = "a", nic: str | None = None, server: str | None = None
    ) -> LookupResult:
        """Resolve `name` inside the guest against the DNS server its DHCP lease
        named (/etc/resolv.conf; `nic`: the one that NIC's lease named;
        `server`: that address). Note busybox nslookup: with a search domain
        (the network's <domain>), a dotless name is asked only as
        name.<domain>; end the name with "." to ask for it as it is."""
        query = {"name": name, "type": type}
        if nic:
            query["nic"] = nic
        if server:
            query["server"] = server
        return parse_lookup(self.probe(lvd, "/cgi-bin/lookup?" + urllib.parse.urlencode(query)))

    def renew(self, lvd: HttpGetter, nic: str = "eth0") -> int:
        """Make the guest's udhcpc renew `nic`'s lease now. Returns the log
        offset to pass to wait_for_new_lease(): a KVMWEB-RENEW marker follows
        within a second, or, if the server NAKs (e.g. its reservation for this
        MAC changed), a KVMWEB-LEASE with the new address ~3.5 s later."""
        return self._dhcp_probe(lvd, "renew", nic)

    def release_renew(self, lvd: HttpGetter, nic: str = "eth0") -> int:
        """Release `nic`'s lease and DHCP again at once (no NAK and 3 s pause
        as with renew). Returns the log offset for wait_for_new_lease()."""
        return self._dhcp_probe(lvd, "release-renew", nic)

    def _dhcp_probe(self, lvd: HttpGetter, what: str, nic: str) -> int:
        since = self.log_size()
        answer = self.probe(lvd, f"/cgi-bin/{what}?" + urllib.parse.urlencode({"nic": nic}))
        if not answer.startswith(f"OK {what} {nic} "):
            raise RuntimeError(f"{self.name}: /cgi-bin/{what} answered {answer!r}")
        return since

    def addresses(self, lvd: HttpGetter) -> dict[str, list[str]]:
        """IPv4 addresses ("ip/prefix") per NIC, as the guest sees them; every
        ethN is a key, with [] if it has none."""
        result: dict[str, list[str]] = {}
        for line in self.probe(lvd, "/cgi-bin/addr").splitlines():
            words = line.split()
            if words[:1] == ["NIC"]:
                result.setdefault(words[1], [])
            elif words[:1] == ["ADDR"]:
                result.setdefault(words[1], []).append(words[2])
        return result

    def lease_info(self, lvd: HttpGetter, nic: str = "eth0") -> dict[str, str]:
        """`nic`'s current lease as the guest got it: ip, prefix, router, dns,
        domain, lease (seconds), serverid; {} without a lease."""
        body = self.probe(lvd, "/cgi-bin/lease?" + urllib.parse.urlencode({"nic": nic}))
        return dict((line.split(" ", 1) + [""])[:2] for line in body.splitlines() if line)

    # ---- the guest's own pings to its gateway (/cgi-bin/pinggap) ----

    def start_gateway_pings(self, lvd: HttpGetter, nic: str = "eth0", interval: float = 0.05) -> int:
        """Start busybox ping from inside the guest to `nic`'s DHCP router
        every `interval` seconds, in the background, replacing an earlier run
        on `nic`; every reply is stamped with the guest's uptime. Returns the
        pinger's PID in the guest (its process group is stopped with it)."""
        query = urllib.parse.urlencode({"nic": nic, "interval": f"{interval:g}"})
        answer = self.probe(lvd, f"/cgi-bin/pinggap?start&{query}").strip()
        words = answer.split()
        if len(words) != 2 or words[0] != "OK" or not words[1].isdigit():
            raise RuntimeError(f"{self.name}: /cgi-bin/pinggap?start answered {answer!r}")
        return int(words[1])

    def gateway_ping_status(self, lvd: HttpGetter, nic: str = "eth0") -> GapReport:
        """The report so far; the pings go on."""
        return parse_gap_report(self.probe(lvd, "/cgi-bin/pinggap?status&" + urllib.parse.urlencode({"nic": nic})))

    def stop_gateway_pings(self, lvd: HttpGetter, nic: str = "eth0") -> GapReport:
        """Stop the pings started by start_gateway_pings() and report: reply
        count, the longest gap between consecutive replies, first and last
        reply (guest uptime). Needs the guest reachable again."""
        return parse_gap_report(self.probe(lvd, "/cgi-bin/pinggap?stop&" + urllib.parse.urlencode({"nic": nic})))

    def guest_clock(self, lvd: HttpGetter, nic: str = "eth0") -> GuestClock:
        """Read the guest's uptime (a status probe) to relate host
        monotonic time to the times in a GapReport."""
        before = time.monotonic()
        report = self.gateway_ping_status(lvd, nic)
        after = time.monotonic()
        if report.now is None:
            raise RuntimeError(f"{self.name}: /cgi-bin/pinggap?status gave no NOW: {report.raw!r}")
        return GuestClock(offset=report.now - (before + after) / 2, uncertainty=(after - before) / 2)

    def destroy(self) -> None:
        """Power off and undefine (ignores an already stopped guest)."""
        if self.dom.isActive():
            self.dom.destroy()
        if self.dom.isPersistent():
            self.dom.undefine()


def _macs_of(dom: libvirt.virDomain) -> list[str]:
    root = ET.fromstring(dom.XMLDesc())
    return [m.get("address") for m in root.findall("./devices/interface/mac")]


def _stagger_and_check_capacity(conn: libvirt.virConnect) -> None:
    """Refuse a fifth running guest and space out boots (called under lock)."""
    global _last_start
    running = conn.numOfDomains()
    if running >= MAX_GUESTS:
        raise RuntimeError(f"{running} guests already running; at most {MAX_GUESTS} fit this machine")
    wait = _last_start + STAGGER_SECONDS - time.monotonic()
    if wait > 0:
        time.sleep(wait)


def boot_guest(
    conn: libvirt.virConnect,
    name: str,
    image: GuestImage | str | Path,
    log_dir,
    network=None,
    bridge=None,
    mac=None,
    hostname=None,
) -> Guest:
    """Define and start a test guest whose serial console goes to
    log_dir/<name>.serial.log. Returns at once; call .wait_for_lease()."""
    global _last_start
    if not isinstance(image, GuestImage):
        image = GuestImage.from_dir(image)
    serial_log = Path(log_dir) / f"{name}.serial.log"
    serial_log.parent.mkdir(parents=True, exist_ok=True)
    xml = guest_domain_xml(
        name,
        str(image.kernel),
        str(image.initrd),
        network=network,
        bridge=bridge,
        mac=mac,
        serial_log_path=str(serial_log),
        hostname=hostname,
    )
    with _start_lock:
        _stagger_and_check_capacity(conn)
        dom = conn.defineXML(xml)
        try:
            dom.create()
        except libvirt.libvirtError:
            dom.undefine()
            raise
        _last_start = time.monotonic()
    return Guest(name=name, dom=dom, serial_log=serial_log, macs=_macs_of(dom))
