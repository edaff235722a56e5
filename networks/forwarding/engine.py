"""Port forwards on this hypervisor, for the host worker (root, in the host's namespaces).

The run functions of the port-forward operations compute the full list of the host's forwards
(from the mirror and libvirt) and the bridges of the host's libvirt networks, and call
`forwards_apply`; nothing here reads the database or calls libvirt. Which guests run is read
here, under the rules lock, from libvirt's status files, as the hooks read it. Settings
(deployer's, not user input):

- KVMWEB_LIBVIRT_HOOKS_DIR (default /etc/libvirt/hooks): where `qemu.d/kvmweb` and
  `network.d/kvmweb` go; libvirt's `network.conf` is read from its parent directory.
- KVMWEB_LIBVIRTD_PIDFILE (default /run/libvirtd.pid): libvirtd gets SIGHUP when a hook was
  installed or changed, since it only notices new hooks then. With libvirt's modular daemons,
  name both that read hooks, comma-separated: /run/virtqemud.pid,/run/virtnetworkd.pid. Left at
  its default, when /run/libvirtd.pid does not exist, those two are tried (`MODULAR_PIDFILES`);
  pidfiles named on purpose are the only ones signalled. A daemon that
  could not be signalled makes a warning in the apply's report, and the reload is tried
  again at every apply until one succeeds.
- KVMWEB_LIBVIRT_QEMU_STATE_DIR (default /run/libvirt/qemu): where the hooks see which guests
  run (libvirt's status files), without calling libvirt.
- KVMWEB_FORWARD_RULES_FILE (default DATA_DIR/forwards/rules.json): the rules the hooks read.
- KVMWEB_NETWORK_UPDATES_DIR (default `network-updates` next to the rules file): where the
  network hook leaves a marker for each net-update, which the host worker's event watcher
  takes within a second (rules.record_network_update / take_network_updates).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from networks.forwarding import rules as fw
from networks.forwarding.rules import ForwardRule

logger = logging.getLogger(__name__)

HOOK_KINDS = ("qemu", "network")
# The daemons that run hooks: the monolithic one, or the modular ones of the qemu and network
# drivers. A pidfile naming any other process (a stale file, a reused PID) gets no signal.
LIBVIRT_DAEMONS = {"libvirtd", "virtqemud", "virtnetworkd"}
# Where the modular daemons keep their PIDs, tried when the default pidfile does not exist.
DEFAULT_LIBVIRTD_PIDFILE = "/run/libvirtd.pid"
MODULAR_PIDFILES = (Path("/run/virtqemud.pid"), Path("/run/virtnetworkd.pid"))
# How long the host worker waits for the rules lock (a hook holds it for a fraction of a second).
WORKER_LOCK_TIMEOUT = 120.0
NOT_RELOADED = (
    "hooks installed but libvirtd not reloaded ({why}): the next guest start will not re-apply "
    "the forwards; send SIGHUP to libvirtd or virtqemud/virtnetworkd"
)
_BACKEND_SETTING = re.compile(r'^\s*firewall_backend\s*=\s*"(\w+)"', re.MULTILINE)


@dataclass(frozen=True)
class HostPaths:
    hooks_dir: Path
    libvirtd_pidfiles: tuple[Path, ...]
    qemu_state_dir: Path
    rules_file: Path
    # Tried when none of libvirtd_pidfiles exists (from_settings: MODULAR_PIDFILES).
    fallback_pidfiles: tuple[Path, ...] = ()
    # The net-update markers' spool; None: `network-updates` next to the rules file.
    network_updates: Path | None = None

    @classmethod
    def from_settings(cls) -> HostPaths:
        pidfiles = tuple(Path(p.strip()) for p in settings.KVMWEB_LIBVIRTD_PIDFILE.split(",") if p.strip())
        # Pidfiles a deployer (or a test) named are the only ones signalled: the modular
        # daemons' are guessed only when the setting was left at its default.
        guessed = MODULAR_PIDFILES if settings.KVMWEB_LIBVIRTD_PIDFILE == DEFAULT_LIBVIRTD_PIDFILE else ()
        return cls(
            hooks_dir=Path(settings.KVMWEB_LIBVIRT_HOOKS_DIR),
            libvirtd_pidfiles=pidfiles,
            qemu_state_dir=Path(settings.KVMWEB_LIBVIRT_QEMU_STATE_DIR),
            rules_file=Path(settings.KVMWEB_FORWARD_RULES_FILE),
            fallback_pidfiles=guessed,
            network_updates=Path(settings.KVMWEB_NETWORK_UPDATES_DIR) if settings.KVMWEB_NETWORK_UPDATES_DIR else None,
        )

    @property
    def network_updates_dir(self) -> Path:
        return self.network_updates or self.rules_file.parent / "network-updates"

    def hook_path(self, kind: str) -> Path:
        return self.hooks_dir / f"{kind}.d" / "kvmweb"

    @property
    def reload_pending(self) -> Path:
        """Marks hooks written whose daemon reload has not succeeded yet."""
        return self.rules_file.with_name("hooks-reload-pending")


class ApplyReport(dict):
    """forward id -> ForwardState value ("present", "guest_stopped", "missing"), as before (so
    `report[forward_id]`, `{**report}` and `report == {...}` keep working), plus `warnings`:
    sentences for the operation's result that do not make a forward's state wrong now but
    matter later, e.g. "hooks installed but libvirtd not reloaded (...): the next guest start
    will not re-apply the forwards; send SIGHUP to libvirtd or virtqemud/virtnetworkd"."""

    def __init__(self, states: dict[int, str], warnings: Iterable[str] = ()):
        super().__init__(states)
        self.warnings: list[str] = list(warnings)

    @property
    def states(self) -> dict[int, str]:
        return dict(self)


