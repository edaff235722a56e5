"""Live network edits through the services, against the demo fleet on the test driver."""

import libvirt
import pytest
from django.core.exceptions import ValidationError
from lxml import etree

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client
from networks.models import AuditEvent, DhcpReservation, Host, Network, Operation
from networks.services.netupdate import network_request_update, network_update_preview
from networks.services.operations import operation_run


@pytest.fixture
def net(demo_host):
    return lambda name: Network.objects.get(host=demo_host, name=name)


def _apply(network, admin, section, command, values=None, key="", scope="both"):
    operation = network_request_update(
        network=network,
        section=section,
        command=command,
        values=values or {},
        key=key,
        scope=scope,
        actor=admin,
        source=AuditSource.WEB,
    )
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    return finished


def _host_xml(demo_uri, name):
    return client.connect(demo_uri).networkLookupByName(name).XMLDesc(0)


def _dhcp_hosts(demo_uri, name):
    root = etree.fromstring(_host_xml(demo_uri, name).encode())
    return [dict(h.attrib) for h in root.iter("host") if h.getparent().tag == "dhcp"]


def test_a_reservation_is_added_live_and_lands_on_the_host_and_in_the_mirror(net, admin, demo_uri):
    _apply(
        net("default"),
        admin,
        "ip-dhcp-host",
        "add-last",
        {"mac": "52-54-00-AA-BB-CC", "ip": "192.168.122.45", "name": "bob"},
    )
    assert {"mac": "52:54:00:aa:bb:cc", "name": "bob", "ip": "192.168.122.45"} in _dhcp_hosts(demo_uri, "default")
    assert DhcpReservation.objects.get(network=net("default"), mac="52:54:00:aa:bb:cc").address == "192.168.122.45"
    event = AuditEvent.objects.get(action="network.update.succeeded")
    assert "192.168.122.45" in event.after_xml and "192.168.122.45" not in event.before_xml


def test_add_first_puts_the_reservation_first(net, admin, demo_uri):
    _apply(net("default"), admin, "ip-dhcp-host", "add-first", {"mac": "52:54:00:00:00:99", "ip": "192.168.122.99"})
    assert _dhcp_hosts(demo_uri, "default")[0]["mac"] == "52:54:00:00:00:99"


def test_an_ipv6_reservation_goes_to_the_ipv6_subnet_whatever_its_position(net, admin, demo_uri):
    _apply(
        net("dualstack"), admin, "ip-dhcp-host", "add-last", {"host_id": "0:3:0:1:52:54:0:b:0:99", "ip": "fd00:30::99"}
    )
    _apply(net("dualstack"), admin, "ip-dhcp-host", "add-last", {"mac": "52:54:00:0b:00:99", "ip": "10.30.0.99"})
    ips = {h["ip"] for h in _dhcp_hosts(demo_uri, "dualstack")}
    assert {"fd00:30::99", "10.30.0.99"} <= ips
    assert net("dualstack").dhcp_reservations.get(address="fd00:30::99").ip.family == "ipv6"


HOSTILE_NAME = "bob'/><host mac='52:54:00:00:00:09' ip='192.168.122.9"


@pytest.mark.parametrize(
    ("values", "field", "says"),
    [
        ({"mac": "52:54:00:zz:00:01", "ip": "192.168.122.50"}, "mac", "not a MAC"),
        ({"mac": "01:00:5e:00:00:01", "ip": "192.168.122.50"}, "mac", "multicast"),
        ({"mac": "52:54:00:00:01:01", "ip": "10.99.0.5"}, "ip", "outside every subnet"),
        ({"mac": "52:54:00:00:01:01", "ip": "192.168.122.0"}, "ip", "network address"),
        ({"mac": "52:54:00:00:01:01", "ip": "192.168.122.255"}, "ip", "broadcast"),
        ({"mac": "52:54:00:00:01:01", "ip": "192.168.122.1"}, "ip", "gateway"),
        ({"mac": "52:54:00:0A:00:11", "ip": "192.168.122.50"}, "mac", "already reserved"),
        ({"mac": "52:54:00:00:01:01", "ip": "192.168.122.11"}, "ip", "already reserved"),
        ({"mac": "52:54:00:00:01:01", "ip": "192.168.122.50", "name": "WEB01"}, "name", "already used"),
        ({"mac": "52:54:00:00:01:01", "ip": "192.168.122.50", "name": HOSTILE_NAME}, "name", "not a valid host name"),
        ({"mac": "52:54:00:00:01:01", "ip": "not-an-ip"}, "ip", "not an IP"),
        ({"ip": "192.168.122.50"}, "mac", "required for an IPv4"),
    ],
)
def test_bad_reservations_are_refused_before_libvirt_and_change_nothing(net, admin, demo_uri, values, field, says):
    before = _host_xml(demo_uri, "default")
    with pytest.raises(ValidationError) as caught:
        network_request_update(
            network=net("default"), section="ip-dhcp-host", command="add-last", values=values, actor=admin, source="web"
        )
    assert says in " ".join(caught.value.message_dict[field])
    assert _host_xml(demo_uri, "default") == before
    assert not Operation.objects.filter(kind="network.update").exists()


