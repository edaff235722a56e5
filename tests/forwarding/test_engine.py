"""The engine's files and signals: hooks, the rules file, libvirtd's reload, the backend choice.

Firewall commands run only inside a network namespace each test creates (never the machine's)."""

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from networks.forwarding import engine
from networks.forwarding import rules as fw
from tests.forwarding.test_rules import web


@pytest.fixture
def paths(tmp_path) -> engine.HostPaths:
    (tmp_path / "etc/hooks").mkdir(parents=True)
    (tmp_path / "qemu").mkdir()
    return engine.HostPaths(
        hooks_dir=tmp_path / "etc/hooks",
        libvirtd_pidfiles=(tmp_path / "libvirtd.pid",),
        qemu_state_dir=tmp_path / "qemu",
        rules_file=tmp_path / "data/forwards/rules.json",
    )


@pytest.fixture
def fake_libvirtd(tmp_path, paths):
    """A process whose name is libvirtd (a copy of sleep): SIGHUP ends it, so a test sees
    whether it was sent. Returns a function starting a fresh one; each is killed by PID."""
    binary = tmp_path / "libvirtd"
    shutil.copy("/bin/sleep", binary)
    started = []

    def start() -> subprocess.Popen:
        process = subprocess.Popen([str(binary), "300"])
        started.append(process)
        comm = Path(f"/proc/{process.pid}/comm")
        while comm.read_text().strip() != "libvirtd":  # until the fork has exec'd it
            time.sleep(0.01)
        paths.libvirtd_pidfiles[0].write_text(f"{process.pid}\n")
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def _got_sighup(process: subprocess.Popen) -> bool:
    try:
        return process.wait(timeout=2) == -1  # SIGHUP is signal 1
    except subprocess.TimeoutExpired:
        return False


def test_hooks_are_installed_executable_with_this_hosts_paths_and_libvirtd_is_reloaded(paths, fake_libvirtd):
    libvirtd = fake_libvirtd()
    assert engine.install_hooks(paths)
    for kind in ("qemu", "network"):
        hook = paths.hooks_dir / f"{kind}.d" / "kvmweb"
        assert hook.stat().st_mode & 0o777 == 0o755
        text = hook.read_text()
        assert text.startswith("#!/usr/bin/python3\n")
        assert f"hook_main({kind!r}, sys.argv[1:], rules_file={str(paths.rules_file)!r}" in text
        assert f"qemu_state_dir={str(paths.qemu_state_dir)!r}" in text
        compile(text, str(hook), "exec")
    assert _got_sighup(libvirtd)


def test_unchanged_hooks_are_not_rewritten_and_libvirtd_is_left_alone(paths, fake_libvirtd):
    fake_libvirtd()
    engine.install_hooks(paths)
    libvirtd = fake_libvirtd()
    assert not engine.install_hooks(paths)
    assert not _got_sighup(libvirtd)


def test_a_changed_hook_is_rewritten_and_reloads_libvirtd(paths, fake_libvirtd):
    fake_libvirtd()
    engine.install_hooks(paths)
    paths.hook_path("qemu").write_text("#!/bin/sh\nexit 0\n")
    libvirtd = fake_libvirtd()
    assert engine.install_hooks(paths)
    assert "hook_main('qemu'" in paths.hook_path("qemu").read_text()
    assert _got_sighup(libvirtd)


def test_a_pidfile_naming_another_process_gets_no_signal(paths):
    other = subprocess.Popen(["sleep", "300"])
    try:
        paths.libvirtd_pidfiles[0].write_text(str(other.pid))
        engine.install_hooks(paths)
        assert not _got_sighup(other)
    finally:
        other.kill()
        other.wait()


def test_no_libvirtd_running_is_not_an_error(paths):
    assert engine.install_hooks(paths)  # no pidfile: libvirtd reads the hooks when it starts
    assert paths.hook_path("network").exists()


@pytest.mark.parametrize("configured", ["nftables", "iptables"])
def test_libvirts_configured_firewall_backend_wins(paths, configured):
    (paths.hooks_dir.parent / "network.conf").write_text(
        f'# firewall_backend = "other"\nfirewall_backend = "{configured}"\n'
    )
    assert engine.firewall_backend(paths) == configured