@dataclass(frozen=True)
class Reload:
    """The SIGHUP for one pidfile: sent, or why not."""

    pidfile: Path
    signalled: bool
    reason: str = ""


@dataclass(frozen=True)
class HookInstall:
    changed: bool  # a hook was written
    reloads: tuple[Reload, ...] = ()  # the reloads tried (when a hook changed or one was pending)
    warnings: tuple[str, ...] = field(default=())


def forwards_apply(
    rules: Sequence[ForwardRule],
    *,
    guest_bridges: Iterable[str] = (),
    paths: HostPaths | None = None,
) -> ApplyReport:
    """Make the host hold exactly the rules of `rules` whose guest runs (and nothing of forwards
    not listed), write the rules file the hooks read, install/refresh the hooks (making libvirtd
    load a newly installed hook). Returns an ApplyReport: forward_id -> ForwardState value
    ("present", "guest_stopped", "missing" if verification failed) plus `warnings` for the
    operation's result (libvirtd not reloaded; libvirt's state directory missing).

    `rules` is every enabled forward of this host with a known guest address: the hooks re-apply
    the whole file whenever a guest starts or stops, so a stopped guest's forward belongs in it
    too (it applies at the guest's next start).

    `guest_bridges`: the bridge of every libvirt network of the host (the bridges of `rules` are
    added): a forward on every address leaves traffic arriving from them alone, so that guests
    still reach their gateway (DNS, DHCP, ...) on a forwarded port. Saved in the rules file for
    the hooks; a network defined later is covered from the next apply on.

    Which guests run is read under the rules lock from libvirt's status files
    (`paths.qemu_state_dir`), exactly as the hooks read it, so that a guest starting or stopping
    meanwhile (its hook waits for the lock and runs next) cannot leave a stale set applied: the
    caller need not ask libvirt. Nothing here calls libvirt (a hook waiting for the lock holds
    libvirtd).

    Raises fw.FirewallError when a firewall command fails (its first line of output in the
    message; fw.LockTimeout when the lock stays held WORKER_LOCK_TIMEOUT s), ValueError for a
    forward id listed twice or a bad bridge name, and OSError when a file cannot be written.
    """
    paths = paths or HostPaths.from_settings()
    _check_unique_ids(rules)
    bridges = fw.bridges_of(rules, guest_bridges)
    backend = firewall_backend(paths)
    warnings = _state_dir_warnings(paths)
    with fw.rules_lock(paths.rules_file, timeout=WORKER_LOCK_TIMEOUT):
        running = fw.running_domains(paths.qemu_state_dir)
        fw.write_atomically(paths.rules_file, fw.rules_to_json(backend, rules, bridges), mode=0o600)
        fw.replace_rules(backend, [r for r in rules if r.guest_name in running], bridges)
        fw.remove_other_backend(backend)
        states = fw.states(backend, rules, running, bridges)
    installed = install_hooks(paths)
    return ApplyReport(states, warnings + list(installed.warnings))


