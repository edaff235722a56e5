"""Guest interfaces on the demo fleet (the test driver): checks of every field, MACs unique
across the fleet, role refusals, and changes to a stopped guest's config by redefinition.
Live changes are proved on the real daemon (tests/realvirt/test_guest_interfaces_real.py)."""

import pytest
from django.core.exceptions import ValidationError

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client
from networks.models import AuditEvent, Guest, NodeDevice, Operation
from networks.services import hosts as host_services
from networks.services import macs
from networks.services.interfaces import (
    ADD,
    CONFIG_ONLY,
    HOTPLUG,
    IN_PLACE,
    REMOVE,
    REPLUG,
    UPDATE,
    guest_interface_request,
    interface_plan,
)
from networks.services.permissions import PermissionDenied
from tests.conftest import run_to_end
from tests.factories import UserFactory

WEB = AuditSource.WEB


def _q(text: str) -> str:
    """XML as libvirt writes it (single quotes), for comparing with the XML kvmweb builds."""
    return text.replace('"', "'")


def _guest(host, name):
    return Guest.objects.select_related("host").get(host=host, name=name)


def _refused(guest, values, field, action=ADD, mac=""):
    """The request is refused on `field` and creates no Operation; returns the message."""
    before = Operation.objects.count()
    with pytest.raises(ValidationError) as refused:
        guest_interface_request(action=action, guest=guest, values=values, mac=mac, actor=None, source="system")
    assert field in refused.value.message_dict, refused.value.message_dict
    assert Operation.objects.count() == before
    return " ".join(refused.value.message_dict[field])


def _request(guest, values, actor, action=ADD, mac=""):
    operation = guest_interface_request(action=action, guest=guest, values=values, mac=mac, actor=actor, source=WEB)
    return run_to_end(operation.pk)


# ---------------------------------------------------------------- a stopped guest, by redefinition


def test_an_interface_added_to_a_stopped_guest_is_in_its_config(demo_host, admin, demo_uri):
    build01 = _guest(demo_host, "build01")
    finished = _request(build01, {"source_type": "network", "source": "default", "model": "e1000"}, admin)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    mac = finished.params["mac"]
    assert mac.startswith("52:54:00:") and finished.result["method"] == "redefine"
    config = client.connect(demo_uri).lookupByName("build01").XMLDesc(0)
    assert f"<mac address='{mac}'/>" in config and "<source network='default'/>" in config
    row = build01.interfaces.get(mac=mac)
    assert (row.source, row.model, row.network.name) == ("default", "e1000", "default")
    done = AuditEvent.objects.get(operation=finished, action="guest.interface_add.succeeded")
    assert done.object_type == "guest" and done.object_name == "build01"
    assert mac not in done.before_xml and mac in done.after_xml


def test_a_stopped_guest_changes_only_its_config(demo_host):
    build01 = _guest(demo_host, "build01")
    for scope in ("live", "both"):
        message = _refused(build01, {"source": "default", "scope": scope}, "scope")
        assert "not running" in message
    plan = interface_plan(action=ADD, guest=build01, values={"source": "default"})
    assert plan.scope == "config" and plan.effect == CONFIG_ONLY


def test_a_stopped_guests_interface_moves_and_changes_model_by_redefinition(demo_host, admin, demo_uri):
    build01 = _guest(demo_host, "build01")
    values = {"source": "default", "portgroup": "dev", "model": "rtl8139", "link": "down"}
    finished = _request(build01, values, admin, action=UPDATE, mac="52:54:00:0C:00:41")
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    assert finished.result["method"] == "redefine"
    config = client.connect(demo_uri).lookupByName("build01").XMLDesc(0)
    assert "<source network='default' portgroup='dev'/>" in config
    assert "<model type='rtl8139'/>" in config and "<link state='down'/>" in config
    row = build01.interfaces.get(mac="52:54:00:0c:00:41")
    assert (row.source, row.portgroup, row.model) == ("default", "dev", "rtl8139")


def test_an_interface_removed_from_a_stopped_guest_is_gone(demo_host, admin, demo_uri):
    build01 = _guest(demo_host, "build01")
    finished = _request(build01, {}, admin, action=REMOVE, mac="52:54:00:0c:00:41")
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    assert "52:54:00:0c:00:41" not in client.connect(demo_uri).lookupByName("build01").XMLDesc(0)
    assert not build01.interfaces.exists()
    events = AuditEvent.objects.filter(operation=finished).order_by("pk")
    assert [e.action for e in events] == ["guest.interface_remove.requested", "guest.interface_remove.succeeded"]
    assert "52:54:00:0c:00:41" in events[0].before_xml and "52:54:00:0c:00:41" not in events[1].after_xml


