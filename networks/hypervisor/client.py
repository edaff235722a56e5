"""Opening libvirt connections: URI checks, one cached connection per URI and process.

The test driver keeps its state per process for as long as a connection is open, so a
long-lived worker process must keep its connection: we cache one per URI and reopen it
only when it is dead. Connections are never shared across processes (Celery prefork).

No call may hold a worker thread forever (Celery's time limits do not apply to its thread
pool): opening a connection is bounded by `call_timeout`, and every open remote connection
runs libvirt keepalive, which closes it when the host stops answering for about that long,
so the call in progress fails with a retryable HostUnreachable. Keepalive needs libvirt's
event loop, which this module registers and runs in a daemon thread before any open.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path

import libvirt

from .errors import HostUnreachable, HypervisorError, InvalidUri, NotFound, Unsupported, brief_message

ALLOWED_DRIVERS = {"qemu", "test"}
# tcp is refused: libvirt's tcp transport is unencrypted and, without SASL, unauthenticated.
REMOTE_TRANSPORTS = {"ssh", "tls", "libssh", "libssh2"}
ALLOWED_TRANSPORTS = {"", "unix", *REMOTE_TRANSPORTS}
# Parameters that name a file, directory or socket: each must lie under an allowed directory.
PATH_PARAMETERS = {"socket", "keyfile", "pkipath", "known_hosts"}
# Parameters that take one of a few words; none of them runs a program on this machine.
CHOICE_PARAMETERS = {
    "no_verify": {"0", "1"},
    "no_tty": {"0", "1"},
    "known_hosts_verify": {"normal", "auto", "ignore"},
    "mode": {"auto", "legacy", "direct"},
    "proxy": {"auto", "netcat", "native"},
}
SSH_AUTH_METHODS = {"agent", "privkey", "password", "keyboard-interactive"}
ALLOWED_PARAMETERS = PATH_PARAMETERS | set(CHOICE_PARAMETERS) | {"sshauth", "tls_priority"}
PROGRAM_PARAMETERS = {"command", "netcat"}
# The defaults of the KVMWEB_TEST_DRIVER_DIRS and KVMWEB_URI_PATHS_ALLOWED settings; the
# services always pass the configured values.
DEFAULT_TEST_DRIVER_DIRS = (str(Path(__file__).resolve().parents[2] / "demo"),)
DEFAULT_URI_PATHS_ALLOWED = ("/run/libvirt", "/var/run/libvirt", "/etc/kvmweb")
MAX_URI_LENGTH = 500
# RFC 3986 characters; anything else (blanks, quotes, backslashes, non-ASCII) must be %-encoded.
_URI_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_AUTHORITY = re.compile(
    r"(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9._-]*)@)?"
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_TLS_PRIORITY = re.compile(r"[A-Za-z0-9:+!%._@-]{1,200}")
# The default of KVMWEB_HOST_CALL_TIMEOUT: the services pass the configured value.
DEFAULT_CALL_TIMEOUT_S = 30
# libvirt closes a connection after interval x (count + 1) seconds without an answer.
KEEPALIVE_COUNT = 3

# Errors that say the host could not be reached or the connection broke: trying again later
# may help. Authentication refusals and errors about the request itself never do.
_RETRYABLE_CODES = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
}
# A system error is a connection failure (refused, reset, no route) when the RPC layer reports
# it; from elsewhere (a file, a device) it is about the request and permanent.
_CONNECTION_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}
_NOT_FOUND_CODES = {
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_NODE_DEVICE,
}


def validate_uri(
    uri: str,
    *,
    test_driver_dirs: Sequence[str] = DEFAULT_TEST_DRIVER_DIRS,
    uri_paths_allowed: Sequence[str] = DEFAULT_URI_PATHS_ALLOWED,
) -> str:
    """Return the URI stripped of blanks, or raise InvalidUri saying what is wrong.

    Every part is checked as libvirt will read it, after percent-decoding. A test-driver
    file must lie under one of `test_driver_dirs`; a file, directory or socket named by a
    parameter under one of `uri_paths_allowed` (symlinks resolved).
    """
    if not isinstance(uri, str):
        raise InvalidUri("The URI must be a string.")
    uri = uri.strip()
    _check_characters(uri)
    try:
        parsed = urllib.parse.urlsplit(uri)
    except ValueError:  # e.g. brackets that hold no IPv6 address
        raise InvalidUri("The URI cannot be parsed; check the host part.") from None
    driver, transport = _check_scheme(uri, parsed)
    if driver == "test":
        if "?" in uri:
            raise InvalidUri("A test URI takes no parameters.")
        _check_test_uri(parsed, transport, test_driver_dirs)
    else:
        _check_authority(parsed, transport)
        _check_qemu_path(parsed.path)
        _check_parameters(parsed.query, uri_paths_allowed)
    return uri


def _check_scheme(uri: str, parsed: urllib.parse.SplitResult) -> tuple[str, str]:
    """(driver, transport) of an allowed scheme written as libvirt expects it."""
    driver, _, transport = parsed.scheme.partition("+")
    if driver not in ALLOWED_DRIVERS:
        raise InvalidUri(f"Unsupported libvirt driver {_shown(driver)}: use qemu or test.")
    if transport == "ext":
        raise InvalidUri("The 'ext' transport runs an external program and is not allowed.")
    if transport == "tcp":
        raise InvalidUri("The 'tcp' transport is unencrypted and unauthenticated: use ssh or tls.")
    if transport not in ALLOWED_TRANSPORTS:
        raise InvalidUri(f"Unsupported transport {_shown(transport)}: use ssh, tls, libssh, libssh2 or unix.")
    if not uri.startswith(f"{parsed.scheme}://"):
        raise InvalidUri("A URI must start with driver[+transport]:// in lower case, e.g. qemu+ssh://.")
    if parsed.fragment or "#" in uri:
        raise InvalidUri("A libvirt URI has no #fragment.")
    return driver, transport


def _shown(value: str, limit: int = 60) -> str:
    """`value` quoted for an error message, shortened so huge input is not echoed back."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _check_characters(uri: str) -> None:
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidUri(f"The URI is longer than {MAX_URI_LENGTH} characters.")
    if not _URI_CHARACTERS.fullmatch(uri):
        raise InvalidUri("The URI contains blanks, control or non-ASCII characters: percent-encode them.")
    if _BAD_PERCENT.search(uri):
        raise InvalidUri("The URI contains a '%' that is not followed by two hex digits.")
    # libvirt decodes %XX everywhere: a %00 would cut a path short inside libvirt.
    if not urllib.parse.unquote(uri, errors="replace").isprintable():
        raise InvalidUri("The URI contains an encoded control or invisible character (such as %00).")


