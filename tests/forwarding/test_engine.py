"""The engine's files and signals: hooks, the rules file, libvirtd's reload, the backend choice.

Firewall commands run only inside a network namespace each test creates (never the machine's)."""

import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
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
    installed = engine.install_hooks(paths)
    assert installed.changed and installed.warnings == ()
    assert installed.reloads == (engine.Reload(paths.libvirtd_pidfiles[0], True),)
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
    assert engine.install_hooks(paths) == engine.HookInstall(False)
    assert not _got_sighup(libvirtd)


def test_a_changed_hook_is_rewritten_and_reloads_libvirtd(paths, fake_libvirtd):
    fake_libvirtd()
    engine.install_hooks(paths)
    paths.hook_path("qemu").write_text("#!/bin/sh\nexit 0\n")
    libvirtd = fake_libvirtd()
    assert engine.install_hooks(paths).changed
    assert "hook_main('qemu'" in paths.hook_path("qemu").read_text()
    assert _got_sighup(libvirtd)


def test_a_pidfile_naming_another_process_gets_no_signal(paths):
    other = subprocess.Popen(["sleep", "300"])
    try:
        paths.libvirtd_pidfiles[0].write_text(str(other.pid))
        installed = engine.install_hooks(paths)
        assert not _got_sighup(other)
        assert installed.warnings == (
            f"hooks installed but libvirtd not reloaded ({paths.libvirtd_pidfiles[0]}: pid {other.pid} is not a "
            "libvirt daemon (sleep)): the next guest start will not re-apply the forwards; send SIGHUP to "
            "libvirtd or virtqemud/virtnetworkd",
        )
    finally:
        other.kill()
        other.wait()


@pytest.fixture
def world_readable_dir():
    """A directory another user can run programs from (pytest's tmp_path is root's only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a process as another user")
    path = Path(tempfile.mkdtemp(prefix="kvmweb-fwtest-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_a_process_named_libvirtd_that_does_not_run_as_root_gets_no_signal(paths, world_readable_dir):
    """Anyone can name a program libvirtd and write its PID where a stale pidfile was."""
    binary = world_readable_dir / "libvirtd"
    shutil.copy("/bin/sleep", binary)
    binary.chmod(0o755)
    impostor = subprocess.Popen([str(binary), "300"], user=65534, group=65534)
    try:
        while Path(f"/proc/{impostor.pid}/comm").read_text().strip() != "libvirtd":
            time.sleep(0.01)
        paths.libvirtd_pidfiles[0].write_text(f"{impostor.pid}\n")
        installed = engine.install_hooks(paths)
        assert not _got_sighup(impostor)
        assert "does not run as root (uid 65534/65534)" in installed.warnings[0]
    finally:
        impostor.kill()
        impostor.wait()


def test_a_root_process_that_only_calls_itself_libvirtd_gets_no_signal(paths):
    """/proc/PID/comm is the process's own choice; /proc/PID/exe is not."""
    renamed = subprocess.Popen(
        [sys.executable, "-c", "import ctypes, time; ctypes.CDLL(None).prctl(15, b'libvirtd'); time.sleep(300)"]
    )
    try:
        while Path(f"/proc/{renamed.pid}/comm").read_text().strip() != "libvirtd":
            time.sleep(0.01)
        paths.libvirtd_pidfiles[0].write_text(str(renamed.pid))
        installed = engine.install_hooks(paths)
        assert not _got_sighup(renamed)
        assert "is not a libvirt daemon (python" in installed.warnings[0]
    finally:
        renamed.kill()
        renamed.wait()


