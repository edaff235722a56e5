"""Opening libvirt connections: URI checks, one cached connection per URI and process.

The test driver keeps its state per process for as long as a connection is open, so a
long-lived worker process must keep its connection: we cache one per URI and reopen it
only when it is dead. Connections are never shared across processes (Celery prefork).
"""

from __future__ import annotations

import contextlib
import os
import threading
import urllib.parse
from collections.abc import Iterator

import libvirt

from .errors import HostUnreachable, HypervisorError, InvalidUri, NotFound, Unsupported

ALLOWED_DRIVERS = {"qemu", "test"}
ALLOWED_TRANSPORTS = {"", "unix", "ssh", "tls", "tcp", "libssh", "libssh2"}
# Parameters that only choose files, sockets or verification; none of them runs a program.
ALLOWED_PARAMETERS = {
    "socket",
    "keyfile",
    "pkipath",
    "no_verify",
    "no_tty",
    "known_hosts",
    "known_hosts_verify",
    "sshauth",
    "mode",
    "proxy",
    "tls_priority",
}
PROGRAM_PARAMETERS = {"command", "netcat"}
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3

_RETRYABLE_CODES = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
    libvirt.VIR_ERR_AUTH_FAILED,
}
_NOT_FOUND_CODES = {
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_NODE_DEVICE,
}


def validate_uri(uri: str) -> str:
    """Return the URI stripped of blanks, or raise InvalidUri saying what is wrong."""
    uri = (uri or "").strip()
    parsed = urllib.parse.urlsplit(uri)
    driver, _, transport = parsed.scheme.partition("+")
    if driver not in ALLOWED_DRIVERS:
        raise InvalidUri(f"Unsupported libvirt driver {driver!r}: use qemu or test.")
    if transport == "ext":
        raise InvalidUri("The 'ext' transport runs an external program and is not allowed.")
    if transport not in ALLOWED_TRANSPORTS:
        raise InvalidUri(f"Unsupported transport {transport!r}: use ssh, tls, tcp, libssh, libssh2 or unix.")
    if parsed.password is not None:
        raise InvalidUri("Do not put a password in the URI: use SSH keys or TLS certificates.")
    _check_parameters(parsed.query)
    _check_path(driver, parsed.path)
    return uri


def _check_parameters(query: str) -> None:
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidUri("The URI's parameters cannot be parsed.") from None
    for name, _value in pairs:
        if name in PROGRAM_PARAMETERS:
            raise InvalidUri(f"The URI parameter {name!r} makes libvirt run a program and is not allowed.")
        if name not in ALLOWED_PARAMETERS:
            allowed = ", ".join(sorted(ALLOWED_PARAMETERS))
            raise InvalidUri(f"Unknown URI parameter {name!r}; allowed: {allowed}.")


def _check_path(driver: str, path: str) -> None:
    if driver == "qemu" and path not in {"/system", "/session"}:
        raise InvalidUri("A qemu URI must end in /system or /session.")
    if driver == "test" and path != "/default" and not (path.startswith("/") and path.endswith(".xml")):
        raise InvalidUri("A test URI must be test:///default or test:///ABSOLUTE/PATH.xml.")


def redact_uri(uri: str) -> str:
    """The URI without any user information, for pages and logs."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.username is None and parsed.password is None:
        return uri
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc = f"{netloc}:{parsed.port}"
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


def wrap_libvirt_error(error: libvirt.libvirtError) -> HypervisorError:
    """Translate a libvirt error into ours, keeping libvirt's message."""
    code = error.get_error_code()
    message = error.get_error_message() or str(error)
    if code in _NOT_FOUND_CODES:
        return NotFound(message, code=code)
    if code == libvirt.VIR_ERR_NO_SUPPORT:
        return Unsupported(message, code=code)
    if code in _RETRYABLE_CODES:
        return HostUnreachable(message, code=code)
    return HypervisorError(message, code=code)


@contextlib.contextmanager
def libvirt_errors() -> Iterator[None]:
    """Turn any libvirt error raised inside the block into a HypervisorError."""
    try:
        yield
    except libvirt.libvirtError as error:
        raise wrap_libvirt_error(error) from error


_cache: dict[str, libvirt.virConnect] = {}
_cache_pid = os.getpid()
_cache_lock = threading.Lock()


def _silence_default_error_handler() -> None:
    # libvirt prints every error to stderr by default; we report them ourselves.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def connect(uri: str) -> libvirt.virConnect:
    """An open connection to `uri`, reused within this process while it is alive."""
    global _cache_pid
    uri = validate_uri(uri)
    with _cache_lock:
        if _cache_pid != os.getpid():
            _cache.clear()  # inherited from a parent process: never reuse
            _cache_pid = os.getpid()
        conn = _cache.get(uri)
        if conn is not None and _is_alive(conn):
            return conn
        conn = _open(uri)
        _cache[uri] = conn
        return conn


def _is_alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _open(uri: str) -> libvirt.virConnect:
    _silence_default_error_handler()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as error:
        message = error.get_error_message() or str(error)
        raise HostUnreachable(f"Cannot connect to {redact_uri(uri)}: {message}") from error
    # Detects dead remote hosts; local drivers do not support keepalive and refuse it.
    with contextlib.suppress(libvirt.libvirtError):
        conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
    return conn


def disconnect(uri: str) -> None:
    """Close and forget this process's connection to `uri` (test drivers lose their state)."""
    with _cache_lock:
        conn = _cache.pop(uri, None)
    if conn is not None:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()