def test_an_ipv6_reservation_by_mac_is_refused(net, admin):
    with pytest.raises(ValidationError, match="DUID"):
        network_update_preview(
            network=net("dualstack"),
            section="ip-dhcp-host",
            command="add-last",
            values={"mac": "52:54:00:00:00:01", "ip": "fd00:30::5"},
        )


def test_warnings_for_an_address_in_the_dynamic_range_and_a_mac_reserved_elsewhere(net, demo_host):
    other = Host.objects.create(name="kvm2", uri="test:///default")
    elsewhere = Network.objects.create(host=other, name="lan")
    ip = elsewhere.ips.create(position=0, address="10.1.0.1", prefix=24, family="ipv4")
    DhcpReservation.objects.create(network=elsewhere, ip=ip, address="10.1.0.5", mac="52:54:00:00:02:02")
    preview = network_update_preview(
        network=net("default"),
        section="ip-dhcp-host",
        command="add-last",
        values={"mac": "52:54:00:00:02:02", "ip": "192.168.122.77"},
    )
    assert any("dynamic range" in w for w in preview.warnings)
    assert any("lan@kvm2" in w for w in preview.warnings)
    assert preview.effect.code == "dnsmasq-reload" and "firewall" in preview.effect.text


def test_modify_changes_only_the_chosen_reservation(net, admin, demo_uri):
    _apply(
        net("default"),
        admin,
        "ip-dhcp-host",
        "modify",
        {"mac": "52:54:00:0a:00:11", "ip": "192.168.122.111", "name": "web01"},
        key="52:54:00:0A:00:11",
    )
    hosts = _dhcp_hosts(demo_uri, "default")
    assert {"mac": "52:54:00:0a:00:11", "name": "web01", "ip": "192.168.122.111"} in hosts
    assert len(hosts) == 3


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"mac": "52:54:00:0a:00:11", "ip": "192.168.122.12", "name": "web01"}, "ip"),  # web02's address
        ({"mac": "52:54:00:0a:00:11", "ip": "192.168.122.111", "name": "web02"}, "name"),
        ({"mac": "52:54:00:0a:00:77", "ip": "192.168.122.111", "name": "web01"}, "mac"),
    ],
)
def test_a_modify_that_would_collide_or_lose_its_identity_is_refused(net, values, field):
    with pytest.raises(ValidationError) as caught:
        network_update_preview(
            network=net("default"), section="ip-dhcp-host", command="modify", values=values, key="52:54:00:0a:00:11"
        )
    assert field in caught.value.message_dict


def test_delete_removes_exactly_that_reservation(net, admin, demo_uri):
    _apply(net("default"), admin, "ip-dhcp-host", "delete", key="52:54:00:0a:00:12")
    assert [h["mac"] for h in _dhcp_hosts(demo_uri, "default")] == ["52:54:00:0a:00:11", "52:54:00:0c:00:31"]


def test_dhcp_ranges_are_added_and_deleted_and_overlaps_refused(net, admin, demo_uri):
    with pytest.raises(ValidationError, match="overlaps"):
        network_update_preview(
            network=net("isolated"),
            section="ip-dhcp-range",
            command="add-last",
            values={"start": "10.10.0.150", "end": "10.10.0.220"},
        )
    with pytest.raises(ValidationError, match="outside every subnet"):
        network_update_preview(
            network=net("isolated"),
            section="ip-dhcp-range",
            command="add-last",
            values={"start": "10.11.0.2", "end": "10.11.0.9"},
        )
    _apply(net("isolated"), admin, "ip-dhcp-range", "add-last", {"start": "10.10.0.200", "end": "10.10.0.220"})
    assert "10.10.0.200" in _host_xml(demo_uri, "isolated")
    _apply(net("isolated"), admin, "ip-dhcp-range", "delete", key="10.10.0.200")
    assert "10.10.0.200" not in _host_xml(demo_uri, "isolated")