def test_no_libvirtd_found_is_a_warning_and_the_reload_is_tried_again_next_time(paths, fake_libvirtd):
    installed = engine.install_hooks(paths)  # no pidfile: hooks written, nobody told
    assert installed.changed and paths.hook_path("network").exists()
    assert installed.warnings == (
        f"hooks installed but libvirtd not reloaded ({paths.libvirtd_pidfiles[0]}: no such file): the next guest "
        "start will not re-apply the forwards; send SIGHUP to libvirtd or virtqemud/virtnetworkd",
    )
    libvirtd = fake_libvirtd()
    again = engine.install_hooks(paths)  # hooks unchanged, but the reload is still owed
    assert (again.changed, again.warnings) == (False, ())
    assert _got_sighup(libvirtd)
    assert engine.install_hooks(paths) == engine.HookInstall(False)  # and then no more


def test_the_modular_daemons_pidfiles_are_tried_when_the_configured_one_does_not_exist(paths, tmp_path):
    """Modular-daemon distributions have no /run/libvirtd.pid (the default setting)."""
    modular = []
    for name in ("virtqemud", "virtnetworkd"):
        shutil.copy("/bin/sleep", tmp_path / name)
        process = subprocess.Popen([str(tmp_path / name), "300"])
        modular.append(process)
        while Path(f"/proc/{process.pid}/comm").read_text().strip() != name:
            time.sleep(0.01)
        (tmp_path / f"{name}.pid").write_text(str(process.pid))
    fallback = (tmp_path / "virtqemud.pid", tmp_path / "virtnetworkd.pid")
    try:
        installed = engine.install_hooks(engine.HostPaths(**{**paths.__dict__, "fallback_pidfiles": fallback}))
        assert installed.warnings == ()
        assert all(_got_sighup(process) for process in modular)
    finally:
        for process in modular:
            process.kill()
            process.wait()


def test_the_defaults_fall_back_to_the_modular_daemons(settings):
    settings.KVMWEB_LIBVIRTD_PIDFILE = "/run/libvirtd.pid"
    assert engine.HostPaths.from_settings().fallback_pidfiles == (
        Path("/run/virtqemud.pid"),
        Path("/run/virtnetworkd.pid"),
    )


def test_a_pidfile_named_in_the_settings_is_the_only_one_signalled(settings, tmp_path):
    """A deployer (or the test suite) that names a pidfile never gets the machine's modular
    daemons signalled instead when that file is missing."""
    settings.KVMWEB_LIBVIRTD_PIDFILE = str(tmp_path / "libvirtd.pid")
    paths = engine.HostPaths.from_settings()
    assert paths.libvirtd_pidfiles == (tmp_path / "libvirtd.pid",)
    assert paths.fallback_pidfiles == ()


@pytest.mark.parametrize("configured", ["nftables", "iptables"])
def test_libvirts_configured_firewall_backend_wins(paths, configured):
    (paths.hooks_dir.parent / "network.conf").write_text(
        f'# firewall_backend = "other"\nfirewall_backend = "{configured}"\n'
    )
    assert engine.firewall_backend(paths) == configured


def test_a_forward_may_appear_once(paths):
    with pytest.raises(ValueError):
        engine.forwards_apply([web(), web(guest_port_start=81, guest_port_end=81)], paths=paths)


def test_the_apply_report_is_still_the_dict_of_states():
    report = engine.ApplyReport({7: "present"}, ["a warning"])
    assert report == {7: "present"} and report[7] == "present" and {**report} == {7: "present"}
    assert (report.states, report.warnings) == ({7: "present"}, ["a warning"])


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


# ---- the engine as the host worker runs it, in a namespace of its own ------------------------

REPO = Path(__file__).resolve().parents[2]

# Run inside the namespace: forwards_apply / forwards_check / remove_everything with the paths of
# the test; prints the states and warnings.
ENGINE = """
import json, sys
from pathlib import Path
from networks.forwarding import engine
from tests.forwarding.test_rules import web
request = json.loads(sys.argv[1])
paths = engine.HostPaths(**{k: tuple(map(Path, v)) if isinstance(v, list) else Path(v)
                            for k, v in request["paths"].items()})
rules = [web(**r) for r in request["rules"]]
if request["action"] == "remove":
    print(json.dumps({"states": {}, "warnings": list(engine.remove_everything(paths).warnings)}))
    sys.exit()
call = engine.forwards_apply if request["action"] == "apply" else engine.forwards_check
report = call(rules, paths=paths, **request["kwargs"])
print(json.dumps({"states": report.states, "warnings": report.warnings}))
"""