def test_a_forward_may_appear_once(paths):
    with pytest.raises(ValueError):
        engine.forwards_apply([web(), web(guest_port_start=81, guest_port_end=81)], running_guests=set(), paths=paths)


# ---- a hook run as libvirtd runs it, in a namespace of its own -------------------------------


@pytest.fixture
def netns():
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables-save"):
        pytest.skip("needs root, iproute2 and iptables")
    name = f"kvmweb-fwtest-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "delete", name], check=True)


def _in(netns: str, *argv: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], input=stdin, capture_output=True, text=True)


def _saved(netns: str) -> str:
    return _in(netns, "iptables-save").stdout


def test_the_qemu_hook_installs_a_starting_guests_forwards_and_removes_them_when_it_stops(paths, netns):
    engine.install_hooks(paths)
    db = web(forward_id=8, guest_name="db1", host_port_start=5432, host_port_end=5432, guest_port_start=5432,
             guest_port_end=5432)  # fmt: skip
    fw.write_atomically(paths.rules_file, fw.rules_to_json("iptables", [web(), db]))
    hook = str(paths.hook_path("qemu"))
    t0 = time.monotonic()
    done = _in(netns, hook, "web1", "started", "begin", "-", stdin="<domain/>")
    seconds = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    saved = _saved(netns)
    assert '--comment "kvmweb:7"' in saved and "kvmweb:8" not in saved  # db1 does not run
    assert "-A FORWARD -j KVMWEB_FORWARD" in saved
    assert seconds < 2, f"the hook took {seconds:.2f} s"

    assert _in(netns, hook, "web1", "stopped", "end", "-", stdin="<domain/>").returncode == 0
    assert "KVMWEB" not in _saved(netns)


def test_a_hook_that_fails_still_exits_0_so_libvirt_keeps_the_guest(paths, netns):
    engine.install_hooks(paths)
    paths.rules_file.parent.mkdir(parents=True, exist_ok=True)
    paths.rules_file.write_text("{not json")
    done = _in(netns, str(paths.hook_path("qemu")), "web1", "reconnect", "begin", "-")
    assert done.returncode == 0
    assert "kvmweb qemu hook web1 reconnect" in done.stderr


def test_the_hook_needs_nothing_but_the_system_python(paths, netns):
    """libvirtd runs hooks with its own environment: no venv, no Django, no kvmweb on the path."""
    engine.install_hooks(paths)
    fw.write_atomically(paths.rules_file, fw.rules_to_json("iptables", [web()]))
    (paths.qemu_state_dir / "web1.xml").write_text("<domstatus/>")  # libvirt's mark of a running guest
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "/usr/bin/python3", "-I", str(paths.hook_path("network")), "default",
         "started", "begin", "-"],
        env=env, capture_output=True, text=True, cwd="/", input="",
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == ""
    assert '--comment "kvmweb:7"' in _saved(netns)


def test_modular_daemons_each_get_the_reload(tmp_path, settings):
    """virtqemud runs the qemu hooks and virtnetworkd the network hooks: both are named."""
    settings.KVMWEB_LIBVIRT_HOOKS_DIR = str(tmp_path / "hooks")
    settings.KVMWEB_LIBVIRTD_PIDFILE = f"{tmp_path}/virtqemud.pid, {tmp_path}/virtnetworkd.pid"
    daemons = []
    for name in ("virtqemud", "virtnetworkd"):
        shutil.copy("/bin/sleep", tmp_path / name)
        process = subprocess.Popen([str(tmp_path / name), "300"])
        daemons.append(process)
        while Path(f"/proc/{process.pid}/comm").read_text().strip() != name:
            time.sleep(0.01)
        (tmp_path / f"{name}.pid").write_text(str(process.pid))
    try:
        assert engine.install_hooks(engine.HostPaths.from_settings())
        assert all(_got_sighup(process) for process in daemons)
    finally:
        for process in daemons:
            process.kill()
            process.wait()
