"""URI checks and connections. No database."""

import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from networks.hypervisor import client
from networks.hypervisor.errors import HostUnreachable, HypervisorError, InvalidUri, brief_message

REPO = Path(__file__).resolve().parents[2]
DEMO_XML = REPO / "demo" / "fleet.xml"
# Directories these tests allow; they need not exist for the checks.
ALLOWED = ("/run/libvirt", "/etc/kvmweb", "/srv/kvmweb/keys")
TEST_DIRS = (str(REPO / "demo"), "/srv/kvmweb/fixtures")


def validate(uri: str) -> str:
    return client.validate_uri(uri, test_driver_dirs=TEST_DIRS, uri_paths_allowed=ALLOWED)


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "qemu:///session",
        "qemu+ssh://root@kvm1.example/system",
        "qemu+ssh://root@kvm1.example/system?keyfile=/etc/kvmweb/id_ed25519&no_verify=1",
        "qemu+ssh://kvm1.example:2222/system?known_hosts_verify=ignore&proxy=native&mode=direct",
        "qemu+tls://kvm2.example/system?pkipath=/etc/kvmweb/pki&tls_priority=NORMAL:-VERS-TLS1.0",
        "qemu+tls://[2001:db8::5]:16514/system",
        "qemu://kvm3.example/system",
        "qemu+libssh2://root@kvm4/system?known_hosts=/etc/kvmweb/known_hosts&sshauth=privkey,agent",
        "qemu+unix:///system?socket=/run/libvirt/libvirt-sock",
        "qemu:///system?socket=/srv/kvmweb/keys/run/libvirt-sock",
        "test:///default",
        f"test://{DEMO_XML}",
        "test:///srv/kvmweb/fixtures/two%20hosts.xml",
    ],
)
def test_it_accepts_the_uris_admins_use(uri):
    assert validate(f"  {uri} ") == uri


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("qemu+ext:///system?command=/bin/sh", "'ext' transport"),
        ("qemu+ssh://root@kvm1/system?command=/tmp/evil", "'command'"),
        ("qemu+ssh://root@kvm1/system?netcat=/tmp/evil", "'netcat'"),
        ("qemu+ssh://root@kvm1/system?%63ommand=/tmp/evil", "'command'"),
        ("xen:///system", "Unsupported libvirt driver"),
        ("lxc:///", "Unsupported libvirt driver"),
        ("qemu+http://kvm1/system", "Unsupported transport"),
        ("qemu+tcp://kvm3.example:16509/system", "'tcp' transport is unencrypted"),
        ("qemu+tcp://127.0.0.1:22/system", "'tcp' transport"),
        ("qemu+ssh://root:hunter2@kvm1/system", "password"),
        ("qemu:///root", "/system or /session"),
        ("qemu:///%73ystem", "/system or /session"),
        ("", "Unsupported libvirt driver"),
        ("QEMU:///system", "lower case"),
        ("qemu:/system", "driver\\[\\+transport\\]://"),
        ("qemu:///system#frag", "fragment"),
        # The test driver reads any file it is given; its parse error quotes the file.
        ("test:///etc/passwd", "test:///default"),
        ("test:///etc/passwd%00.xml", "encoded control"),
        ("test:///etc/hosts.xml", "KVMWEB_TEST_DRIVER_DIRS"),
        (f"test://{REPO}/demo/../etc/x.xml", "'\\.\\.'"),
        (f"test://{REPO}/demo/%2e%2e/%2e%2e/etc/x.xml", "'\\.\\.'"),
        (f"test://{REPO}/demo-evil/x.xml", "KVMWEB_TEST_DRIVER_DIRS"),
        (f"test://{REPO}/demo", "test:///default"),
        ("test://kvm1/default", "local"),
        ("test+ssh://kvm1/default", "local"),
        (f"test://{DEMO_XML}?socket=/run/libvirt/x", "no parameters"),
        # Sockets, keys and certificates only from the allowed directories.
        ("qemu+unix:///system?socket=/any/path", "KVMWEB_URI_PATHS_ALLOWED"),
        ("qemu:///system?so%63ket=/tmp/x", "KVMWEB_URI_PATHS_ALLOWED"),
        ("qemu+ssh://kvm1/system?keyfile=/etc/shadow", "KVMWEB_URI_PATHS_ALLOWED"),
        ("qemu+ssh://kvm1/system?keyfile=/etc/kvmweb/../shadow", "'\\.\\.'"),
        ("qemu+ssh://kvm1/system?keyfile=/etc/kvmweb/%2E%2E/shadow", "'\\.\\.'"),
        ("qemu+ssh://kvm1/system?keyfile=/etc/kvmweb-other/id", "KVMWEB_URI_PATHS_ALLOWED"),
        ("qemu+ssh://kvm1/system?keyfile=/etc/kvmweb", "KVMWEB_URI_PATHS_ALLOWED"),
        ("qemu+ssh://kvm1/system?keyfile=etc/kvmweb/id", "absolute path"),
        ("qemu+tls://kvm1/system?pkipath=/etc/pki", "KVMWEB_URI_PATHS_ALLOWED"),
        ("qemu+libssh2://kvm1/system?known_hosts=/root/.ssh/authorized_keys", "KVMWEB_URI_PATHS_ALLOWED"),
        ("qemu:///system?socket=/run/libvirt/a%00/etc/x", "encoded control"),
        ("qemu:///system?socket=/run/libvirt/a%0Ab", "encoded control"),
        ("qemu:///system?socket=/run/libvirt/a%C2%85b", "encoded control"),
        (f"test://{REPO}/demo/%E2%80%8Bfleet.xml", "invisible"),
        ("qemu:///system?socket=/run/libvirt/x&socket=/tmp/y", "given twice"),
        ("qemu:///system?socket=/run/libvirt/x;socket=/tmp/y", "'&'"),
        ("qemu:///system?socket", "name=value"),
        ("qemu:///system?no_tty=1&", "name=value"),
        ("qemu:///system?socket=/run/libvirt/%ff", "not UTF-8"),
        ("qemu:///system?socket=/run/libvirt/%zz", "two hex digits"),
        ("qemu:///system?no_verify=yes", "'no_verify' must be one of"),
        ("qemu+ssh://kvm1/system?sshauth=privkey,gssapi", "sshauth"),
        ("qemu+tls://kvm1/system?tls_priority=NORMAL%20-x", "tls_priority"),
        ("qemu+ssh://kvm1/system?bogus=1", "Unknown URI parameter"),
        # Remote transports need a host, a sane host, a real port.
        ("qemu+ssh:///system", "needs a host"),
        ("qemu+tls:///system", "needs a host"),
        ("qemu+ssh://kvm1:0/system", "1 to 65535"),
        ("qemu+ssh://kvm1:65536/system", "1 to 65535"),
        ("qemu+ssh://kvm1:22x/system", "\\[user@\\]host\\[:port\\]"),
        ("qemu+ssh://-oProxyCommand=touch%20x/system", "\\[user@\\]host\\[:port\\]"),
        ("qemu+ssh://root@-oProxyCommand=x/system", "\\[user@\\]host\\[:port\\]"),
        ("qemu+ssh://ro%6Ft@kvm1/system", "\\[user@\\]host\\[:port\\]"),
        ("qemu+ssh://a@b@kvm1/system", "\\[user@\\]host\\[:port\\]"),
        ("qemu+tls://[::g]/system", "cannot be parsed"),
        ("qemu+tls://[::1/system", "cannot be parsed"),
        ("qemu+tls://[1.2.3.4]/system", "cannot be parsed|IPv6"),
        ("qemu+unix://kvm1/system", "names no host"),
        ("qemu+ssh://kvm1/system?keyfile=/etc/kvmweb/a b", "blanks"),
        ("qemu+ssh://kvm1\n/system", "blanks, control"),
        ("qemu+ssh://kvm1/syst\u00e9m", "non-ASCII"),
        ("qemu:///system?socket=/run/libvirt/" + "x" * 600, "longer than 500"),
    ],
)
def test_it_rejects_unsafe_or_unknown_uris_with_a_clear_error(uri, reason):
    with pytest.raises(InvalidUri, match=reason):
        validate(uri)