def _engine(netns: str, paths: engine.HostPaths, action: str, rules: list[dict], **kwargs) -> tuple[dict, list]:
    request = {"action": action, "rules": rules, "kwargs": kwargs,
               "paths": {k: [str(p) for p in v] if isinstance(v, tuple) else str(v)
                         for k, v in paths.__dict__.items()}}  # fmt: skip
    argv = ["ip", "netns", "exec", netns, sys.executable, "-c", ENGINE, json.dumps(request)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    return {int(k): v for k, v in answer["states"].items()}, answer["warnings"]


@pytest.fixture
def iptables_host(paths):
    """The paths, with libvirt's network.conf saying iptables (no detection needed)."""
    (paths.hooks_dir.parent / "network.conf").write_text('firewall_backend = "iptables"\n')
    return paths


DB = {"forward_id": 8, "guest_name": "db1", "host_port_start": 5432, "host_port_end": 5432,
      "guest_port_start": 5432, "guest_port_end": 5432}  # fmt: skip


def test_which_guests_run_is_read_from_libvirts_status_files_like_the_hooks_do(iptables_host, netns):
    """The engine asks no caller which guests run (an answer read from libvirt before the lock
    may be stale): web1 has a status file, db1 none, whatever the worker thought."""
    paths = iptables_host
    (paths.qemu_state_dir / "web1.xml").write_text("<domstatus/>")
    states, warnings = _engine(netns, paths, "apply", [{}, DB])
    assert states == {7: "present", 8: "guest_stopped"}
    saved = _saved(netns)
    assert '--comment "kvmweb:7"' in saved and "kvmweb:8" not in saved
    assert _engine(netns, paths, "check", [{}, DB])[0] == {7: "present", 8: "guest_stopped"}


def test_the_worker_waits_for_a_hook_holding_the_lock_and_then_reads_the_guests_afresh(iptables_host, netns):
    paths = iptables_host
    lock_path = paths.rules_file.with_name(paths.rules_file.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a hook of a starting guest is at work
        request = {"action": "apply", "rules": [{}], "kwargs": {},
                   "paths": {k: [str(p) for p in v] if isinstance(v, tuple) else str(v)
                             for k, v in paths.__dict__.items()}}  # fmt: skip
        worker = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", ENGINE, json.dumps(request)],
                                  stdout=subprocess.PIPE, text=True, cwd=REPO,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
        time.sleep(1.5)
        assert worker.poll() is None  # waiting for the lock
        (paths.qemu_state_dir / "web1.xml").write_text("<domstatus/>")  # libvirt's record of the start
    out, _ = worker.communicate(timeout=60)
    assert json.loads(out)["states"] == {"7": "present"}


def test_a_missing_state_directory_is_a_warning(iptables_host, netns):
    paths = engine.HostPaths(**{**iptables_host.__dict__, "qemu_state_dir": iptables_host.qemu_state_dir / "none"})
    states, warnings = _engine(netns, paths, "apply", [{}])
    assert states == {7: "guest_stopped"}
    assert any("state directory" in w and "KVMWEB_LIBVIRT_QEMU_STATE_DIR" in w for w in warnings)


def test_the_apply_reports_that_libvirtd_was_not_reloaded(iptables_host, netns):
    _states, warnings = _engine(netns, iptables_host, "apply", [{}])
    assert warnings == [
        f"hooks installed but libvirtd not reloaded ({iptables_host.libvirtd_pidfiles[0]}: no such file): the "
        "next guest start will not re-apply the forwards; send SIGHUP to libvirtd or virtqemud/virtnetworkd"
    ]


def test_a_hook_gives_up_on_a_held_lock_within_its_bound_and_exits_0(paths, capsys):
    """libvirtd waits for its hooks: a stuck writer must not hold a guest's start for ever."""
    paths.rules_file.parent.mkdir(parents=True)
    paths.rules_file.write_text(fw.rules_to_json("iptables", [web()]))
    with open(paths.rules_file.with_name("rules.json.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        t0 = time.monotonic()
        code = fw.hook_main("qemu", ["web1", "started", "begin", "-"], rules_file=str(paths.rules_file),
                            qemu_state_dir=str(paths.qemu_state_dir), lock_timeout=0.5)  # fmt: skip
        seconds = time.monotonic() - t0
    assert code == 0 and 0.5 <= seconds < 2, seconds
    assert "kvmweb qemu hook web1 started: the rules lock stayed held for 0.5 s" in capsys.readouterr().err


def test_the_installed_hook_waits_20_s_at_most(paths):
    """The hook as libvirtd runs it, with the lock held by someone else: back with exit 0 after
    the bound (without one it would wait for ever; the timeout here turns that into a failure)."""
    engine.install_hooks(paths)
    paths.rules_file.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.rules_file.with_name("rules.json.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        t0 = time.monotonic()
        done = subprocess.run([str(paths.hook_path("qemu")), "web1", "stopped", "end", "-"], input="",
                              capture_output=True, text=True, timeout=40)  # fmt: skip
        seconds = time.monotonic() - t0
    assert done.returncode == 0
    assert fw.HOOK_LOCK_TIMEOUT == 20 and 20 <= seconds < 25, seconds
    assert "the rules lock stayed held for 20 s" in done.stderr


def test_removing_everything_leaves_no_rule_no_hook_no_rules_file(iptables_host, netns, fake_libvirtd):
    paths = iptables_host
    (paths.qemu_state_dir / "web1.xml").write_text("<domstatus/>")
    fake_libvirtd()
    assert _engine(netns, paths, "apply", [{}])[0] == {7: "present"}
    assert "KVMWEB" in _saved(netns)
    libvirtd = fake_libvirtd()
    assert _engine(netns, paths, "remove", []) == ({}, [])
    assert "KVMWEB" not in _saved(netns) and "kvmweb" not in _saved(netns)
    assert not paths.hook_path("qemu").exists() and not paths.hook_path("network").exists()
    assert not paths.rules_file.exists()
    assert _got_sighup(libvirtd)  # so that it forgets the hooks


def test_the_forwardhooks_command_removes_everything(iptables_host, netns, fake_libvirtd):
    """`manage.py forwardhooks --remove`, run where the host worker runs (here: in the namespace)."""
    paths = iptables_host
    (paths.qemu_state_dir / "web1.xml").write_text("<domstatus/>")
    fake_libvirtd()
    _engine(netns, paths, "apply", [{}])
    libvirtd = fake_libvirtd()
    # The production settings: the test settings point every host-side path into their scratch dir.
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "kvmweb.settings", "PYTHONPATH": str(REPO),
           "KVMWEB_LIBVIRT_HOOKS_DIR": str(paths.hooks_dir), "KVMWEB_FORWARD_RULES_FILE": str(paths.rules_file),
           "KVMWEB_LIBVIRTD_PIDFILE": str(paths.libvirtd_pidfiles[0]),
           "KVMWEB_LIBVIRT_QEMU_STATE_DIR": str(paths.qemu_state_dir)}  # fmt: skip
    shown = _in_env(netns, env, "forwardhooks")
    assert f"{paths.hook_path('qemu')}: present" in shown.stdout
    done = _in_env(netns, env, "forwardhooks", "--remove")
    assert done.returncode == 0, done.stderr
    assert "hooks removed" in done.stdout
    assert "KVMWEB" not in _saved(netns)
    assert not paths.hook_path("qemu").exists() and not paths.rules_file.exists()
    assert _got_sighup(libvirtd)


def _in_env(netns: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "manage.py", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