def _decoded(text: str) -> str:
    try:
        return urllib.parse.unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise InvalidUri("The URI contains percent-encoded bytes that are not UTF-8.") from None


def _check_authority(parsed: urllib.parse.SplitResult, transport: str) -> None:
    if parsed.password is not None:
        raise InvalidUri("Do not put a password in the URI: use SSH keys or TLS certificates.")
    if not parsed.netloc:
        if transport in REMOTE_TRANSPORTS:
            raise InvalidUri(f"A qemu+{transport} URI needs a host: qemu+{transport}://HOST/system.")
        return
    if transport == "unix":
        raise InvalidUri("A qemu+unix URI names no host: use qemu+unix:///system.")
    match = _AUTHORITY.fullmatch(parsed.netloc)
    if match is None:
        raise InvalidUri("The host part must read [user@]host[:port] with a DNS name or an IP address.")
    if match["host"].startswith("["):
        _check_ipv6(match["host"][1:-1])
    if match["port"] is not None and not 1 <= int(match["port"]) <= 65535:
        raise InvalidUri("The port must be a number from 1 to 65535.")


def _check_ipv6(address: str) -> None:
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        raise InvalidUri("The address in brackets is not an IPv6 address.") from None


def _check_qemu_path(path: str) -> None:
    # Compared undecoded: libvirt needs nothing else, so no encoded form is accepted.
    if path not in {"/system", "/session"}:
        raise InvalidUri("A qemu URI must end in /system or /session.")