def test_an_error_never_echoes_a_huge_parameter_name():
    with pytest.raises(InvalidUri) as caught:
        validate("qemu:///system?" + "a" * 450 + "=1")
    assert len(str(caught.value)) < 300


def test_a_symlink_inside_an_allowed_directory_cannot_lead_outside(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "fleet.xml").symlink_to("/etc/passwd")
    (allowed / "keys").symlink_to("/etc")
    with pytest.raises(InvalidUri, match="KVMWEB_TEST_DRIVER_DIRS"):
        client.validate_uri(f"test://{allowed}/fleet.xml", test_driver_dirs=[str(allowed)])
    with pytest.raises(InvalidUri, match="KVMWEB_URI_PATHS_ALLOWED"):
        client.validate_uri(f"qemu+ssh://kvm1/system?keyfile={allowed}/keys/shadow", uri_paths_allowed=[str(allowed)])


def test_an_allowed_directory_reached_through_a_symlink_is_accepted(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    uri = f"qemu:///system?socket={tmp_path}/link/sock"
    assert client.validate_uri(uri, uri_paths_allowed=[str(tmp_path / "link")]) == uri


def test_a_remote_socket_must_be_under_an_allowed_directory_as_written(tmp_path):
    # The remote host reads the path as written; this machine's symlinks say nothing about it.
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(InvalidUri, match="KVMWEB_URI_PATHS_ALLOWED"):
        client.validate_uri(f"qemu+ssh://kvm1/system?socket={tmp_path}/link/sock", uri_paths_allowed=[str(real)])


def test_the_defaults_allow_the_demo_and_the_standard_libvirt_socket_only():
    assert client.validate_uri(f"test://{DEMO_XML}") == f"test://{DEMO_XML}"
    assert client.validate_uri("qemu:///system?socket=/var/run/libvirt/libvirt-sock")
    with pytest.raises(InvalidUri):
        client.validate_uri("qemu:///system?socket=/tmp/libvirt-sock")


def test_no_directory_allowed_means_only_paramless_uris_and_test_default():
    assert client.validate_uri("test:///default", test_driver_dirs=()) == "test:///default"
    with pytest.raises(InvalidUri, match="none configured"):
        client.validate_uri(f"test://{DEMO_XML}", test_driver_dirs=())
    with pytest.raises(InvalidUri, match="none configured"):
        client.validate_uri("qemu:///system?socket=/run/libvirt/libvirt-sock", uri_paths_allowed=())


def test_redacted_uris_carry_no_user_information():
    assert client.redact_uri("qemu+ssh://root@kvm1:2222/system") == "qemu+ssh://kvm1:2222/system"
    assert client.redact_uri("qemu:///system") == "qemu:///system"


def test_one_process_reuses_its_connection_so_test_driver_state_survives(default_uri):
    first = client.connect(default_uri)
    first.networkLookupByName("default").destroy()
    again = client.connect(default_uri)
    assert again is first
    assert not again.networkLookupByName("default").isActive()


def test_a_host_that_cannot_be_reached_raises_a_retryable_error(tmp_path):
    uri = f"qemu:///system?socket={tmp_path}/no-such-socket"
    with pytest.raises(HostUnreachable, match="Cannot connect") as caught:
        client.connect(uri, uri_paths_allowed=[str(tmp_path)])
    assert caught.value.retryable


def test_connect_checks_the_uri_before_libvirt_sees_it(tmp_path):
    with pytest.raises(InvalidUri, match="KVMWEB_URI_PATHS_ALLOWED"):
        client.connect(f"qemu:///system?socket={tmp_path}/sock")  # tmp_path is not allowed by default


def test_a_test_driver_file_that_is_not_xml_never_shows_its_content(tmp_path):
    leaky = tmp_path / "leaky.xml"
    leaky.write_text("root:x:0:0:SECRET-FIRST-LINE\nmore secrets\n")
    uri = f"test://{leaky}"
    with pytest.raises(HypervisorError) as caught:
        client.connect(uri, test_driver_dirs=[str(tmp_path)])
    assert not caught.value.retryable, "a file that is not XML stays so: trying again cannot help"
    assert "Start tag expected" in caught.value.message  # libvirt's own message is kept
    assert "SECRET" not in caught.value.message and "more secrets" not in caught.value.message
    client.disconnect(uri)


def test_a_connection_error_is_capped_in_length(tmp_path):
    deep = tmp_path / ("d" * 200) / ("e" * 200)
    uri = f"qemu:///system?socket={deep}/sock"
    with pytest.raises(HostUnreachable, match="Cannot connect") as caught:
        client.connect(uri, uri_paths_allowed=[str(tmp_path)])
    assert len(caught.value.message) <= 500


def test_brief_message_keeps_the_first_line_and_caps_it():
    assert brief_message("bad.xml:1: Start tag expected\nroot:x:0:0\n^") == "bad.xml:1: Start tag expected"
    assert brief_message("x" * 900) == "x" * 499 + "…"
    assert brief_message("") == ""


# ---------------------------------------------------------------- generated URIs

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_hostname = st.lists(_label, min_size=1, max_size=3).map(".".join)
_user = st.from_regex(r"[a-z_][a-z0-9._-]{0,10}", fullmatch=True)
_segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~ ", min_size=1, max_size=12).filter(
    lambda s: s not in {".", ".."}
)
_tail = st.lists(_segment, min_size=1, max_size=4).map("/".join)


