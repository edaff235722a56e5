"""Undo from the audit log on the real daemon, with real guests pinged from the host side:
a reservation undone live (dnsmasq keeps running, no guest is cut off), and a bridge change
that needs a restart undone with the guests re-plugged. Then, on a network of its own, an
undo changes only what its event changed: the running network, the persistent config, or both."""

import ipaddress
import time

import libvirt
import pytest

from networks.choices import AuditSource
from networks.hypervisor import networks as hv_networks
from networks.hypervisor import xml
from networks.models import AuditEvent, Network
from networks.services.connections import host_connection
from networks.services.netupdate import network_request_bulk_import, network_request_update
from networks.services.networks import network_request_undefine
from networks.services.sync import mirror_network
from networks.services.undo import ONLY_CONFIG_LIVE_UNDONE, UndoImpossible, undo_plan, undo_request
from networks.services.xmledit import network_request_xml_change

from .connectivity import Pinger
from .kvmweb_setup import guests_on_new_network, nat_network_xml, registered_host, run_ok

pytestmark = pytest.mark.realvirt
NETWORK = "kvundo"
BRIDGE = "kvundo0"
SUBNET = "10.86.0"


@pytest.fixture(scope="module")
def guests(private_libvirtd, guest_image):
    network_xml = nat_network_xml(NETWORK, BRIDGE, SUBNET)
    with guests_on_new_network(private_libvirtd, guest_image, network_xml, ["undo-a", "undo-b"]) as booted:
        yield booted


@pytest.fixture
def kvmweb(db, private_libvirtd, guests):
    with registered_host(private_libvirtd, "kvm-undo") as host_and_admin:
        yield host_and_admin


def _network(host) -> Network:
    return Network.objects.select_related("host").get(host=host, name=NETWORK)


def _outcome(operation) -> AuditEvent:
    return AuditEvent.objects.get(operation_id=operation.pk, action__endswith=".succeeded")


def _dnsmasq_pid(daemon, network: str = NETWORK) -> str:
    return daemon.private_path(f"/run/libvirt/network/{network}.pid").read_text().strip()


def _bridge_value(daemon, name: str) -> str:
    return daemon.exec_in_ns(["cat", f"/sys/class/net/{BRIDGE}/bridge/{name}"]).strip()


def _pingers(daemon, guests):
    pingers = [Pinger(daemon.netns, guest.ip) for guest in guests]
    assert all(p.wait_for_reply(10) for p in pingers), "guests unreachable before the test"
    return pingers


def test_a_reservation_added_then_undone_live_keeps_dnsmasq_and_the_guests(kvmweb, guests, private_libvirtd):
    host, admin = kvmweb
    guest_a, guest_b = guests
    reserve = run_ok(network_request_update(
        network=_network(host), section="ip-dhcp-host", command="add-last",
        values={"mac": guest_a.mac, "ip": f"{SUBNET}.50", "name": "undo-a"}, actor=admin, source=AuditSource.WEB,
    ))  # fmt: skip
    since = guest_a.release_renew(private_libvirtd)
    assert guest_a.wait_for_new_lease(since, timeout=30, ip=f"{SUBNET}.50").ip == f"{SUBNET}.50"

    event = _outcome(reserve)
    assert undo_plan(event).method == "live"
    dnsmasq_before = _dnsmasq_pid(private_libvirtd)
    pingers = [Pinger(private_libvirtd.netns, f"{SUBNET}.50"), Pinger(private_libvirtd.netns, guest_b.ip)]
    assert all(p.wait_for_reply(10) for p in pingers)
    try:
        started = time.monotonic()
        undone = run_ok(undo_request(event, admin, AuditSource.WEB, "reserved by mistake"))
        time.sleep(1)  # a gap would show within this second
        ended = time.monotonic()
    finally:
        for p in pingers:
            p.stop()
    assert undone.result["undoes"] == event.pk and undone.result["applied"] == ["delete ip-dhcp-host"]
    assert _dnsmasq_pid(private_libvirtd) == dnsmasq_before  # told to reload, not restarted
    gaps = [p.longest_gap(started, ended) for p in pingers]
    assert max(gaps) < 0.5, gaps  # neither guest noticed (pings every 50 ms)
    print(f"\nMEASURED live undo: {ended - started - 1:.2f} s, longest ping gap {max(gaps):.2f} s")

    assert f"{SUBNET}.50" not in private_libvirtd.connect().networkLookupByName(NETWORK).XMLDesc(0)
    since = guest_a.release_renew(private_libvirtd)  # the guest renews into the dynamic range again
    lease = guest_a.wait_for_new_lease(since, timeout=30)
    assert (
        ipaddress.ip_address(f"{SUBNET}.100") <= ipaddress.ip_address(lease.ip) <= ipaddress.ip_address(f"{SUBNET}.150")
    )
    outcome = _outcome(undone)
    assert outcome.message == f"Undoes event #{event.pk}: reserved by mistake"
    assert f"{SUBNET}.50" in outcome.before_xml and f"{SUBNET}.50" not in outcome.after_xml