def test_a_running_guest_cannot_change_live_on_the_test_driver(demo_host, admin):
    web01 = _guest(demo_host, "web01")
    finished = _request(web01, {"link": "down"}, admin, action=UPDATE, mac="52:54:00:0a:00:11")
    assert finished.status == OperationStatus.FAILED
    assert "not supported by the connection driver" in finished.error
    assert web01.interfaces.get(mac="52:54:00:0a:00:11").link_state != "down"
    added = _request(web01, {"source": "isolated"}, admin)
    assert added.status == OperationStatus.FAILED and "virDomainAttachDeviceFlags" in added.error


# ---------------------------------------------------------------- MACs


def test_a_typed_mac_is_normalised(demo_host):
    plan = interface_plan(
        action=ADD, guest=_guest(demo_host, "build01"), values={"source": "default", "mac": "52-54-00-AB-CD-EF"}
    )
    assert plan.mac == "52:54:00:ab:cd:ef" and "52:54:00:ab:cd:ef" in _q(plan.after_xml)


@pytest.mark.parametrize(
    "bad", ["52:54:00:ab:cd", "01:00:5e:00:00:01", "00:00:00:00:00:00", "zz:54:00:ab:cd:ef", ["x"]]
)
def test_a_mac_that_is_not_a_unicast_mac_is_refused(demo_host, bad):
    _refused(_guest(demo_host, "build01"), {"source": "default", "mac": bad}, "mac")


def test_a_mac_held_by_a_guest_of_another_host_is_refused_naming_it(demo_host, default_uri, admin):
    other = host_services.host_create(name="other", uri=default_uri, actor=None, source="system")
    run_to_end(other.operations.get().pk)
    taken = Guest.objects.get(host=other, name="test").interfaces.first().mac
    message = _refused(_guest(demo_host, "build01"), {"source": "default", "mac": taken.upper()}, "mac")
    assert message == f"MAC {taken} is already used by guest test on host other."
    same_host = _refused(_guest(demo_host, "build01"), {"source": "default", "mac": "52:54:00:0a:00:11"}, "mac")
    assert "guest web01 on host demo" in same_host


def test_a_clash_on_a_host_outside_the_users_scope_does_not_name_it(demo_host, default_uri):
    from networks.services.permissions import role_set

    other = host_services.host_create(name="other", uri=default_uri, actor=None, source="system")
    run_to_end(other.operations.get().pk)
    taken = Guest.objects.get(host=other, name="test").interfaces.first().mac
    scoped = UserFactory(username="demo-op", role="viewer")
    role_set(user=scoped, role="operator", host_names=["demo"], actor=None, source="system")
    with pytest.raises(ValidationError) as refused:
        guest_interface_request(
            action=ADD, guest=_guest(demo_host, "build01"), values={"source": "default", "mac": taken}, actor=scoped,
            source=WEB,
        )  # fmt: skip
    assert refused.value.message_dict["mac"] == [f"MAC {taken} is already used by another guest."]


def test_a_generated_mac_skips_every_mac_the_fleet_uses(demo_host, monkeypatch):
    # web01's MAC comes up first, then a reserved one, then a free one
    draws = iter([bytes([0x0A, 0x00, 0x11]), bytes([0x0C, 0x00, 0x31]), bytes([0x77, 0x66, 0x55])])
    monkeypatch.setattr(macs.secrets, "token_bytes", lambda n: next(draws))
    assert macs.generate_mac() == "52:54:00:77:66:55"


def test_generated_macs_are_in_libvirts_range_and_differ(db):
    generated = {macs.generate_mac() for _ in range(50)}
    assert len(generated) == 50 and all(mac.startswith("52:54:00:") for mac in generated)


def test_a_mac_with_a_reservation_but_no_guest_is_accepted_with_a_warning(demo_host):
    # web02 is reserved on default but no guest has its MAC yet
    values = {"source": "default", "mac": "52:54:00:0a:00:12"}
    plan = interface_plan(action=ADD, guest=_guest(demo_host, "build01"), values=values)
    assert plan.mac == "52:54:00:0a:00:12"
    assert plan.warnings[-1] == (
        "52:54:00:0a:00:12 has a DHCP reservation (for web02) on default@demo: it gets 192.168.122.12 there."
    )
    draws = iter([bytes([0x0A, 0x00, 0x12]), bytes([0x0A, 0x00, 0x13])])
    macs.secrets.token_bytes, saved = (lambda n: next(draws)), macs.secrets.token_bytes
    try:
        assert macs.generate_mac() == "52:54:00:0a:00:13", "a generated MAC never takes a reserved one"
    finally:
        macs.secrets.token_bytes = saved


