"""URI checks and connections. No database."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from networks.hypervisor import client
from networks.hypervisor.errors import HostUnreachable, InvalidUri


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "qemu:///session",
        "qemu+ssh://root@kvm1.example/system",
        "qemu+ssh://root@kvm1.example/system?keyfile=/etc/kvmweb/id_ed25519&no_verify=1",
        "qemu+tls://kvm2.example/system?pkipath=/etc/pki/kvmweb",
        "qemu+tcp://kvm3.example:16509/system",
        "qemu+libssh2://root@kvm4/system?known_hosts=/etc/kvmweb/known_hosts",
        "qemu+unix:///system?socket=/run/private/libvirt-sock",
        "qemu:///system?socket=/tmp/scratch/run/libvirt/libvirt-sock",
        "test:///default",
        "test:///srv/kvmweb/demo/fleet.xml",
    ],
)
def test_it_accepts_the_uris_admins_use(uri):
    assert client.validate_uri(f"  {uri} ") == uri


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("qemu+ext:///system?command=/bin/sh", "'ext' transport"),
        ("qemu+ssh://root@kvm1/system?command=/tmp/evil", "'command'"),
        ("qemu+ssh://root@kvm1/system?netcat=/tmp/evil", "'netcat'"),
        ("xen:///system", "Unsupported libvirt driver"),
        ("lxc:///", "Unsupported libvirt driver"),
        ("qemu+http://kvm1/system", "Unsupported transport"),
        ("qemu+ssh://root:hunter2@kvm1/system", "password"),
        ("qemu:///root", "/system or /session"),
        ("test:///etc/passwd", "test:///default"),
        ("qemu+ssh://kvm1/system?bogus=1", "Unknown URI parameter"),
        ("", "Unsupported libvirt driver"),
    ],
)
def test_it_rejects_unsafe_or_unknown_uris_with_a_clear_error(uri, reason):
    with pytest.raises(InvalidUri, match=reason):
        client.validate_uri(uri)


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
        client.connect(uri)
    assert caught.value.retryable


@given(st.text(max_size=80))
def test_any_string_is_either_a_qemu_or_test_uri_or_refused_with_invalid_uri(text):
    try:
        accepted = client.validate_uri(text)
    except InvalidUri:
        return
    assert accepted.split(":", 1)[0].split("+")[0] in {"qemu", "test"}
    assert "command=" not in accepted and "netcat=" not in accepted
