"""Fixtures for tests against a real, private libvirtd and tiny real guests.

No Django here: these fixtures must work with `-p no:django` and under a
Django test suite alike.

    guest_image        (session) GuestImage(kernel, initrd), built or cached
    private_libvirtd   (session) a started PrivateLibvirtd; stopped at the end
    private_conn       (function) libvirt connection to it; on teardown every
                       domain and network is destroyed and undefined
    guest_log_dir      (function) a directory for serial logs of this test
    new_private_libvirtd (function) factory: new_private_libvirtd() starts a
                       fresh PrivateLibvirtd of the test's own; all stopped
                       at the end of the test

Everything is skipped (not failed) when the machine cannot host the daemon:
not root, no `ip netns`, no libvirtd/qemu, no /dev/net/tun.
Env: KVMWEB_GUEST_CACHE (image cache dir, default <repo>/var/guest-image),
KVMWEB_LIBVIRT_CAPS_CACHE (QEMU capability cache, default <repo>/var/libvirt-caps),
KVMWEB_LIBVIRTD_TMPDIR (where scratch dirs go, default the temp dir).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Relative imports: tests/realvirt is a package so that its module names
# (guests, libvirtd) never shadow the project's top-level modules.
from .guests import GuestImage
from .libvirtd import PrivateLibvirtd, sweep_stale

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-guest-image.sh"


def pytest_configure(config):
    # Harmless if the project's pytest config registers it too.
    config.addinivalue_line("markers", "realvirt: needs root and a private real libvirtd")


def _why_unusable() -> str | None:
    """Reason this machine can't run a private libvirtd, or None."""
    if os.geteuid() != 0:
        return "real-libvirtd tests need root (network namespaces, bind mounts)"
    for tool in ("ip", "unshare", "nsenter", "libvirtd", "virtlogd", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return f"{tool} not found (need iproute2, util-linux, libvirt-daemon-system, qemu-system-x86)"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "`ip netns` is unavailable"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (guests need tap devices)"
    return None


@pytest.fixture(scope="session")
def realvirt_available():
    reason = _why_unusable()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def guest_image(realvirt_available) -> GuestImage:
    """Kernel + initramfs of the test guest (built once, cached across runs)."""
    cache = Path(os.environ.get("KVMWEB_GUEST_CACHE") or REPO / "var" / "guest-image")
    res = subprocess.run(["bash", str(BUILD_SCRIPT), str(cache)], capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        pytest.fail(f"guest image build failed:\n{res.stderr}", pytrace=False)
    return GuestImage.from_dir(cache)


def _new_daemon() -> PrivateLibvirtd:
    caps = os.environ.get("KVMWEB_LIBVIRT_CAPS_CACHE") or REPO / "var" / "libvirt-caps"
    return PrivateLibvirtd(caps_cache=caps)


@pytest.fixture(scope="session")
def _swept(realvirt_available):
    """Once per session: remove namespaces/scratch dirs of dead test runs."""
    sweep_stale(os.environ.get("KVMWEB_LIBVIRTD_TMPDIR"))


@pytest.fixture(scope="session")
def private_libvirtd(_swept):
    """A started PrivateLibvirtd (attributes: uri, netns, scratch, pids)."""
    lvd = _new_daemon()
    lvd.start()  # cleans up after itself if it fails
    try:
        yield lvd
    finally:
        lvd.stop()


@pytest.fixture
def new_private_libvirtd(_swept):
    """Factory for tests that need a daemon of their own (e.g. to kill it)."""
    started = []

    def make() -> PrivateLibvirtd:
        lvd = _new_daemon()
        started.append(lvd)
        return lvd.start()

    yield make
    errors = []
    for lvd in started:
        try:
            lvd.stop()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def private_conn(private_libvirtd):
    """A connection to the private daemon; leaves the daemon empty after the
    test (no domains, networks or client namespaces) so tests don't see each
    other's."""
    conn = private_libvirtd.connect()
    try:
        yield conn
    finally:
        conn.close()
        private_libvirtd.reset()
        private_libvirtd.remove_clients()


@pytest.fixture
def guest_log_dir(private_libvirtd, request) -> Path:
    """Per-test directory (inside the daemon's scratch dir) for serial logs."""
    d = private_libvirtd.scratch / "guests" / request.node.name.replace("/", "_")[:60]
    d.mkdir(parents=True, exist_ok=True)
    return d