def test_a_mac_a_queued_add_is_giving_a_guest_is_refused_naming_that_operation(demo_host, admin):
    build01 = _guest(demo_host, "build01")
    values = {"source": "default", "mac": "52:54:00:ab:00:01"}
    queued = guest_interface_request(action=ADD, guest=build01, values=dict(values), actor=admin, source=WEB)
    assert queued.status == OperationStatus.QUEUED and queued.params["mac"] == "52:54:00:ab:00:01"
    message = _refused(_guest(demo_host, "db01"), {**values, "mac": "52-54-00-AB-00-01"}, "mac")
    assert message == (
        f"MAC 52:54:00:ab:00:01 is being added to guest build01 on host demo by operation #{queued.pk} (queued)."
    )
    Operation.objects.filter(pk=queued.pk).update(status=OperationStatus.RUNNING)
    assert f"by operation #{queued.pk} (running)." in _refused(build01, values, "mac")
    Operation.objects.filter(pk=queued.pk).update(status=OperationStatus.FAILED)
    again = guest_interface_request(action=ADD, guest=build01, values=dict(values), actor=admin, source=WEB)
    assert again.params["mac"] == "52:54:00:ab:00:01", "a failed add holds its MAC no more"


def test_a_pending_add_outside_the_users_scope_is_not_named(demo_host, default_uri, admin):
    from networks.services.permissions import role_set

    other = host_services.host_create(name="other", uri=default_uri, actor=None, source="system")
    run_to_end(other.operations.get().pk)
    guest_interface_request(
        action=ADD, guest=Guest.objects.get(host=other, name="test"), actor=admin, source=WEB,
        values={"source": "default", "mac": "52:54:00:ab:00:02"},
    )  # fmt: skip
    scoped = UserFactory(username="demo-op", role="viewer")
    role_set(user=scoped, role="operator", host_names=["demo"], actor=None, source="system")
    with pytest.raises(ValidationError) as refused:
        guest_interface_request(
            action=ADD, guest=_guest(demo_host, "build01"), values={"source": "default", "mac": "52:54:00:ab:00:02"},
            actor=scoped, source=WEB,
        )  # fmt: skip
    assert refused.value.message_dict["mac"] == [
        "MAC 52:54:00:ab:00:02 is being added to another guest by an operation not yet finished."
    ]


def test_a_generated_mac_skips_the_mac_of_a_queued_add(demo_host, admin, monkeypatch):
    build01 = _guest(demo_host, "build01")
    guest_interface_request(
        action=ADD, guest=build01, values={"source": "default", "mac": "52:54:00:ab:00:03"}, actor=admin, source=WEB
    )
    draws = iter([bytes([0xAB, 0x00, 0x03]), bytes([0xAB, 0x00, 0x04])])
    monkeypatch.setattr(macs.secrets, "token_bytes", lambda n: next(draws))
    generated = guest_interface_request(action=ADD, guest=build01, values={"source": "default"}, actor=admin,
                                        source=WEB)  # fmt: skip
    assert generated.params["mac"] == "52:54:00:ab:00:04"


@pytest.fixture
def _not_enqueued(monkeypatch):
    """Committed operations stay queued (no broker here)."""
    from networks.services import operations

    monkeypatch.setattr(operations, "enqueue", lambda operation: None)


@pytest.fixture
def committed_demo_host(_not_enqueued, demo_host):
    return demo_host


