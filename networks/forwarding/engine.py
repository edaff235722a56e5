"""Port forwards on this hypervisor, for the host worker (root, in the host's namespaces).

The run functions of the port-forward operations compute the full list of the host's forwards
(from the mirror and libvirt) and call `forwards_apply`; nothing here reads the database or
calls libvirt. Settings (deployer's, not user input):

- KVMWEB_LIBVIRT_HOOKS_DIR (default /etc/libvirt/hooks): where `qemu.d/kvmweb` and
  `network.d/kvmweb` go; libvirt's `network.conf` is read from its parent directory.
- KVMWEB_LIBVIRTD_PIDFILE (default /run/libvirtd.pid): libvirtd gets SIGHUP when a hook was
  installed or changed, since it only notices new hooks then. With libvirt's modular daemons,
  name both that read hooks, comma-separated: /run/virtqemud.pid,/run/virtnetworkd.pid.
- KVMWEB_LIBVIRT_QEMU_STATE_DIR (default /run/libvirt/qemu): where the hooks see which guests
  run (libvirt's status files), without calling libvirt.
- KVMWEB_FORWARD_RULES_FILE (default DATA_DIR/forwards/rules.json): the rules the hooks read.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from networks.forwarding import rules as fw
from networks.forwarding.rules import ForwardRule

logger = logging.getLogger(__name__)

HOOK_KINDS = ("qemu", "network")
# The daemons that run hooks: the monolithic one, or the modular ones of the qemu and network
# drivers. A pidfile naming any other process (a stale file, a reused PID) gets no signal.
LIBVIRT_DAEMONS = {"libvirtd", "virtqemud", "virtnetworkd"}
_BACKEND_SETTING = re.compile(r'^\s*firewall_backend\s*=\s*"(\w+)"', re.MULTILINE)


@dataclass(frozen=True)
class HostPaths:
    hooks_dir: Path
    libvirtd_pidfiles: tuple[Path, ...]
    qemu_state_dir: Path
    rules_file: Path

    @classmethod
    def from_settings(cls) -> HostPaths:
        return cls(
            hooks_dir=Path(settings.KVMWEB_LIBVIRT_HOOKS_DIR),
            libvirtd_pidfiles=tuple(Path(p.strip()) for p in settings.KVMWEB_LIBVIRTD_PIDFILE.split(",") if p.strip()),
            qemu_state_dir=Path(settings.KVMWEB_LIBVIRT_QEMU_STATE_DIR),
            rules_file=Path(settings.KVMWEB_FORWARD_RULES_FILE),
        )

    def hook_path(self, kind: str) -> Path:
        return self.hooks_dir / f"{kind}.d" / "kvmweb"


def forwards_apply(
    rules: Sequence[ForwardRule], *, running_guests: set[str], paths: HostPaths | None = None
) -> dict[int, str]:
    """Make the host hold exactly the rules of `rules` whose guest runs (and nothing of forwards
    not listed), write the rules file the hooks read, install/refresh the hooks (making libvirtd
    load a newly installed hook). Returns forward_id -> ForwardState value ("present",
    "guest_stopped", "missing" if verification failed).

    `rules` is every enabled forward of this host with a known guest address: the hooks re-apply
    the whole file whenever a guest starts or stops, so a stopped guest's forward belongs in it
    too (it applies at the guest's next start). Raises fw.FirewallError when a firewall command
    fails (its first line of output in the message) and OSError when a file cannot be written.
    """
    paths = paths or HostPaths.from_settings()
    _check_unique_ids(rules)
    backend = firewall_backend(paths)
    with fw.rules_lock(paths.rules_file):
        fw.write_atomically(paths.rules_file, fw.rules_to_json(backend, rules), mode=0o600)
        fw.replace_rules(backend, [r for r in rules if r.guest_name in running_guests])
        fw.remove_other_backend(backend)
    install_hooks(paths)
    return fw.states(backend, rules, running_guests)


def forwards_check(
    rules: Sequence[ForwardRule], *, running_guests: set[str], paths: HostPaths | None = None
) -> dict[int, str]:
    """The same answer without changing anything (for the live state and after a restart)."""
    paths = paths or HostPaths.from_settings()
    return fw.states(firewall_backend(paths), rules, running_guests)


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
        f" qemu_state_dir={str(paths.qemu_state_dir)!r}))\n"
    )
    return "#!/usr/bin/python3\n# Written by kvmweb's host worker: changes are overwritten.\n" + source + call


def install_hooks(paths: HostPaths) -> bool:
    """Write both hooks if they differ from what is there; then SIGHUP libvirtd, which calls a
    new or changed hook only after a reload. Returns True if a hook changed."""
    changed = False
    for kind in HOOK_KINDS:
        changed |= fw.write_atomically(paths.hook_path(kind), hook_text(kind, paths), mode=0o755)
    if changed:
        for pidfile in paths.libvirtd_pidfiles:
            reload_libvirtd(pidfile)
    return changed


def remove_hooks(paths: HostPaths | None = None) -> None:
    """For uninstalling: the hooks go (libvirtd forgets them at its next reload)."""
    paths = paths or HostPaths.from_settings()
    for kind in HOOK_KINDS:
        paths.hook_path(kind).unlink(missing_ok=True)


def reload_libvirtd(pidfile: Path) -> None:
    """SIGHUP to the libvirtd of the pidfile, if it runs: libvirt reads its hooks directory again
    (and reloads its config, which keeps guests and networks running)."""
    try:
        pid = int(pidfile.read_text().split()[0])
        if Path(f"/proc/{pid}/comm").read_text().strip() not in LIBVIRT_DAEMONS:
            raise ProcessLookupError(f"pid {pid} is not a libvirt daemon")
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError, IndexError) as exc:
        # libvirtd not running: it reads the hooks when it starts.
        logger.warning("libvirtd not reloaded for the new kvmweb hooks (%s): %s", pidfile, exc)
