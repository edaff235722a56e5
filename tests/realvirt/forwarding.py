"""Running kvmweb's forwarding engine where a host worker would: in the private libvirtd's
network namespace (its firewall) and mount namespace (its /etc/libvirt/hooks, /run/libvirt).

Plain Python without Django, like the other helpers of tests/realvirt."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from networks.forwarding.rules import ForwardRule

REPO = Path(__file__).resolve().parents[2]

# Run as `python -c _ENGINE_CALL` inside the namespaces; the request comes on stdin.
_ENGINE_CALL = """
import json, sys
from pathlib import Path
from networks.forwarding import engine
from networks.forwarding.rules import ForwardRule
request = json.load(sys.stdin)
paths = engine.HostPaths(**{key: tuple(map(Path, value)) if isinstance(value, list) else Path(value)
                            for key, value in request["paths"].items()})
rules = [ForwardRule(**dict(r, source_cidrs=tuple(r["source_cidrs"]))) for r in request["rules"]]
call = engine.forwards_apply if request["action"] == "apply" else engine.forwards_check
report = call(rules, paths=paths)  # which guests run: the engine reads libvirt's status files
print(json.dumps({"states": report.states, "warnings": report.warnings, "backend": engine.firewall_backend(paths)}))
"""


def host_paths(daemon) -> dict[str, str]:
    """Paths as the daemon's mount namespace sees them (a host worker's defaults, except the
    pidfile and the rules file, which live in the scratch directory)."""
    return {
        "hooks_dir": "/etc/libvirt/hooks",
        "libvirtd_pidfiles": [str(daemon.scratch / "pids/libvirtd.pid")],
        "qemu_state_dir": "/run/libvirt/qemu",
        "rules_file": str(daemon.scratch / "kvmweb-data/forwards/rules.json"),
    }


def in_daemon_namespaces(daemon, argv, **kw) -> subprocess.CompletedProcess:
    """argv in libvirtd's network and mount namespaces (virtlogd's: they survive a restart of
    libvirtd)."""
    target = str(daemon.pids["virtlogd"])
    return subprocess.run(
        ["nsenter", "--target", target, "--mount", "--net", f"--wd={REPO}", "--", *argv],
        capture_output=True, text=True, timeout=60, **kw,
    )  # fmt: skip


def run_engine(daemon, action: str, rules: list[ForwardRule]) -> tuple[dict[int, str], str]:
    """forwards_apply or forwards_check there; returns (states by forward id, backend)."""
    request = {"action": action, "rules": [asdict(r) for r in rules], "paths": host_paths(daemon)}
    done = in_daemon_namespaces(daemon, [sys.executable, "-c", _ENGINE_CALL], input=json.dumps(request))
    if done.returncode != 0:
        raise RuntimeError(f"engine {action} failed:\n{done.stderr}")
    answer = json.loads(done.stdout)
    return {int(k): v for k, v in answer["states"].items()}, answer["backend"]


def http_in_daemon(daemon, url: str, timeout: float = 3) -> str | None:
    """The body fetched from inside the daemon's namespaces (as the hypervisor itself), or None."""
    done = in_daemon_namespaces(daemon, [sys.executable, "-c", _GET, url, str(timeout)])
    return done.stdout if done.returncode == 0 else None


def iptables_save(daemon) -> str:
    return in_daemon_namespaces(daemon, ["iptables-save"]).stdout


def http_from(client, url: str, timeout: float = 3) -> str | None:
    """The body, or None when the connection is refused or times out."""
    done = client.run([sys.executable, "-c", _GET, url, str(timeout)], timeout=timeout + 10)
    return done.stdout if done.returncode == 0 else None


_GET = (
    "import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode())"
)


def wait_for(predicate, timeout: float, step: float = 0.1):
    """predicate()'s first true value within `timeout` seconds, else None."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