@pytest.mark.django_db(transaction=True)
def test_two_adds_of_one_mac_at_the_same_time_queue_one_operation(committed_demo_host, admin, monkeypatch):
    """Both requests are held for a second between the MAC check and the Operation: the second
    waits for the first's transaction, then sees its operation."""
    import threading
    import time

    from django.db import connection

    checked = macs.check_mac_free

    def slow_check(*args, **kwargs):
        checked(*args, **kwargs)
        time.sleep(1.0)  # the window another request would slip through

    monkeypatch.setattr(macs, "check_mac_free", slow_check)
    build01 = _guest(committed_demo_host, "build01")
    start, outcomes = threading.Barrier(2), []

    def add():
        try:
            start.wait()
            values = {"source": "default", "mac": "52:54:00:ab:00:05"}
            guest_interface_request(action=ADD, guest=build01, values=values, actor=admin, source=WEB)
            outcomes.append("queued")
        except ValidationError as error:
            outcomes.append(" ".join(error.message_dict["mac"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=add) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    queued = Operation.objects.get(params__mac="52:54:00:ab:00:05")
    assert sorted(outcomes) == [
        f"MAC 52:54:00:ab:00:05 is being added to guest build01 on host demo by operation #{queued.pk} (queued).",
        "queued",
    ]


def test_a_typed_mac_the_fleet_knows_outside_guests_is_accepted_with_warnings_naming_each(demo_host, admin):
    from networks.models import DhcpLease, Network, PortForward

    default = Network.objects.get(host=demo_host, name="default")
    DhcpLease.objects.create(network=default, mac="52:54:00:ab:00:06", address="192.168.122.66", hostname="laptop")
    NodeDevice.objects.filter(host=demo_host, net_interface="eth0").update(net_mac="52:54:00:ab:00:07")
    forward = PortForward.objects.create(
        host=demo_host, host_port_start=8080, host_port_end=8080, guest_name="gone01", guest_mac="52:54:00:ab:00:08",
        guest_port_start=80, guest_port_end=80,
    )  # fmt: skip
    build01 = _guest(demo_host, "build01")

    def warned(mac):
        plan = interface_plan(action=ADD, guest=build01, values={"source": "default", "mac": mac}, actor=admin)
        assert plan.mac == mac
        return plan.warnings

    assert warned("52:54:00:ab:00:06") == (
        "52:54:00:ab:00:06 holds a DHCP lease of 192.168.122.66 (hostname laptop) on default@demo: "
        "another machine uses this MAC.",
    )
    assert warned("52:54:00:ab:00:07") == (
        "52:54:00:ab:00:07 is the MAC of host NIC eth0 on demo: two NICs with one MAC on a segment confuse its "
        "switches.",
    )
    assert warned("52:54:00:ab:00:08") == (
        f"52:54:00:ab:00:08 is the guest MAC of port forward #{forward.pk} on demo (to guest gone01).",
    )
    assert warned("52:54:00:ab:00:09") == ()
    assert _refused(build01, {"source": "default", "mac": "52:54:00:0a:00:11"}, "mac") == (
        "MAC 52:54:00:0a:00:11 is already used by guest web01 on host demo."
    ), "a MAC a guest holds is still refused"


def test_warnings_about_a_typed_mac_name_nothing_outside_the_users_scope(demo_host, default_uri):
    from networks.models import DhcpLease, Network
    from networks.services.permissions import role_set

    other = host_services.host_create(name="other", uri=default_uri, actor=None, source="system")
    run_to_end(other.operations.get().pk)
    network = Network.objects.filter(host=other).first()
    DhcpLease.objects.create(network=network, mac="52:54:00:ab:00:0a", address="192.168.124.10", hostname="secret")
    scoped = UserFactory(username="demo-op", role="viewer")
    role_set(user=scoped, role="operator", host_names=["demo"], actor=None, source="system")
    values = {"source": "default", "mac": "52:54:00:ab:00:0a"}
    plan = interface_plan(action=ADD, guest=_guest(demo_host, "build01"), values=values, actor=scoped)
    assert plan.warnings == ("52:54:00:ab:00:0a is also known on 1 record(s) of hosts outside your scope.",)


# ---------------------------------------------------------------- validation, field by field


@pytest.mark.parametrize(
    ("values", "field", "says"),
    [
        ({"source_type": "ethernet", "source": "x"}, "source_type", "not one of"),
        ({"source": "nosuch"}, "source", "has no network 'nosuch'"),
        ({"source": ""}, "source", "Name the network"),
        ({"source": "default", "portgroup": "nosuch"}, "portgroup", "no portgroup 'nosuch' (it has: dev, prod)"),
        ({"source_type": "bridge", "source": "br0", "portgroup": "prod"}, "portgroup", "belong to libvirt networks"),
        ({"source": "default", "model": "ne2k_pci"}, "model", "not one of virtio, e1000e, e1000, rtl8139"),
        ({"source": "default", "mode": "vepa"}, "mode", "macvtap only"),
        ({"source_type": "direct", "source": "eth1", "mode": "loop"}, "mode", "not one of"),
        ({"source_type": "direct", "source": "eth7"}, "source", "no interface eth7"),
        ({"source_type": "direct", "source": "eth1; reboot"}, "source", "not a host interface name"),
        ({"source": "default", "link": "sideways"}, "link", "not one of up, down"),
        ({"source": "default", "vlan_tags": [10]}, "vlan_tags", "cannot tag VLANs"),
        ({"source": "lan-bridge", "vlan_tags": [4096]}, "vlan_tags", "0 to 4095"),
        ({"source": "lan-bridge", "vlan_tags": [10, 10]}, "vlan_tags", "once"),
        ({"source": "lan-bridge", "vlan_tags": "ten"}, "vlan_tags", "not a VLAN id"),
        ({"source": "lan-bridge", "vlan_tags": {"id": 1}}, "vlan_tags", "list of VLAN ids"),
        ({"source": "default", "inbound": {"average": 0}}, "inbound", "between 1 and"),
        ({"source": "default", "inbound": {"peak": 100}}, "inbound", "average is required"),
        ({"source": "default", "outbound": {"average": 100, "peak": 50}}, "outbound", "at least the average"),
        ({"source": "default", "outbound": {"average": 100, "rate": 5}}, "outbound", "Unknown key 'rate'"),
        ({"source": "default", "outbound": "fast"}, "outbound", "Give an object"),
        ({"source": "default", "inbound": {"average": True}}, "inbound", "whole number"),
        ({"source": ["default"]}, "source", "not a list"),
        ({"source": "default", "colour": "red"}, "non_field_errors", "Unknown field 'colour'"),
    ],
)
def test_each_bad_field_is_refused_naming_it(demo_host, values, field, says):
    assert says in _refused(_guest(demo_host, "build01"), values, field)


def test_a_body_that_is_not_an_object_is_refused(demo_host):
    for body in ([], "default", 5, None):
        _refused(_guest(demo_host, "build01"), body, "non_field_errors")


def test_vlan_tags_are_taken_on_an_sriov_pool(demo_host):
    plan = interface_plan(
        action=ADD, guest=_guest(demo_host, "build01"), values={"source": "sriov-pool", "vlan_tags": "42"}
    )
    assert "<tag id='42'/>" in _q(plan.after_xml)


def test_vlan_tags_are_taken_on_an_open_vswitch_network(demo_host):
    plan = interface_plan(
        action=ADD, guest=_guest(demo_host, "build01"), values={"source": "lan-bridge", "vlan_tags": [10, 20]}
    )
    assert "<vlan trunk='yes'>" in _q(plan.after_xml) and "<tag id='20'/>" in _q(plan.after_xml)


def test_a_bridge_the_sync_did_not_find_is_refused(demo_host):
    demo_host.host_bridges = ["br0", "br1"]
    demo_host.save()
    build01 = _guest(demo_host, "build01")
    assert "no bridge br9 on demo (bridges: br0, br1)" in _refused(
        build01, {"source_type": "bridge", "source": "br9"}, "source"
    )
    plan = interface_plan(action=ADD, guest=build01, values={"source_type": "bridge", "source": "br1"})
    assert any("wireless uplink" in warning for warning in plan.warnings)


def test_macvtap_on_a_wireless_nic_or_a_bridge_is_refused(demo_host):
    NodeDevice.objects.create(
        host=demo_host, name="net_wlan0", capability="net", net_interface="wlan0",
        xml="<device><name>net_wlan0</name><capability type='net'><interface>wlan0</interface>"
            "<capability type='80211'/></capability></device>",
    )  # fmt: skip
    build01 = _guest(demo_host, "build01")
    assert "wireless" in _refused(build01, {"source_type": "direct", "source": "wlan0"}, "source")
    demo_host.host_bridges = ["br0"]
    demo_host.save()
    assert "is a bridge" in _refused(_guest(demo_host, "build01"), {"source_type": "direct", "source": "br0"}, "source")
    plan = interface_plan(action=ADD, guest=build01, values={"source_type": "direct", "source": "eth1", "mode": "vepa"})
    assert "<source dev='eth1' mode='vepa'/>" in _q(plan.after_xml)


def test_a_stopped_network_takes_only_config_changes(demo_host):
    from networks.models import Network

    Network.objects.filter(host=demo_host, name="isolated").update(active=False)
    web01 = _guest(demo_host, "web01")
    assert "not running" in _refused(web01, {"source": "isolated", "scope": "both"}, "source")
    plan = interface_plan(action=ADD, guest=web01, values={"source": "isolated", "scope": "config"})
    assert any("cannot start until" in warning for warning in plan.warnings)


# ---------------------------------------------------------------- previews of changes


def test_a_preview_says_whether_the_running_guest_notices(demo_host):
    web01 = _guest(demo_host, "web01")
    move = interface_plan(action=UPDATE, guest=web01, mac="52:54:00:0a:00:11", values={"source": "isolated"})
    assert move.effect.startswith(IN_PLACE) and "renews its DHCP lease" in move.effect and not move.replug
    assert move.changes == {"source_type": "network", "source": "isolated", "portgroup": "", "mode": ""}
    assert "<source network='default' portgroup='prod'/>" in _q(move.before_xml)
    assert "<source network='isolated'/>" in _q(move.after_xml)
    model = interface_plan(action=UPDATE, guest=web01, mac="52:54:00:0a:00:11", values={"model": "e1000"})
    assert model.effect == REPLUG and model.replug
    add = interface_plan(action=ADD, guest=web01, values={"source": "isolated"})
    assert add.effect == HOTPLUG and add.scope == "both"


def test_an_update_that_changes_nothing_or_the_mac_is_refused(demo_host):
    web01 = _guest(demo_host, "web01")
    assert "Nothing to change" in _refused(
        web01, {"source": "default"}, "non_field_errors", UPDATE, "52:54:00:0a:00:11"
    )
    assert "cannot be changed" in _refused(web01, {"mac": "52:54:00:0a:00:99"}, "mac", UPDATE, "52:54:00:0a:00:11")
    assert "has no interface" in _refused(web01, {"link": "down"}, "mac", UPDATE, "52:54:00:99:99:99")


def test_a_hostdev_nic_can_be_removed_but_not_changed(demo_host):
    gpu01 = _guest(demo_host, "gpu01")
    assert "hostdev interface" in _refused(gpu01, {"link": "down"}, "mac", UPDATE, "52:54:00:0e:00:51")
    plan = interface_plan(action=REMOVE, guest=gpu01, mac="52:54:00:0e:00:51", values={})
    assert plan.effect.startswith("Hot-unplug") and "<source>" in _q(plan.before_xml)


def test_a_portgroup_change_keeps_the_network(demo_host):
    plan = interface_plan(
        action=UPDATE, guest=_guest(demo_host, "web01"), mac="52:54:00:0a:00:11", values={"portgroup": "dev"}
    )
    assert "<source network='default' portgroup='dev'/>" in _q(plan.after_xml)


def test_bandwidth_and_link_are_set_and_cleared(demo_host):
    web01 = _guest(demo_host, "web01")
    values = {"inbound": {"average": 1000, "peak": 2000, "burst": 512}, "outbound": {"average": 500}, "link": "down"}
    plan = interface_plan(action=UPDATE, guest=web01, mac="52:54:00:0a:00:11", values=values)
    assert "<inbound average='1000' peak='2000' burst='512'/>" in _q(plan.after_xml)
    assert "<outbound average='500'/>" in _q(plan.after_xml) and "<link state='down'/>" in _q(plan.after_xml)
    assert plan.changes["inbound"] == {"average": 1000, "peak": 2000, "burst": 512}


# ---------------------------------------------------------------- roles


def test_a_viewer_is_refused_and_the_refusal_audited(demo_host):
    viewer = UserFactory(username="watcher", role="viewer")
    for action, mac in ((ADD, ""), (UPDATE, "52:54:00:0c:00:41"), (REMOVE, "52:54:00:0c:00:41")):
        with pytest.raises(PermissionDenied, match="operator"):
            guest_interface_request(action=action, guest=_guest(demo_host, "build01"), values={"source": "default"},
                                    mac=mac, actor=viewer, source=WEB)  # fmt: skip
    denied = AuditEvent.objects.filter(actor_name="watcher").values_list("action", flat=True)
    assert sorted(denied) == [
        "guest.interface_add.denied",
        "guest.interface_remove.denied",
        "guest.interface_update.denied",
    ]
    assert not Operation.objects.filter(kind__startswith="guest.").exists()


def test_an_operator_may_and_the_operation_locks_the_host(demo_host):
    operator = UserFactory(username="op", role="operator")
    operation = guest_interface_request(action=ADD, guest=_guest(demo_host, "build01"), values={"source": "default"},
                                        actor=operator, source=WEB)  # fmt: skip
    assert operation.lock_key == f"host:{demo_host.pk}" and operation.target_name == "build01"
    requested = AuditEvent.objects.get(operation=operation)
    assert requested.action == "guest.interface_add.requested" and requested.object_type == "guest"
    assert "<name>build01</name>" in requested.before_xml
