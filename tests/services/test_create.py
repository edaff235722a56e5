"""Creating networks of every mode on the demo host (test driver)."""

import pytest
from django.core.exceptions import ValidationError
from lxml import etree

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client
from networks.models import Network, Operation
from networks.services.create import network_create_plan, network_request_create, network_request_create_default
from networks.services.operations import operation_run


def _create(host, admin, **values):
    finished = operation_run(network_request_create(host=host, actor=admin, source=AuditSource.WEB, **values).pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    return Network.objects.get(host=host, name=values["name"])


def test_a_nat_network_with_dhcp_and_reservations_is_created_and_started(demo_host, admin, demo_uri):
    network = _create(
        demo_host, admin, name="lab", mode="nat", bridge="virbr42", ipv4="10.42.0.1/24",
        reservations="52:54:00:42:00:01,10.42.0.10,build\n", domain_name="lab.test", mtu="9000", autostart=True,
    )  # fmt: skip
    assert network.active and network.autostart and network.forward_mode == "nat" and network.mtu == 9000
    ip = network.ips.get()
    assert (ip.address, ip.prefix) == ("10.42.0.1", 24)
    assert (ip.dhcp_ranges.get().start, ip.dhcp_ranges.get().end) == ("10.42.0.2", "10.42.0.254")
    assert network.dhcp_reservations.get().mac == "52:54:00:42:00:01"
    assert client.connect(demo_uri).networkLookupByName("lab").isActive()


def test_a_dual_stack_routed_network_gets_both_families(demo_host, admin):
    network = _create(demo_host, admin, name="dual", mode="route", ipv4="10.43.0.0/24", ipv6="fd00:43::1/64")
    assert [(ip.family, ip.address) for ip in network.ips.all()] == [("ipv4", "10.43.0.1"), ("ipv6", "fd00:43::1")]


def test_isolated_open_bridge_and_macvtap_networks(demo_host, admin):
    assert _create(demo_host, admin, name="iso", mode="isolated", ipv4="10.44.0.1/24").forward_mode == ""
    assert _create(demo_host, admin, name="opn", mode="open", ipv4="10.45.0.1/24").forward_mode == "open"
    bridged = _create(demo_host, admin, name="lan2", mode="bridge", bridge="br1")
    assert bridged.forward_mode == "bridge" and bridged.bridge == "br1"
    macvtap = _create(demo_host, admin, name="mv", mode="macvtap-vepa", interfaces="eth1 eth2")
    assert macvtap.forward_mode == "vepa"
    assert [f.dev for f in macvtap.forward_interfaces.all()] == ["eth1", "eth2"]


def test_the_default_network_is_one_click_where_it_does_not_exist(demo_host, admin, demo_uri):
    with pytest.raises(ValidationError, match="already exists"):
        network_request_create_default(host=demo_host, actor=admin, source="web")
    conn = client.connect(demo_uri)
    conn.networkLookupByName("default").destroy()
    conn.networkLookupByName("default").undefine()
    Network.objects.filter(host=demo_host, name="default").delete()
    finished = operation_run(network_request_create_default(host=demo_host, actor=admin, source="web").pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    root = etree.fromstring(conn.networkLookupByName("default").XMLDesc(0).encode())
    assert root.find("bridge").get("name") == "virbr0" and root.find("ip/dhcp/range").get("end") == "192.168.122.254"


def test_overlapping_subnets_warn(demo_host):
    plan = network_create_plan(host=demo_host, values={"name": "again", "mode": "nat", "ipv4": "192.168.122.129/25"})
    assert any("overlaps 192.168.122.1/24 of default" in w for w in plan.warnings)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"name": "default", "ipv4": "10.1.0.1/24"}, "name"),
        ({"name": "bad name!", "ipv4": "10.1.0.1/24"}, "name"),
        ({"name": "lab", "ipv4": "10.1.0.1/33"}, "ipv4"),
        ({"name": "lab", "ipv4": "10.1.0.1/30"}, "ipv4"),
        ({"name": "lab", "ipv4": ""}, "ipv4"),
        ({"name": "lab", "ipv4": "fd00::1/64"}, "ipv4"),
        ({"name": "lab", "ipv4": "10.1.0.1/24", "bridge": "a-bridge-name-too-long"}, "bridge"),
        ({"name": "lab", "ipv4": "10.1.0.1/24", "bridge": "virbr0"}, "bridge"),
        (
            {"name": "lab", "ipv4": "10.1.0.1/24", "ipv4_dhcp_start": "10.1.0.200", "ipv4_dhcp_end": "10.1.0.100"},
            "ipv4_dhcp_end",
        ),
        ({"name": "lab", "ipv4": "10.1.0.1/24", "ipv4_dhcp_start": "10.2.0.5"}, "ipv4_dhcp_start"),
        ({"name": "lab", "ipv4": "10.1.0.1/24", "mtu": "70000"}, "mtu"),
        ({"name": "lab", "ipv4": "10.1.0.1/24", "reservations": "zz,10.1.0.5,x"}, "reservations"),
        ({"name": "lab", "mode": "macvtap-private"}, "interfaces"),
        ({"name": "lab", "mode": "bridge"}, "bridge"),
        ({"name": "lab", "mode": "tunnel"}, "mode"),
    ],
)
def test_bad_create_input_names_the_field_and_queues_nothing(demo_host, admin, values, field):
    with pytest.raises(ValidationError) as caught:
        network_request_create(host=demo_host, actor=admin, source=AuditSource.WEB, **{"mode": "nat", **values})
    assert field in caught.value.message_dict
    assert not Operation.objects.filter(kind="network.create").exists()