def test_a_bridge_change_undone_with_a_restart_replugs_the_guests(kvmweb, guests, private_libvirtd):
    host, admin = kvmweb
    network = _network(host)
    changed = xml.parse(network.inactive_xml)
    changed.find("bridge").set("delay", "3")  # the bridge's forward delay: only a restart applies it
    edit = run_ok(network_request_xml_change(
        network=network, new_xml=xml.to_string(changed), apply="restart", actor=admin, source=AuditSource.WEB,
    ))  # fmt: skip
    assert _bridge_value(private_libvirtd, "forward_delay") == "300"  # in 1/100 s
    for guest in guests:  # back after the edit's own restart, before the undo is measured
        with Pinger(private_libvirtd.netns, guest.ip) as pinger:
            assert pinger.wait_for_reply(10)

    event = _outcome(edit)
    plan = undo_plan(event)
    assert plan.method == "restart" and {g.name for g in plan.restart.guests} == {"undo-a", "undo-b"}
    pingers = _pingers(private_libvirtd, guests)
    try:
        started = time.monotonic()
        undone = run_ok(undo_request(event, admin, AuditSource.WEB))
        assert all(p.wait_for_reply(5) for p in pingers)  # both guests answer again
        ended = time.monotonic()
    finally:
        for p in pingers:
            p.stop()
    result = undone.result
    assert result["undoes"] == event.pk and result["method"] == "restart"
    assert result["reconnected"] == 2 and result["failed"] == 0
    assert _bridge_value(private_libvirtd, "forward_delay") == "0"
    assert len(private_libvirtd.exec_in_ns(["ls", f"/sys/class/net/{BRIDGE}/brif"]).split()) == 2
    gaps = [p.longest_gap(started, ended) for p in pingers]
    print(f"\nMEASURED restart undo gap per guest: {', '.join(f'{g:.2f} s' for g in gaps)}")
    assert max(gaps) < 5  # back, and quickly (the restart benchmark holds the real target)
    outcome = _outcome(undone)
    assert "delay='3'" in outcome.before_xml or 'delay="3"' in outcome.before_xml


# ---------------------------------------------------------------- the running network, its config, or both

SCOPED = "kvscope"


@pytest.fixture
def scoped(db, private_libvirtd):
    """A running NAT network of its own (no guest: these undos change no running guest), registered."""
    conn = private_libvirtd.connect()
    network = conn.networkDefineXML(nat_network_xml(SCOPED, "kvscope0", "10.87.0"))
    network.create()
    try:
        with registered_host(private_libvirtd, "kvm-scope") as (host, admin):
            yield host, admin, network
    finally:
        if SCOPED in conn.listNetworks() + conn.listDefinedNetworks():  # an undefine test may have removed it
            network = conn.networkLookupByName(SCOPED)
            if network.isActive():
                network.destroy()
            network.undefine()


def _scoped(host) -> Network:
    return Network.objects.select_related("host").get(host=host, name=SCOPED)


def _running(network) -> str:
    return network.XMLDesc(0)


def _config(network) -> str:
    return network.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)


def _reserve(host, admin, name: str, last: int, scope: str) -> AuditEvent:
    values = {"mac": f"52:54:00:87:00:{last:02x}", "ip": f"10.87.0.{last}", "name": name}
    return _outcome(run_ok(network_request_update(
        network=_scoped(host), section="ip-dhcp-host", command="add-last", values=values, scope=scope,
        actor=admin, source=AuditSource.WEB,
    )))  # fmt: skip