def _quoted(path: str) -> str:
    return urllib.parse.quote(path, safe="/")


@st.composite
def _remote_uris(draw):
    """A qemu URI built from parts kvmweb accepts, and the paths it names."""
    transport = draw(st.sampled_from(["ssh", "tls", "libssh", "libssh2"]))
    user = draw(st.none() | _user)
    port = draw(st.none() | st.integers(1, 65535))
    netloc = (f"{user}@" if user else "") + draw(_hostname) + (f":{port}" if port else "")
    paths = {}
    for name in draw(st.sets(st.sampled_from(["socket", "keyfile", "pkipath", "known_hosts"]))):
        paths[name] = f"{draw(st.sampled_from(ALLOWED))}/{draw(_tail)}"
    words = {
        name: draw(st.sampled_from(["0", "1"])) for name in draw(st.sets(st.sampled_from(["no_verify", "no_tty"])))
    }
    query = "&".join(f"{name}={_quoted(value)}" for name, value in {**paths, **words}.items())
    path = draw(st.sampled_from(["/system", "/session"]))
    return f"qemu+{transport}://{netloc}{path}" + (f"?{query}" if query else ""), paths


@given(_remote_uris())
def test_a_well_formed_uri_under_the_allowed_directories_is_accepted_unchanged(generated):
    uri, paths = generated
    assert validate(uri) == uri  # never silently altered
    # Moving any named path out of its directory gets the same URI refused.
    for value in paths.values():
        with pytest.raises(InvalidUri, match="KVMWEB_URI_PATHS_ALLOWED"):
            validate(uri.replace(_quoted(value), _quoted("/tmp" + value), 1))