def test_dns_host_txt_and_srv_records_are_added_and_deleted(net, admin, demo_uri):
    network = net("isolated")
    _apply(network, admin, "dns-host", "add-last", {"ip": "10.10.0.60", "hostnames": "db, db.lab"})
    _apply(network, admin, "dns-txt", "add-last", {"name": "owner", "value": 'team <ops> & "friends"'})
    _apply(
        network, admin, "dns-srv", "add-last", {"service": "ldap", "protocol": "tcp", "target": "db.lab", "port": "389"}
    )
    xml_text = _host_xml(demo_uri, "isolated")
    assert (
        "<hostname>db.lab</hostname>" in xml_text
        and "team &lt;ops&gt;" in xml_text
        and "service='ldap'" in xml_text.replace('"', "'")
    )
    kinds = sorted(net("isolated").dns_records.values_list("kind", flat=True))
    assert kinds == ["host", "srv", "txt"]
    with pytest.raises(ValidationError, match="already has a DNS host"):
        network_update_preview(
            network=net("isolated"),
            section="dns-host",
            command="add-last",
            values={"ip": "10.10.0.60", "hostnames": "x"},
        )
    _apply(net("isolated"), admin, "dns-host", "delete", key="10.10.0.60")
    _apply(net("isolated"), admin, "dns-txt", "delete", key="owner")
    _apply(net("isolated"), admin, "dns-srv", "delete", key="ldap")
    assert not net("isolated").dns_records.exists()


def test_portgroups_are_added_modified_and_deleted(net, admin, demo_uri):
    _apply(net("sriov-pool"), admin, "portgroup", "add-last", {"name": "tenant-c", "vlan_tags": "103"})
    _apply(
        net("sriov-pool"), admin, "portgroup", "modify", {"vlan_tags": "104", "inbound_average": "1000"}, key="tenant-c"
    )
    pg = net("sriov-pool").portgroups.get(name="tenant-c")
    assert pg.vlan_tags == [104] and pg.inbound_average == 1000
    _apply(net("sriov-pool"), admin, "portgroup", "delete", key="tenant-c")
    assert not net("sriov-pool").portgroups.filter(name="tenant-c").exists()


def test_portgroup_rules_libvirt_would_break_on_are_checked_first(net):
    with pytest.raises(ValidationError, match="only on SR-IOV"):
        network_update_preview(
            network=net("default"), section="portgroup", command="add-last", values={"name": "v", "vlan_tags": "5"}
        )
    with pytest.raises(ValidationError, match="already the default"):
        network_update_preview(
            network=net("default"), section="portgroup", command="add-last", values={"name": "d2", "is_default": "on"}
        )


def test_forward_interfaces_are_added_and_removed(net, admin, demo_uri):
    _apply(net("macvtap"), admin, "forward-interface", "add-last", {"dev": "eth2"})
    assert "dev='eth2'" in _host_xml(demo_uri, "macvtap").replace('"', "'")
    _apply(net("macvtap"), admin, "forward-interface", "delete", key="eth2")
    assert "eth2" not in _host_xml(demo_uri, "macvtap")
    with pytest.raises(ValidationError, match="isolated network has no forward"):
        network_update_preview(
            network=net("isolated"), section="forward-interface", command="add-last", values={"dev": "eth2"}
        )


def test_an_inactive_network_is_changed_in_its_config_only(net, admin, demo_uri):
    network = net("routed")
    client.connect(demo_uri).networkLookupByName("routed").destroy()
    Network.objects.filter(pk=network.pk).update(active=False)
    network.refresh_from_db()
    preview = network_update_preview(
        network=network,
        section="ip-dhcp-host",
        command="add-last",
        values={"mac": "52:54:00:00:03:03", "ip": "10.20.0.33"},
    )
    assert preview.scope == "config" and preview.effect.code == "config-only"
    with pytest.raises(ValidationError, match="not running"):
        network_update_preview(
            network=network,
            section="ip-dhcp-host",
            command="add-last",
            values={"mac": "52:54:00:00:03:03", "ip": "10.20.0.33"},
            scope="live",
        )


def test_a_running_only_change_warns_that_it_is_lost_at_restart(net):
    preview = network_update_preview(
        network=net("default"), section="dns-txt", command="add-last", values={"name": "x", "value": "y"}, scope="live"
    )
    assert preview.effect.code == "dnsmasq-restart"
    assert any("lost" in w for w in preview.warnings)


def test_the_worker_checks_again_and_refuses_if_the_host_changed_meanwhile(net, admin, demo_uri):
    operation = network_request_update(
        network=net("default"), section="ip-dhcp-host", command="add-last",
        values={"mac": "52:54:00:00:04:04", "ip": "192.168.122.44"}, actor=admin, source="web",
    )  # fmt: skip
    # Someone reserves the same address directly on the host before the worker runs.
    client.connect(demo_uri).networkLookupByName("default").update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
        libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
        0,
        "<host mac='52:54:00:00:05:05' ip='192.168.122.44'/>",
        libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE,
    )
    before = _host_xml(demo_uri, "default")
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.FAILED and "changed since the request" in finished.error
    assert _host_xml(demo_uri, "default") == before