def forwards_check(
    rules: Sequence[ForwardRule],
    *,
    guest_bridges: Iterable[str] | None = None,
    paths: HostPaths | None = None,
) -> ApplyReport:
    """The same answer without changing anything (for the live state and after a restart).

    Running guests come from libvirt's status files under the rules lock, as in forwards_apply.
    `guest_bridges` None: the bridges saved in the rules file by the last apply (what the rules
    were written with)."""
    paths = paths or HostPaths.from_settings()
    backend = firewall_backend(paths)
    with fw.rules_lock(paths.rules_file, timeout=WORKER_LOCK_TIMEOUT):
        if guest_bridges is None:
            guest_bridges = _saved_bridges(paths)
        running = fw.running_domains(paths.qemu_state_dir)
        states = fw.states(backend, rules, running, fw.bridges_of(rules, guest_bridges))
    return ApplyReport(states, _state_dir_warnings(paths))


def remove_everything(paths: HostPaths | None = None) -> HookInstall:
    """For decommissioning a host: no kvmweb rule left in either backend, the rules file and
    the hooks gone, libvirtd told (SIGHUP) to forget the hooks. A hook that runs meanwhile finds
    no rules file and changes nothing."""
    paths = paths or HostPaths.from_settings()
    with fw.rules_lock(paths.rules_file, timeout=WORKER_LOCK_TIMEOUT):
        paths.rules_file.unlink(missing_ok=True)
        for backend, tool in ((fw.IPTABLES, "iptables-save"), (fw.NFTABLES, "nft")):
            if fw.tool_exists(tool):
                fw.replace_rules(backend, [])
    removed = remove_hooks(paths)
    paths.reload_pending.unlink(missing_ok=True)
    if not removed:
        return HookInstall(False)
    reloads = reload_daemons(paths)
    warnings = _reload_warnings(reloads, "hooks removed but libvirtd not reloaded ({why}): send it SIGHUP")
    return HookInstall(True, reloads, warnings)


def _saved_bridges(paths: HostPaths) -> tuple[str, ...]:
    try:
        return fw.rules_from_json(paths.rules_file.read_text()).guest_bridges
    except (OSError, ValueError):
        return ()


def _state_dir_warnings(paths: HostPaths) -> list[str]:
    if paths.qemu_state_dir.is_dir():
        return []
    return [
        f"libvirt's state directory {paths.qemu_state_dir} does not exist: no guest counts as running "
        "(set KVMWEB_LIBVIRT_QEMU_STATE_DIR)"
    ]


def firewall_backend(paths: HostPaths | None = None) -> str:
    """The firewall backend the host's libvirt uses: "iptables" or "nftables".

    In order: `firewall_backend` in libvirt's network.conf (libvirt >= 10 reads it); which of
    libvirt's rules exist (its `table ip libvirt_network`, or its LIBVIRT_FWI chain); else what
    this libvirt picks by default (nftables from 10.x on when `nft` exists, iptables before)."""
    paths = paths or HostPaths.from_settings()
    configured = _configured_backend(paths.hooks_dir.parent / "network.conf")
    if configured:
        return configured
    if fw.tool_exists("nft") and fw.read_nft().libvirt_table:
        return fw.NFTABLES
    if fw.tool_exists("iptables-save"):
        forward = fw.read_iptables().builtin_rules.get("filter FORWARD", [])
        if any(line.endswith("-j LIBVIRT_FWI") for line in forward):
            return fw.IPTABLES
    return fw.NFTABLES if _libvirt_major() >= 10 and fw.tool_exists("nft") else fw.IPTABLES


def _configured_backend(network_conf: Path) -> str | None:
    try:
        match = _BACKEND_SETTING.search(network_conf.read_text())
    except OSError:
        return None
    if match and match.group(1) in (fw.IPTABLES, fw.NFTABLES):
        return match.group(1)
    return None