def _check_test_uri(parsed: urllib.parse.SplitResult, transport: str, test_driver_dirs: Sequence[str]) -> None:
    if transport or parsed.netloc:
        raise InvalidUri("A test URI is local: test:///default or test:///ABSOLUTE/PATH.xml.")
    if parsed.path == "/default":
        return
    path = _decoded(parsed.path)
    if not (path.startswith("/") and path.endswith(".xml")):
        raise InvalidUri("A test URI must be test:///default or test:///ABSOLUTE/PATH.xml.")
    _check_no_dot_dot(path)
    real = os.path.realpath(path)
    if not real.endswith(".xml") or not _lies_under(path, real, test_driver_dirs):
        raise InvalidUri(
            "A test-driver file must lie under a directory of KVMWEB_TEST_DRIVER_DIRS: "
            f"{_directories(test_driver_dirs)}."
        )


def _check_parameters(query: str, uri_paths_allowed: Sequence[str]) -> None:
    seen = set()
    for name, value in _parameters(query):
        if name in PROGRAM_PARAMETERS:
            raise InvalidUri(f"The URI parameter {name!r} makes libvirt run a program and is not allowed.")
        if name not in ALLOWED_PARAMETERS:
            allowed = ", ".join(sorted(ALLOWED_PARAMETERS))
            raise InvalidUri(f"Unknown URI parameter {_shown(name)}; allowed: {allowed}.")
        if name in seen:  # libvirt would silently use the last one
            raise InvalidUri(f"The URI parameter {name!r} is given twice.")
        seen.add(name)
        _check_parameter_value(name, value, uri_paths_allowed)


def _parameters(query: str) -> list[tuple[str, str]]:
    """(name, value) pairs as libvirt reads them: split at '&', then each side %-decoded."""
    if not query:
        return []
    if ";" in query:  # libvirt splits at ';' only when there is no '&': too easy to misread
        raise InvalidUri("Separate URI parameters with '&' (a ';' must be written %3B).")
    pairs = []
    for section in query.split("&"):
        name, equals, value = section.partition("=")
        if not name or not equals:
            raise InvalidUri("Every URI parameter must read name=value.")
        pairs.append((_decoded(name), _decoded(value)))
    return pairs


def _check_parameter_value(name: str, value: str, uri_paths_allowed: Sequence[str]) -> None:
    if name in PATH_PARAMETERS:
        _check_allowed_path(name, value, uri_paths_allowed)
    elif name in CHOICE_PARAMETERS and value not in CHOICE_PARAMETERS[name]:
        raise InvalidUri(f"The URI parameter {name!r} must be one of {', '.join(sorted(CHOICE_PARAMETERS[name]))}.")
    elif name == "sshauth" and not set(value.split(",")) <= SSH_AUTH_METHODS:
        raise InvalidUri(f"sshauth takes a comma-separated list of {', '.join(sorted(SSH_AUTH_METHODS))}.")
    elif name == "tls_priority" and not _TLS_PRIORITY.fullmatch(value):
        raise InvalidUri("tls_priority must be a GnuTLS priority string such as NORMAL:-VERS-TLS1.0.")


def _check_allowed_path(name: str, value: str, uri_paths_allowed: Sequence[str]) -> None:
    if not value.startswith("/"):
        raise InvalidUri(f"The URI parameter {name!r} must be an absolute path.")
    _check_no_dot_dot(value)
    if not _lies_under(value, os.path.realpath(value), uri_paths_allowed):
        raise InvalidUri(
            f"The path of {name!r} must lie under a directory of KVMWEB_URI_PATHS_ALLOWED: "
            f"{_directories(uri_paths_allowed)}."
        )


