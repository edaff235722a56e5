"""Network lifecycle against the test driver. No database."""

import pytest

from networks.hypervisor import client, xml
from networks.hypervisor import networks as hv
from networks.hypervisor.errors import AlreadyExists, HypervisorError, NotFound
from networks.hypervisor.types import DhcpRange, IpConfig


def test_start_and_stop_are_idempotent(default_uri):
    conn = client.connect(default_uri)
    assert not hv.stop_network(conn, "default").active
    assert not hv.stop_network(conn, "default").active
    assert hv.start_network(conn, "default").active
    assert hv.start_network(conn, "default").active


def test_autostart_can_be_switched(default_uri):
    conn = client.connect(default_uri)
    assert hv.set_network_autostart(conn, "default", True).autostart
    assert not hv.set_network_autostart(conn, "default", False).autostart


def test_a_missing_network_is_not_found(default_uri):
    with pytest.raises(NotFound, match="does not exist"):
        hv.start_network(client.connect(default_uri), "nope")


def test_define_creates_and_starts_a_nat_network(default_uri):
    conn = client.connect(default_uri)
    network_xml = xml.build_network_xml(
        name="lab",
        bridge="virbr9",
        ips=(IpConfig("10.9.0.1", 24, "ipv4", (DhcpRange("10.9.0.10", "10.9.0.99"),)),),
    )
    info = hv.define_network(conn, network_xml, start=True, autostart=True)
    assert info.active and info.autostart and info.bridge == "virbr9"
    assert info.ips[0].dhcp_ranges == (DhcpRange("10.9.0.10", "10.9.0.99"),)


def test_define_refuses_to_replace_an_existing_network(default_uri):
    conn = client.connect(default_uri)
    before = conn.networkLookupByName("default").XMLDesc(0)
    with pytest.raises(AlreadyExists):
        hv.define_network(conn, xml.build_network_xml(name="default", bridge="virbr7"), start=False, autostart=False)
    assert conn.networkLookupByName("default").XMLDesc(0) == before


def test_a_network_libvirt_refuses_leaves_the_host_as_it_was(default_uri):
    conn = client.connect(default_uri)
    # libvirt refuses NAT without an address. (A start that fails after the define is
    # rolled back too: the real-daemon tests prove it, the test driver never fails a start.)
    clash = xml.build_network_xml(name="clash", bridge="virbr5")
    names_before = sorted(conn.listNetworks() + conn.listDefinedNetworks())
    with pytest.raises(HypervisorError):
        hv.define_network(conn, clash, start=True, autostart=False)
    assert sorted(conn.listNetworks() + conn.listDefinedNetworks()) == names_before


def test_undefine_stops_and_removes_the_network(default_uri):
    conn = client.connect(default_uri)
    hv.undefine_network(conn, "default")
    assert "default" not in conn.listNetworks() + conn.listDefinedNetworks()