def _define(host, admin, change) -> AuditEvent:
    """Save an XML edit as the persistent config of the running network: a restart pending."""
    root = xml.parse(_scoped(host).inactive_xml)
    change(root)
    return _outcome(run_ok(network_request_xml_change(
        network=_scoped(host), new_xml=xml.to_string(root), apply="define", actor=admin, source=AuditSource.WEB,
    )))  # fmt: skip


def _add_defonly(root):
    dhcp = root.find("ip/dhcp")
    dhcp.append(xml.parse("<host mac='52:54:00:87:00:33' ip='10.87.0.33' name='defonly'/>"))


def _delay(network_xml: str) -> str | None:
    return xml.parse(network_xml).find("bridge").get("delay")


def _bridge_delay(root):
    root.find("bridge").set("delay", "3")


def test_a_running_only_reservation_is_undone_on_the_running_network_only(scoped, private_libvirtd):
    host, admin, network = scoped
    _reserve(host, admin, "cfgonly", 61, "config")  # the two configs differ from here on
    event = _reserve(host, admin, "liveonly", 60, "live")
    assert "liveonly" in _running(network) and "liveonly" not in _config(network)
    plan = undo_plan(event)
    assert (plan.method, plan.scope) == ("live", "live")
    assert [(u.command, "liveonly" in u.fragment) for u in plan.live_updates] == [("delete", True)]
    dnsmasq = _dnsmasq_pid(private_libvirtd, SCOPED)
    config_before = _config(network)

    undone = run_ok(undo_request(event, admin, AuditSource.WEB))
    assert "liveonly" not in _running(network)
    assert "cfgonly" not in _running(network)  # the config's own entry is not pushed to the running network
    assert _config(network) == config_before
    assert _dnsmasq_pid(private_libvirtd, SCOPED) == dnsmasq
    assert undone.result["scope"] == "live"
    outcome = _outcome(undone)
    assert "liveonly" in outcome.before_xml and "liveonly" not in outcome.after_xml


def test_a_running_only_change_is_gone_once_the_network_stopped(scoped):
    host, admin, network = scoped
    event = _reserve(host, admin, "liveonly", 60, "live")
    network.destroy()
    mirror_network(host, hv_networks.get_network(host_connection(host), SCOPED))
    with pytest.raises(UndoImpossible, match="running network only.*stopped since"):
        undo_plan(event)


def test_an_entry_saved_with_a_restart_pending_is_undone_in_the_config_only(scoped):
    host, admin, network = scoped
    event = _define(host, admin, _add_defonly)
    assert "defonly" in _config(network) and "defonly" not in _running(network)
    assert _scoped(host).drifted
    plan = undo_plan(event)
    assert (plan.method, plan.scope) == ("live", "config")
    assert [(u.command, "defonly" in u.fragment) for u in plan.live_updates] == [("delete", True)]
    running_before = _running(network)

    undone = run_ok(undo_request(event, admin, AuditSource.WEB))
    assert "defonly" not in _config(network)
    assert _running(network) == running_before
    assert not _scoped(host).drifted  # no restart pending any more
    assert undone.result["scope"] == "config"


def test_a_bridge_change_saved_with_a_restart_pending_is_undone_by_a_define_not_a_restart(scoped, private_libvirtd):
    host, admin, network = scoped
    delay_before = _delay(_config(network))
    event = _define(host, admin, _bridge_delay)
    assert _delay(_config(network)) == "3" and _delay(_running(network)) == delay_before
    plan = undo_plan(event)
    assert (plan.method, plan.scope) == ("define", "config") and plan.restart is None
    dnsmasq, running_before = _dnsmasq_pid(private_libvirtd, SCOPED), _running(network)

    run_ok(undo_request(event, admin, AuditSource.WEB))
    assert _delay(_config(network)) == delay_before
    assert _running(network) == running_before and network.isActive()
    assert _dnsmasq_pid(private_libvirtd, SCOPED) == dnsmasq  # not restarted
    assert not _scoped(host).drifted