def _check_no_dot_dot(path: str) -> None:
    if ".." in path.split("/"):
        raise InvalidUri("A path in the URI may not contain '..'.")


def _lies_under(path: str, real_path: str, directories: Sequence[str]) -> bool:
    """Whether `path` lies inside one of `directories`, both as written (what a remote host
    reads) and with every symlink resolved (what this machine opens)."""
    written = os.path.normpath(path)
    for directory in directories:
        if not os.path.isabs(directory):
            continue
        if _inside(written, os.path.normpath(directory)) and _inside(real_path, os.path.realpath(directory)):
            return True
    return False


def _inside(path: str, directory: str) -> bool:
    return path.startswith(directory.rstrip("/") + "/") and path != directory


def _directories(directories: Sequence[str]) -> str:
    return ", ".join(directories) if directories else "none configured"


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
    if _is_connection_failure(error):
        return HostUnreachable(message, code=code)
    return HypervisorError(message, code=code)


def _is_connection_failure(error: libvirt.libvirtError) -> bool:
    code = error.get_error_code()
    if code in _RETRYABLE_CODES:
        return True
    # The client's RPC layer reports a connection it closed (the daemon went away, keepalive
    # gave up on it) as an internal error: "client socket is closed", "connection closed due
    # to keepalive timeout". Errors the daemon sends back carry their driver's domain instead.
    if code == libvirt.VIR_ERR_INTERNAL_ERROR and error.get_error_domain() == libvirt.VIR_FROM_RPC:
        return True
    return code == libvirt.VIR_ERR_SYSTEM_ERROR and error.get_error_domain() in _CONNECTION_DOMAINS


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
# One lock per URI: opening a connection to one host never waits for another host's open.
_uri_locks: dict[str, threading.Lock] = {}
# URIs whose open did not return within its bound; its thread still waits for the host.
_pending_opens: set[str] = set()
_event_loop_lock = threading.Lock()
_event_loop_registered = False
_event_loop_pid: int | None = None


def _silence_default_error_handler() -> None:
    # libvirt prints every error to stderr by default; we report them ourselves.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _ensure_event_loop() -> None:
    """Register libvirt's default event loop once per process and run it in a daemon thread
    (again in a forked child: threads do not survive a fork). Without it libvirt refuses
    keepalive, and a connection whose daemon died is only noticed by the next call."""
    global _event_loop_registered, _event_loop_pid
    with _event_loop_lock:
        if _event_loop_pid == os.getpid():
            return
        if not _event_loop_registered:
            libvirt.virEventRegisterDefaultImpl()
            _event_loop_registered = True
        threading.Thread(target=_run_event_loop, name="libvirt-event-loop", daemon=True).start()
        _event_loop_pid = os.getpid()


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def connect(
    uri: str,
    *,
    test_driver_dirs: Sequence[str] = DEFAULT_TEST_DRIVER_DIRS,
    uri_paths_allowed: Sequence[str] = DEFAULT_URI_PATHS_ALLOWED,
    call_timeout: float = DEFAULT_CALL_TIMEOUT_S,
) -> libvirt.virConnect:
    """An open connection to `uri`, reused within this process while it is alive.

    The URI is checked first, every time (see validate_uri), so a URI stored before a
    rule tightened fails with InvalidUri instead of being opened. A host that does not
    answer within `call_timeout` seconds raises HostUnreachable (retryable).
    """
    uri = validate_uri(uri, test_driver_dirs=test_driver_dirs, uri_paths_allowed=uri_paths_allowed)
    with _uri_lock(uri):
        with _cache_lock:
            conn = _cache.get(uri)
        if conn is not None and _is_alive(conn):
            return conn
        if conn is not None:
            _forget(uri, conn)  # dead: its daemon restarted or keepalive gave up on it
        conn = _open_within(uri, call_timeout)
        with _cache_lock:
            _cache[uri] = conn
        return conn


