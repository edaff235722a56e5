"""A throwaway libvirtd (+ virtlogd) private to the tests.

The daemons run in their own network namespace (only `lo` plus whatever
bridges libvirt creates: no uplink, no route to the machine's real network)
and their own mount namespace, where scratch directories are bind-mounted over
/etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and
/var/cache/libvirt. Bridges, dnsmasq, firewall rules and guests therefore stay
inside the namespace and vanish with it.

Clients reach the daemon through its socket, which the host sees inside the
scratch directory: `qemu:///system?socket=<scratch>/run/libvirt/libvirt-sock`.

Plain Python (no Django, no pytest) so that fixtures, scripts and a Django
test suite can all use it. Needs root, iproute2 (`ip netns`), util-linux
(`unshare`, `nsenter`), libvirt-daemon-system and libvirt-python.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libvirt

NETNS_PREFIX = "kvmweb-test-"
SCRATCH_PREFIX = "kvmweb-lvd-"

# Directories the daemon must not share with the host, and where their
# private copies live inside the scratch dir.
PRIVATE_DIRS = (
    "/etc/libvirt",
    "/run/libvirt",
    "/var/lib/libvirt",
    "/var/log/libvirt",
    "/var/cache/libvirt",
)

# qemu runs as root: the scratch dir, serial logs and the guest image then
# need no relabelling, and libvirt leaves no ownership xattrs behind on the
# shared guest-image cache (stale ones make later runs fail).
QEMU_CONF_OVERRIDES = """
# --- kvmweb private test daemon ---
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
"""

# No polkit/D-Bus on test machines; the socket itself is root-only (0700).
LIBVIRTD_CONF_OVERRIDES = """
# --- kvmweb private test daemon ---
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

# Run as `python -c _HTTP_GET URL TIMEOUT` inside a namespace.
_HTTP_GET = (
    "import sys, urllib.request; "
    "body = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read(); "
    "sys.stdout.write(body.decode('utf-8', 'replace'))"
)

UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the NUL


class PrivateLibvirtdError(RuntimeError):
    pass


def _run(argv, check=True, timeout=60, **kw) -> subprocess.CompletedProcess:
    """subprocess.run with captured text output and a message that shows stderr."""
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise PrivateLibvirtdError(f"{shlex.join(argv)} exited {res.returncode}: {res.stderr.strip()}")
    return res


def pid_is_gone(pid: int) -> bool:
    """True if the PID no longer runs. A zombie counts as gone: killed
    orphans (qemu, dnsmasq) belong to PID 1, which on some machines (the
    sandboxed ones here) reaps them only seconds later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state in ("Z", "X")


def _kill_pids(pids, grace: float = 3.0) -> list[int]:
    """SIGTERM the given PIDs, SIGKILL whatever is still there after `grace`
    seconds. Returns the PIDs that are still alive afterwards."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not all(map(pid_is_gone, pids)):
            time.sleep(0.05)
        pids = [p for p in pids if not pid_is_gone(p)]
        if not pids:
            break
    return pids


def netns_pids(netns: str) -> list[int]:
    """PIDs of the processes living in a named network namespace."""
    res = _run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in res.stdout.split() if p.isdigit()]


def _delete_netns(netns: str) -> None:
    """Kill every process in the namespace (by PID), then delete it."""
    left = _kill_pids(netns_pids(netns))
    if left:
        raise PrivateLibvirtdError(f"processes {left} in netns {netns} would not die")
    _run(["ip", "netns", "delete", netns])