def test_a_reservation_on_both_is_undone_on_both_while_a_restart_is_pending(scoped):
    host, admin, network = scoped
    event = _reserve(host, admin, "onboth", 62, "both")
    _define(host, admin, _bridge_delay)  # pending: the running network differs from its config
    plan = undo_plan(event)
    assert (plan.method, plan.scope) == ("live", "both") and plan.changed_since

    run_ok(undo_request(event, admin, AuditSource.WEB))
    assert "onboth" not in _running(network) and "onboth" not in _config(network)
    assert _delay(_config(network)) == "3"  # the pending edit is kept


def test_a_reservation_on_both_already_gone_from_the_running_network_is_undone_in_the_config(scoped):
    host, admin, network = scoped
    event = _reserve(host, admin, "onboth", 62, "both")
    run_ok(network_request_update(
        network=_scoped(host), section="ip-dhcp-host", command="delete", values={}, key="52:54:00:87:00:3e",
        scope="live", actor=admin, source=AuditSource.WEB,
    ))  # fmt: skip
    plan = undo_plan(event)
    assert (plan.method, plan.scope) == ("live", "config") and ONLY_CONFIG_LIVE_UNDONE in plan.notes
    running_before = _running(network)

    run_ok(undo_request(event, admin, AuditSource.WEB))
    assert "onboth" not in _config(network) and _running(network) == running_before


def test_a_running_only_undo_leaves_the_config_alone_even_when_both_have_the_entry(scoped):
    host, admin, network = scoped
    event = _reserve(host, admin, "twice", 63, "live")
    _reserve(host, admin, "twice", 63, "config")  # the same entry saved since: the two configs agree again
    assert not _scoped(host).drifted
    plan = undo_plan(event)
    assert (plan.method, plan.scope) == ("live", "live")

    run_ok(undo_request(event, admin, AuditSource.WEB))
    assert "twice" not in _running(network) and "twice" in _config(network)


def test_a_config_only_undo_leaves_the_running_network_alone_even_when_both_have_the_entry(scoped):
    host, admin, network = scoped
    event = _define(host, admin, _add_defonly)
    run_ok(network_request_update(
        network=_scoped(host), section="ip-dhcp-host", command="add-last", scope="live", actor=admin,
        values={"mac": "52:54:00:87:00:33", "ip": "10.87.0.33", "name": "defonly"}, source=AuditSource.WEB,
    ))  # fmt: skip
    assert not _scoped(host).drifted
    assert (undo_plan(event).method, undo_plan(event).scope) == ("live", "config")

    run_ok(undo_request(event, admin, AuditSource.WEB))
    assert "defonly" in _running(network) and "defonly" not in _config(network)


def test_an_import_saved_to_the_config_is_undone_in_the_config_only(scoped):
    host, admin, network = scoped
    imported = run_ok(network_request_bulk_import(
        network=_scoped(host), csv_text="52:54:00:87:00:46,10.87.0.70,bulk70\n52:54:00:87:00:47,10.87.0.71,bulk71",
        strategy="config", actor=admin, source=AuditSource.WEB,
    ))  # fmt: skip
    assert "bulk70" in _config(network) and "bulk70" not in _running(network)
    plan = undo_plan(_outcome(imported))
    assert (plan.method, plan.scope) == ("live", "config") and len(plan.live_updates) == 2
    running_before = _running(network)

    run_ok(undo_request(_outcome(imported), admin, AuditSource.WEB))
    assert "bulk70" not in _config(network) and "bulk71" not in _config(network)
    assert _running(network) == running_before


def test_an_undefined_running_network_is_defined_again_stopped_with_its_uuid(scoped, private_libvirtd):
    host, admin, network = scoped
    uuid, config = network.UUIDString(), _config(network)
    undefined = _outcome(run_ok(network_request_undefine(network=_scoped(host), actor=admin, source=AuditSource.WEB)))
    conn = private_libvirtd.connect()
    assert SCOPED not in conn.listNetworks() + conn.listDefinedNetworks()
    assert undo_plan(undefined).method == "create"

    run_ok(undo_request(undefined, admin, AuditSource.WEB))
    again = conn.networkLookupByName(SCOPED)
    assert again.UUIDString() == uuid and not again.isActive() and not again.autostart()
    assert _config(again) == config
    assert _scoped(host).uuid == uuid