def _uri_lock(uri: str) -> threading.Lock:
    global _cache_pid
    with _cache_lock:
        if _cache_pid != os.getpid():
            # Inherited from a parent process: never reuse its connections or locks.
            _cache.clear()
            _uri_locks.clear()
            _pending_opens.clear()
            _cache_pid = os.getpid()
        return _uri_locks.setdefault(uri, threading.Lock())


def _forget(uri: str, conn: libvirt.virConnect) -> None:
    with _cache_lock:
        if _cache.get(uri) is conn:
            del _cache[uri]
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def _is_alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _open_within(uri: str, timeout: float) -> libvirt.virConnect:
    """_open in a thread of its own, waited for at most `timeout` seconds.

    libvirt cannot interrupt an open whose host accepted the connection and never answers:
    the thread is left waiting (it closes what it gets, should the host ever answer), and
    until it returns every new attempt on that URI fails at once, so one hung host holds
    at most one thread of this process.
    """
    _ensure_event_loop()
    with _cache_lock:
        if uri in _pending_opens:
            raise HostUnreachable(
                f"Cannot connect to {redact_uri(uri)}: an earlier connection attempt still has no answer."
            )
    attempt = _OpenAttempt(uri, timeout)
    threading.Thread(target=attempt.run, name="libvirt-open", daemon=True).start()
    return attempt.result()


class _OpenAttempt:
    """One open of `uri` in its own thread; whichever of the opener and the waiter comes
    second decides: the waiter takes the connection, or the opener closes it."""

    def __init__(self, uri: str, timeout: float):
        self.uri, self.timeout = uri, timeout
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.abandoned = False
        self.conn: libvirt.virConnect | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = _open(self.uri, self.timeout)
        except BaseException as error:  # handed to the waiting thread
            conn, self.error = None, error
        with self.lock:
            self.conn = conn
            self.done.set()
            abandoned = self.abandoned
        if abandoned:
            with _cache_lock:
                _pending_opens.discard(self.uri)
            if conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()

    def result(self) -> libvirt.virConnect:
        self.done.wait(self.timeout)
        with self.lock:
            if not self.done.is_set():
                self.abandoned = True
                with _cache_lock:
                    _pending_opens.add(self.uri)
                raise HostUnreachable(f"Cannot connect to {redact_uri(self.uri)}: no answer within {self.timeout:g} s.")
        if self.error is not None:
            raise self.error
        return self.conn


def _open(uri: str, call_timeout: float) -> libvirt.virConnect:
    _silence_default_error_handler()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as error:
        # libvirt's own message only: a parser error quotes the file on the lines after it.
        message = brief_message(error.get_error_message() or str(error))
        failure = HostUnreachable if _is_connection_failure(error) else HypervisorError
        raise failure(
            brief_message(f"Cannot connect to {redact_uri(uri)}: {message}"), code=error.get_error_code()
        ) from error
    # Bounds every later call: a host silent for about call_timeout seconds is dropped.
    # Drivers that run in this process (test:///) have no peer and refuse keepalive.
    with contextlib.suppress(libvirt.libvirtError):
        conn.setKeepAlive(keepalive_interval(call_timeout), KEEPALIVE_COUNT)
    return conn


def keepalive_interval(call_timeout: float) -> int:
    """Seconds between keepalive probes so that a silent host is dropped within `call_timeout`."""
    return max(1, int(call_timeout // (KEEPALIVE_COUNT + 1)))


def disconnect(uri: str) -> None:
    """Close and forget this process's connection to `uri` (test drivers lose their state)."""
    with _cache_lock:
        conn = _cache.pop(uri, None)
    if conn is not None:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()