def sweep_stale(tmpdir: str | None = None) -> list[str]:
    """Remove namespaces and scratch dirs left by a test process that died
    without cleaning up. Their names embed the creating PID, so a run never
    touches those of a live process (e.g. a parallel pytest worker)."""
    removed = []
    listing = _run(["ip", "netns", "list"], check=False).stdout.split("\n")
    for name in (line.split()[0] for line in listing if line.strip()):
        if name.startswith(NETNS_PREFIX) and _owner_is_gone(name, NETNS_PREFIX):
            _delete_netns(name)
            removed.append(name)
    for path in Path(tmpdir or tempfile.gettempdir()).glob(SCRATCH_PREFIX + "*"):
        if _owner_is_gone(path.name, SCRATCH_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


def _owner_is_gone(name: str, prefix: str) -> bool:
    owner = name[len(prefix) :].split("-", 1)[0]
    return owner.isdigit() and pid_is_gone(int(owner))


class PrivateLibvirtd:
    """A libvirtd + virtlogd pair in private network and mount namespaces.

    Usage:
        with PrivateLibvirtd() as lvd:
            conn = libvirt.open(lvd.uri)

    The daemons run in the foreground as children of this process (not
    double-forked with -d): stop() kills them by PID and reaps them itself,
    and start() sees at once if one died. Their PIDs are in `pids` and in
    pid files under <scratch>/pids/.
    """

    def __init__(
        self, tmpdir: str | None = None, start_timeout: float = 30.0, caps_cache: str | os.PathLike | None = None
    ):
        """tmpdir: where the scratch dir goes (keep it short: the socket path
        must fit AF_UNIX). caps_cache: a directory that keeps libvirt's QEMU
        capability cache between daemons; probing QEMU costs ~3.5 s on the
        first domain call otherwise. libvirt re-probes if it is stale."""
        self.tmpdir = tmpdir or os.environ.get("KVMWEB_LIBVIRTD_TMPDIR") or tempfile.gettempdir()
        self.caps_cache = Path(caps_cache) if caps_cache else None
        self.start_timeout = start_timeout
        tag = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.netns = NETNS_PREFIX + tag
        self.scratch: Path | None = None
        self.uri: str | None = None
        self.pids: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._netns_created = False
        self._tag = tag
        self.clients: list[ClientNetns] = []
        self.start_seconds: float | None = None

    # ---- public API -----------------------------------------------------

    def start(self) -> PrivateLibvirtd:
        """Create namespaces and scratch dirs, start the daemons and wait until
        libvirtd answers. On failure, cleans up and re-raises."""
        if self.scratch is not None:
            raise PrivateLibvirtdError("start() called twice; create a new PrivateLibvirtd")
        t0 = time.monotonic()
        atexit.register(self.stop)
        try:
            self._make_scratch()
            self._make_netns()
            self._start_virtlogd()
            self._start_libvirtd()
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Tear everything down; safe to call twice or after a failed start.
        Order matters: qemu and dnsmasq outlive libvirtd and would keep the
        namespace alive, so libvirt destroys them first."""
        atexit.unregister(self.stop)
        errors = []
        steps = (
            self._reset_if_running,
            self._stop_daemons,
            self._save_caps_cache,
            self._remove_netns,
            self._remove_scratch,
        )
        for step in steps:
            try:
                step()
            except Exception as exc:  # keep going: later steps free more
                errors.append(f"{step.__name__}: {exc}")
        if errors:
            raise PrivateLibvirtdError("cleanup incomplete: " + "; ".join(errors))

    def __enter__(self) -> PrivateLibvirtd:
        # Tolerate an instance that was started already (e.g. by a factory).
        return self if self.scratch is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def connect(self) -> libvirt.virConnect:
        """A new read-write connection; the caller closes it."""
        return libvirt.open(self.uri)

    def reset(self) -> None:
        """Destroy and undefine every domain and network, leaving an empty
        daemon (used between tests and before stopping)."""
        conn = self.connect()
        try:
            for dom in conn.listAllDomains():
                _destroy_and_undefine(dom, _undefine_domain)
            for net in conn.listAllNetworks():
                _destroy_and_undefine(net, lambda n: n.undefine())
        finally:
            conn.close()

    def restart_libvirtd(self) -> float:
        """Stop libvirtd (SIGTERM, by PID) and start it again in the same
        namespaces; guests and dnsmasq keep running, as on a real host.
        Returns the seconds until the API answered again."""
        t0 = time.monotonic()
        self._terminate("libvirtd")
        self._start_libvirtd()
        self._wait_until_ready()
        return time.monotonic() - t0

    def stop_libvirtd(self) -> None:
        """Stop libvirtd alone (SIGTERM, by PID), as a crash or an upgrade does; guests keep
        running. start_libvirtd() brings it back."""
        self._terminate("libvirtd")

    def start_libvirtd(self) -> float:
        """Start libvirtd again after stop_libvirtd(); returns the seconds until it answered."""
        t0 = time.monotonic()
        self._start_libvirtd()
        self._wait_until_ready()
        return time.monotonic() - t0

    def freeze_libvirtd(self, frozen: bool = True) -> None:
        """SIGSTOP (or SIGCONT) libvirtd: it keeps its socket and connections but answers
        nothing, like a hung host."""
        self._check_alive("libvirtd")
        os.kill(self.pids["libvirtd"], signal.SIGSTOP if frozen else signal.SIGCONT)

    def sighup_libvirtd(self) -> None:
        """SIGHUP makes libvirtd reload config and pick up new hooks."""
        self._check_alive("libvirtd")
        os.kill(self.pids["libvirtd"], signal.SIGHUP)

    def run_in_netns(self, argv, check=False, timeout=60, **kw) -> subprocess.CompletedProcess:
        """Run argv inside the daemon's network namespace (host mount
        namespace, so host paths work). Output is captured as text."""
        return _run(["ip", "netns", "exec", self.netns, *argv], check=check, timeout=timeout, **kw)

    def exec_in_ns(self, argv, timeout=60) -> str:
        """Like run_in_netns but returns stdout and raises on failure."""
        return self.run_in_netns(argv, check=True, timeout=timeout).stdout

    def http_get(self, url: str, timeout: float = 5) -> str:
        """GET a URL from inside the namespace (as a client there would) and
        return the body. Uses this Python: busybox wget segfaults here and
        the host has no curl."""
        return self.exec_in_ns([sys.executable, "-c", _HTTP_GET, url, str(timeout)], timeout=timeout + 10)

    def add_client_netns(
        self, client_cidr: str = "10.254.0.2/24", host_cidr: str | None = "10.254.0.1/24", bridge: str | None = None
    ) -> ClientNetns:
        """A second, isolated namespace joined to the daemon's by a veth pair:
        a "client" for reachability and port-forwarding tests. Without
        `bridge`, the daemon's end gets `host_cidr` and plays the host's
        uplink (clients then reach host_cidr:PORT, DNAT leads to a guest).
        With `bridge`, the daemon's end joins that bridge instead and the
        client sits on the guests' L2 segment. Removed by stop()."""
        n = len(self.clients)
        client = ClientNetns(f"{self.netns}-c{n}", client_cidr.split("/")[0])
        _run(["ip", "netns", "add", client.netns])
        self.clients.append(client)
        # veth names max 15 chars; the tag's random part keeps them unique.
        host_if, client_if = f"kvh{self._tag[-6:]}{n}", f"kvc{self._tag[-6:]}{n}"
        _run(["ip", "-n", self.netns, "link", "add", host_if, "type", "veth",
              "peer", "name", client_if, "netns", client.netns])  # fmt: skip
        if bridge:
            _run(["ip", "-n", self.netns, "link", "set", host_if, "master", bridge])
        elif host_cidr:
            _run(["ip", "-n", self.netns, "addr", "add", host_cidr, "dev", host_if])
        _run(["ip", "-n", self.netns, "link", "set", host_if, "up"])
        for cmd in (["link", "set", "lo", "up"], ["addr", "add", client_cidr, "dev", client_if],
                    ["link", "set", client_if, "up"]):  # fmt: skip
            _run(["ip", "-n", client.netns, *cmd])
        client.interface = client_if
        client.peer_interface = host_if
        return client

    def private_path(self, host_path: str) -> Path:
        """Where the daemon's view of `host_path` (under one of the private
        dirs, e.g. /etc/libvirt/hooks/qemu) lives on the host."""
        for d in PRIVATE_DIRS:
            if host_path == d or host_path.startswith(d + "/"):
                return self.scratch / host_path.lstrip("/")
        raise ValueError(f"{host_path} is not under a private libvirt dir")

    @property
    def socket_dir(self) -> Path:
        """The directory of the daemon's socket: what kvmweb must be allowed to
        open (KVMWEB_URI_PATHS_ALLOWED) to use `uri`."""
        return self.private_path("/run/libvirt")

    @property
    def log_path(self) -> Path:
        return self.private_path("/var/log/libvirt/libvirtd.log")

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the daemon logs, for error messages."""
        if self.scratch is None:
            return ""
        out = []
        for f in (self.log_path, self.scratch / "libvirtd.out", self.scratch / "virtlogd.out"):
            if f.exists():
                out.append(f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    # ---- start helpers ----------------------------------------------------

    def _make_scratch(self) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{self._tag}-", dir=self.tmpdir))
        # dnsmasq drops to the libvirt-dnsmasq user and must still read its
        # hosts file below var/lib/libvirt.
        self.scratch.chmod(0o755)
        sock = self.scratch / "run/libvirt/libvirt-sock"
        if len(str(sock)) > UNIX_PATH_MAX:
            raise PrivateLibvirtdError(f"socket path too long for AF_UNIX: {sock}; use a shorter tmpdir")
        for d in PRIVATE_DIRS[1:]:
            (self.scratch / d.lstrip("/")).mkdir(parents=True)
        (self.scratch / "pids").mkdir()
        self._copy_etc()
        self._load_caps_cache()
        self.uri = f"qemu:///system?socket={sock}"

    def _copy_etc(self) -> None:
        """Copy the host's daemon config files and nwfilters, but not its
        domain/network/storage definitions (they would autostart here) nor
        its hooks (they act on the host)."""
        src, dst = Path("/etc/libvirt"), self.scratch / "etc/libvirt"
        dst.mkdir(parents=True)
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, dst / f.name)
        if (src / "nwfilter").is_dir():
            shutil.copytree(src / "nwfilter", dst / "nwfilter")
        for d in ("hooks", "qemu/networks/autostart", "qemu/autostart"):
            (dst / d).mkdir(parents=True, exist_ok=True)
        with open(dst / "qemu.conf", "a") as f:
            f.write(QEMU_CONF_OVERRIDES)
        with open(dst / "libvirtd.conf", "a") as f:
            f.write(LIBVIRTD_CONF_OVERRIDES)

    def _daemon_caps_dir(self) -> Path:
        return self.private_path("/var/cache/libvirt/qemu/capabilities")

    def _load_caps_cache(self) -> None:
        if self.caps_cache and self.caps_cache.is_dir():
            shutil.copytree(self.caps_cache, self._daemon_caps_dir())

    def _save_caps_cache(self) -> None:
        """Keep the daemon's (maybe refreshed) capability files for next time."""
        if not self.caps_cache or self.scratch is None:
            return
        src = self._daemon_caps_dir()
        if src.is_dir() and any(src.glob("*.xml")):
            self.caps_cache.mkdir(parents=True, exist_ok=True)
            for f in src.glob("*.xml"):
                tmp = self.caps_cache / f".{f.name}.tmp"
                shutil.copy2(f, tmp)
                tmp.replace(self.caps_cache / f.name)  # atomic for parallel runs

    def _make_netns(self) -> None:
        _run(["ip", "netns", "add", self.netns])
        self._netns_created = True
        _run(["ip", "-n", self.netns, "link", "set", "lo", "up"])

    def _spawn(self, name: str, argv) -> None:
        """Start a daemon in the foreground as our child, output to a file.
        New session: a Ctrl-C in the terminal must not kill it before the
        fixture's teardown has destroyed the guests through it."""
        # Append: a restarted daemon keeps its predecessor's output.
        with open(self.scratch / f"{name}.out", "ab") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._procs[name] = proc
        self.pids[name] = proc.pid

    def _start_virtlogd(self) -> None:
        """virtlogd creates the mount namespace: unshare execs sh, which
        bind-mounts the scratch dirs and execs virtlogd (same PID throughout)."""
        mounts = []
        for d in PRIVATE_DIRS:
            src = shlex.quote(str(self.scratch / d.lstrip("/")))
            mounts.append(f"mkdir -p {d} && mount --bind {src} {d}")
        pidfile = shlex.quote(str(self.scratch / "pids/virtlogd.pid"))
        script = " && ".join(["set -e", *mounts, f"exec virtlogd -p {pidfile}"])
        self._spawn(
            "virtlogd",
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        )
        self._wait_for_path("virtlogd", self.scratch / "run/libvirt/virtlogd-sock")

    def _start_libvirtd(self) -> None:
        """libvirtd joins virtlogd's mount and network namespaces."""
        pidfile = str(self.scratch / "pids/libvirtd.pid")
        self._spawn(
            "libvirtd",
            ["nsenter", "--target", str(self.pids["virtlogd"]), "--mount", "--net", "--", "libvirtd", "-p", pidfile],
        )

    def _wait_for_path(self, name: str, path: Path) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not path.exists():
            self._check_alive(name)
            if time.monotonic() > deadline:
                raise PrivateLibvirtdError(f"{name}: {path} did not appear\n{self.log_tail()}")
            time.sleep(0.02)

    def _check_alive(self, name: str) -> None:
        rc = self._procs[name].poll()
        if rc is not None:
            raise PrivateLibvirtdError(f"{name} exited with {rc}\n{self.log_tail()}")

    def _wait_until_ready(self) -> None:
        """The socket appears before the drivers are up; a successful open
        plus a trivial call means the daemon answers."""
        self._wait_for_path("libvirtd", self.scratch / "run/libvirt/libvirt-sock")
        deadline = time.monotonic() + self.start_timeout
        while True:
            self._check_alive("libvirtd")
            try:
                conn = libvirt.open(self.uri)
                conn.getLibVersion()
                conn.close()
                return
            except libvirt.libvirtError as exc:
                if time.monotonic() > deadline:
                    raise PrivateLibvirtdError(f"libvirtd not answering: {exc}\n{self.log_tail()}") from exc
                time.sleep(0.1)

    # ---- stop helpers -----------------------------------------------------

    def _reset_if_running(self) -> None:
        proc = self._procs.get("libvirtd")
        if proc is not None and proc.poll() is None and self.uri:
            self.reset()

    def _stop_daemons(self) -> None:
        for name in ("libvirtd", "virtlogd"):
            self._terminate(name)

    def _terminate(self, name: str) -> None:
        """Terminate a daemon by its recorded PID and reap it."""
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def remove_clients(self) -> None:
        """Delete every client namespace (and so its veth pair)."""
        for client in reversed(self.clients):
            _delete_netns(client.netns)
            self.clients.remove(client)

    def _remove_netns(self) -> None:
        self.remove_clients()
        if self._netns_created:
            _delete_netns(self.netns)
            self._netns_created = False

    def _remove_scratch(self) -> None:
        if self.scratch is not None and self.scratch.exists():
            shutil.rmtree(self.scratch)


class ClientNetns:
    """A client namespace made by PrivateLibvirtd.add_client_netns()."""

    def __init__(self, netns: str, address: str):
        self.netns = netns
        self.address = address
        self.interface: str | None = None  # its veth end
        self.peer_interface: str | None = None  # the daemon namespace's end

    def run(self, argv, check=False, timeout=60, **kw) -> subprocess.CompletedProcess:
        return _run(["ip", "netns", "exec", self.netns, *argv], check=check, timeout=timeout, **kw)

    def http_get(self, url: str, timeout: float = 5) -> str:
        return self.run([sys.executable, "-c", _HTTP_GET, url, str(timeout)], check=True, timeout=timeout + 10).stdout


def _undefine_domain(dom: libvirt.virDomain) -> None:
    flags = (
        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    )
    dom.undefineFlags(flags)


def _destroy_and_undefine(obj, undefine) -> None:
    """Destroy if running, undefine if persistent. A transient object is gone
    once destroyed, hence the persistence check before destroying."""
    persistent = obj.isPersistent()
    if obj.isActive():
        obj.destroy()
    if persistent:
        undefine(obj)