_outside = st.sampled_from(
    [
        "/etc",
        "/tmp",
        "/",
        "/run",
        "/run/libvirt-other",
        "/etc/kvmweb2",
        "/srv/kvmweb/keys-evil",
        "/run/libvirt/..",
        "/etc/kvmweb/%2e%2e",
        "/etc/kvmweb/.%2E",
        "/srv/kvmweb/keys/x/../../..",
    ]
)


@given(
    name=st.sampled_from(["socket", "keyfile", "pkipath", "known_hosts"]),
    base=_outside,
    tail=_tail,
    transport=st.sampled_from(["", "unix", "ssh", "tls"]),
)
def test_no_uri_naming_a_path_outside_the_allowed_directories_validates(name, base, tail, transport):
    host = "kvm1" if transport in {"ssh", "tls"} else ""
    scheme = f"qemu+{transport}" if transport else "qemu"
    uri = f"{scheme}://{host}/system?{name}={base}/{_quoted(tail)}"
    with pytest.raises(InvalidUri):
        validate(uri)


@given(base=_outside | st.sampled_from([str(REPO), str(REPO / "demo-x"), "/srv/kvmweb"]), tail=_tail)
def test_no_test_driver_file_outside_its_directories_validates(base, tail):
    with pytest.raises(InvalidUri):
        validate(f"test://{base}/{_quoted(tail)}.xml")


@given(_remote_uris(), st.data())
def test_a_control_character_anywhere_in_an_accepted_uri_gets_it_refused(generated, data):
    uri, _paths = generated
    at = data.draw(st.integers(1, len(uri) - 1))  # inside: strip() would drop blanks at either end
    control = data.draw(st.sampled_from(["\x00", "\x01", "\x1f", "\x7f", "\n", "\t", "%00", "%0a", "%1F", "%7f"]))
    with pytest.raises(InvalidUri):
        validate(uri[:at] + control + uri[at:])


@given(st.text(max_size=120))
def test_any_string_is_accepted_as_a_safe_uri_or_refused_with_invalid_uri(text):
    try:
        accepted = validate(text)
    except InvalidUri as error:
        assert len(str(error)) < 400  # never a crash, never a huge echo
        return
    assert accepted.split(":", 1)[0].split("+")[0] in {"qemu", "test"}
    assert "command=" not in accepted and "netcat=" not in accepted