def _libvirt_major() -> int:
    try:
        out = subprocess.run(["libvirtd", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    match = re.search(r"(\d+)\.\d+", out)
    return int(match.group(1)) if match else 0


def _check_unique_ids(rules: Sequence[ForwardRule]) -> None:
    ids = [r.forward_id for r in rules]
    if len(ids) != len(set(ids)):
        raise ValueError("each forward may appear once in the list")


# ---- hooks ---------------------------------------------------------------------------------


def hook_text(kind: str, paths: HostPaths) -> str:
    """A hook: the standalone rules module plus one call with this host's paths baked in.
    Run by the system python3 (the venv may be elsewhere; the module needs no packages)."""
    source = Path(fw.__file__).read_text()
    call = (
        f"\n\nif __name__ == '__main__':\n"
        f"    sys.exit(hook_main({kind!r}, sys.argv[1:], rules_file={str(paths.rules_file)!r},"
        f" qemu_state_dir={str(paths.qemu_state_dir)!r},"
        f" network_updates_dir={str(paths.network_updates_dir)!r}))\n"
    )
    return "#!/usr/bin/python3\n# Written by kvmweb's host worker: changes are overwritten.\n" + source + call


def install_hooks(paths: HostPaths) -> HookInstall:
    """Write both hooks if they differ from what is there; then SIGHUP libvirtd, which calls a
    new or changed hook only after a reload. A reload that failed is tried again at the next
    call (`paths.reload_pending`) and makes a warning until it succeeds."""
    changed = False
    for kind in HOOK_KINDS:
        changed |= fw.write_atomically(paths.hook_path(kind), hook_text(kind, paths), mode=0o755)
    if not changed and not paths.reload_pending.exists():
        return HookInstall(False)
    reloads = reload_daemons(paths)
    warnings = _reload_warnings(reloads, NOT_RELOADED)
    if warnings:
        fw.write_atomically(paths.reload_pending, "".join(w + "\n" for w in warnings), mode=0o600)
    else:
        paths.reload_pending.unlink(missing_ok=True)
    return HookInstall(changed, reloads, warnings)


def _reload_warnings(reloads: Sequence[Reload], template: str) -> tuple[str, ...]:
    """A warning when no daemon got the signal, or a pidfile that exists named no daemon that
    could get it (a missing file among several is a daemon that does not run: it reads the
    hooks when it starts)."""
    failed = [r for r in reloads if not r.signalled and (r.pidfile.exists() or not any(x.signalled for x in reloads))]
    if not failed:
        return ()
    why = "; ".join(f"{r.pidfile}: {r.reason}" for r in failed) or "no pidfile"
    return (template.format(why=why),)


def remove_hooks(paths: HostPaths | None = None) -> bool:
    """For uninstalling: the hooks go (libvirtd forgets them at its next reload). True if one was there."""
    paths = paths or HostPaths.from_settings()
    removed = False
    for kind in HOOK_KINDS:
        path = paths.hook_path(kind)
        removed |= path.exists()
        path.unlink(missing_ok=True)
    return removed


def reload_daemons(paths: HostPaths) -> tuple[Reload, ...]:
    """SIGHUP to each daemon of `paths.libvirtd_pidfiles`, or of `paths.fallback_pidfiles` when
    none of those files exists."""
    pidfiles = paths.libvirtd_pidfiles
    if not any(p.exists() for p in pidfiles) and any(p.exists() for p in paths.fallback_pidfiles):
        pidfiles = paths.fallback_pidfiles
    return tuple(reload_libvirtd(pidfile) for pidfile in pidfiles) or (Reload(Path("-"), False, "no pidfile"),)


def reload_libvirtd(pidfile: Path) -> Reload:
    """SIGHUP to the libvirt daemon of the pidfile, if it runs: libvirt reads its hooks directory
    again (and reloads its config, which keeps guests and networks running).

    Only a process that runs as root (real and effective uid 0) from an executable named like a
    libvirt daemon (/proc/PID/exe, which the process cannot change, unlike its comm) gets it:
    a stale pidfile or a reused PID must not make the worker signal something else."""
    try:
        pid = int(pidfile.read_text().split()[0])
        if pid <= 0:
            raise ValueError(f"pid {pid}")
        _check_libvirt_daemon(pid)
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError, IndexError) as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) and exc.filename == str(pidfile) else str(exc)
        logger.warning("libvirtd not reloaded for the new kvmweb hooks (%s): %s", pidfile, reason)
        return Reload(pidfile, False, reason)
    return Reload(pidfile, True)


def _check_libvirt_daemon(pid: int) -> None:
    proc = Path(f"/proc/{pid}")
    exe = os.path.basename(os.readlink(proc / "exe")).removesuffix(" (deleted)")
    if exe not in LIBVIRT_DAEMONS:
        raise ProcessLookupError(f"pid {pid} is not a libvirt daemon ({exe})")
    uids = next(
        (line.split()[1:3] for line in (proc / "status").read_text().splitlines() if line.startswith("Uid:")), []
    )
    if uids != ["0", "0"]:
        raise ProcessLookupError(f"pid {pid} does not run as root (uid {'/'.join(uids) or '?'})")
