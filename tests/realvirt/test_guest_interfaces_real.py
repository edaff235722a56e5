"""Guest interfaces changed live through kvmweb, proved from inside a real guest.

One guest boots on network A (its eth0: the tests reach it there). kvmweb plugs a second
NIC into network B: the guest gets a lease on B. kvmweb moves that NIC to network C: the
guest renews and gets a lease on C, and libvirt's port is on C. Link down: the NIC stops
answering from the host side; link up: it answers again. A new model: unplugged and plugged
with its MAC and PCI address kept. Removed: the guest loses it. Every step is an Operation
whose audit events carry the guest XML before and after. Times are printed, not bounded.
"""

import ipaddress
import time

import pytest

from networks.choices import AuditSource
from networks.hypervisor import guests as hv_guests
from networks.hypervisor import restart as hv_restart
from networks.hypervisor import xml
from networks.models import AuditEvent, Guest
from networks.services.interfaces import ADD, REMOVE, UPDATE, guest_interface_request

from .connectivity import Pinger
from .guests import boot_guest, wait_for_lease_marker
from .kvmweb_setup import nat_network_xml, registered_host, run_ok

pytestmark = pytest.mark.realvirt
SUBNETS = {"kvif-a": "10.83.0", "kvif-b": "10.84.0", "kvif-c": "10.85.0"}
GUEST = "nic-guest"


def _in(subnet: str, address: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(f"{subnet}.0/24")


@pytest.fixture(scope="module")
def booted(private_libvirtd, guest_image):
    """Three NAT networks and one guest on the first, booted once for the module."""
    conn = private_libvirtd.connect()
    for name, subnet in SUBNETS.items():
        conn.networkDefineXML(nat_network_xml(name, f"{name.replace('-', '')}0", subnet)).create()
    guest = boot_guest(conn, GUEST, guest_image, private_libvirtd.scratch / "guests" / "nics", network="kvif-a")
    try:
        guest.wait_for_lease(timeout=90)
        yield conn, guest
    finally:
        conn.close()
        private_libvirtd.reset()


@pytest.fixture
def kvmweb(db, private_libvirtd, booted):
    with registered_host(private_libvirtd, "kvm-nics") as (host, admin):

        def change(action, values, mac=""):
            guest = Guest.objects.select_related("host").get(host=host, name=GUEST)
            request = guest_interface_request(
                action=action, guest=guest, values=values, mac=mac, actor=admin, source=AuditSource.WEB
            )
            started = time.monotonic()
            finished = run_ok(request)
            return finished, time.monotonic() - started

        yield host, change


def _live_interface(conn, mac: str):
    return hv_guests.find_interface(conn.lookupByName(GUEST).XMLDesc(0), mac)


def _audited(operation, kind: str, text: str) -> None:
    """The outcome event holds the guest XML before and after, and `text` only after."""
    done = AuditEvent.objects.get(operation=operation, action=f"guest.{kind}.succeeded")
    assert f"<name>{GUEST}</name>" in done.before_xml and f"<name>{GUEST}</name>" in done.after_xml
    assert text not in done.before_xml and text in done.after_xml
    requested = AuditEvent.objects.get(operation=operation, action=f"guest.{kind}.requested")
    assert f"<name>{GUEST}</name>" in requested.before_xml


def test_a_nic_is_added_moved_set_down_replugged_and_removed_live(kvmweb, booted, private_libvirtd):
    host, change = kvmweb
    conn, guest = booted

    # added live on network B: the guest sees a new NIC and gets a lease there
    since, asked = guest.log_size(), time.monotonic()
    added, add_seconds = change(ADD, {"source": "kvif-b", "scope": "both"})
    mac = added.params["mac"]
    assert added.result["method"] == "hot-plug"
    lease = wait_for_lease_marker(guest.serial_log, timeout=60, nic="eth1", since=since, poll=0.05)
    lease_seconds = time.monotonic() - asked
    assert lease.mac == mac and _in(SUBNETS["kvif-b"], lease.ip)
    assert hv_restart.ports_by_mac(conn, "kvif-b").get(mac) == GUEST
    assert f"<mac address='{mac}'/>" in conn.lookupByName(GUEST).XMLDesc(2)  # the persistent config has it too
    assert Guest.objects.get(host=host, name=GUEST).interfaces.get(mac=mac).network.name == "kvif-b"
    _audited(added, "interface_add", mac)

    # moved live to network C: libvirt's port moves; the guest renews and gets a lease on C
    pci_before = xml.pci_address(_live_interface(conn, mac).find("address"))
    moved, move_seconds = change(UPDATE, {"source": "kvif-c"}, mac)
    method = moved.result["live_method"]
    assert hv_restart.ports_by_mac(conn, "kvif-c").get(mac) == GUEST
    assert mac not in hv_restart.ports_by_mac(conn, "kvif-b")
    since = guest.log_size()
    if method == hv_guests.IN_PLACE:  # the guest saw nothing: ask it to DHCP again on eth1
        guest.release_renew(private_libvirtd, nic="eth1")
    renewed = time.monotonic()
    lease = wait_for_lease_marker(guest.serial_log, timeout=60, nic="eth1", since=since, poll=0.05)
    renew_seconds = time.monotonic() - renewed
    assert _in(SUBNETS["kvif-c"], lease.ip)
    assert "kvif-c" in xml.to_string(_live_interface(conn, mac).find("source"))
    _audited(moved, "interface_update", "network='kvif-c'")

    # link down: the NIC stops answering from the host side; link up: it answers again
    with Pinger(private_libvirtd.netns, lease.ip) as pinger:
        assert pinger.wait_for_reply(timeout=10), "eth1 answered before its link went down"
        down, down_seconds = change(UPDATE, {"link": "down"}, mac)
        assert down.result["live_method"] == hv_guests.IN_PLACE
        went_down = time.monotonic()
        time.sleep(3)
        assert pinger.answered_between(went_down + 0.5, time.monotonic()) == 0, "a link-down NIC still answered"
        up, up_seconds = change(UPDATE, {"link": "up"}, mac)
        assert pinger.wait_for_reply(timeout=10), "eth1 did not answer again after link up"
    assert Guest.objects.get(host=host, name=GUEST).interfaces.get(mac=mac).link_state in ("up", "")

    # a new model cannot change in place: unplugged and plugged, keeping MAC and PCI address
    replugged, replug_seconds = change(UPDATE, {"model": "e1000", "scope": "live"}, mac)
    assert replugged.result["live_method"] == hv_guests.REPLUG
    live = _live_interface(conn, mac)
    assert live.xpath("string(model/@type)") == "e1000"
    assert xml.pci_address(live.find("address")) == pci_before

    # removed live and from the config: gone from the guest
    removed, remove_seconds = change(REMOVE, {}, mac)
    assert removed.result["method"] == "hot-unplug"
    assert _live_interface(conn, mac) is None
    assert "eth1" not in guest.addresses(private_libvirtd)
    assert not Guest.objects.get(host=host, name=GUEST).interfaces.filter(mac=mac).exists()

    print(
        f"\nMEASURED operation run times: add {add_seconds:.2f} s, move {move_seconds:.2f} s ({method}), "
        f"link down {down_seconds:.2f} s, link up {up_seconds:.2f} s, model change {replug_seconds:.2f} s "
        f"(detach + attach {replugged.result['seconds']:.2f} s), remove {remove_seconds:.2f} s; "
        f"request to first lease on the hot-plugged NIC {lease_seconds:.2f} s, renew on the new network "
        f"{renew_seconds:.2f} s"
    )


def test_a_replug_records_the_old_nic_first_and_recovery_plugs_the_new_one(kvmweb, booted):
    from datetime import timedelta

    from django.utils import timezone

    from networks.models import Operation
    from networks.services.operations import Progress, operation_claim, operation_recover_lost

    host, change = kvmweb
    conn, _guest = booted
    added, _seconds = change(ADD, {"source": "kvif-b", "scope": "live"})
    mac = added.params["mac"]
    old = xml.to_string(_live_interface(conn, mac))
    pci = xml.pci_address(_live_interface(conn, mac).find("address"))
    new = hv_guests.build_interface(hv_guests.InterfaceSettings("network", "kvif-b", mac, "e1000"), old)

    seen = []
    hv_guests.change_live(conn, GUEST, new, replug=True, checkpoint=lambda **state: seen.append(
        (_live_interface(conn, mac) is not None, state)))  # fmt: skip
    assert seen and seen[0][0], "the old interface is recorded while it is still plugged in"
    assert seen[0][1]["old_interface_xml"] == old and seen[0][1]["replugging"]

    # a worker killed between the detach and the attach of a model change (the mirror still says virtio)
    guest = Guest.objects.select_related("host").get(host=host, name=GUEST)
    request = guest_interface_request(action=UPDATE, guest=guest, values={"model": "rtl8139", "scope": "live"},
                                      mac=mac, actor=None, source=AuditSource.SYSTEM)  # fmt: skip
    operation = operation_claim(request.pk)
    current = xml.to_string(_live_interface(conn, mac))
    wanted = hv_guests.build_interface(hv_guests.InterfaceSettings("network", "kvif-b", mac, "rtl8139"), current)
    Progress(operation).checkpoint(old_interface_xml=current, new_interface_xml=wanted, replugging=True)
    conn.lookupByName(GUEST).detachDeviceFlags(current, hv_guests.LIVE)
    deadline = time.monotonic() + 10
    while _live_interface(conn, mac) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _live_interface(conn, mac) is None

    Operation.objects.filter(pk=operation.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert operation_recover_lost(stale_after=timedelta(seconds=30)) == 1
    recovered = Operation.objects.get(pk=operation.pk)
    assert recovered.status == "succeeded", recovered.error
    assert recovered.step == "Interrupted; the new NIC was plugged in by recovery"
    live = _live_interface(conn, mac)
    assert live.xpath("string(model/@type)") == "rtl8139" and xml.pci_address(live.find("address")) == pci
    assert Guest.objects.get(host=host, name=GUEST).interfaces.get(mac=mac).model == "rtl8139"
    change(REMOVE, {}, mac)


def test_a_nic_on_a_host_bridge_gets_a_lease_from_what_serves_that_bridge(kvmweb, booted):
    host, change = kvmweb
    _conn, guest = booted
    assert "kvifc0" in host.host_bridges  # the sync lists the host's bridges, libvirt's own included
    since = guest.log_size()
    added, _seconds = change(ADD, {"source_type": "bridge", "source": "kvifc0", "scope": "live"})
    assert any("wireless uplink" in warning for warning in added.params["warnings"])
    lease = wait_for_lease_marker(guest.serial_log, timeout=60, nic="eth1", since=since, poll=0.05)
    assert lease.mac == added.params["mac"] and _in(SUBNETS["kvif-c"], lease.ip)
    change(REMOVE, {}, added.params["mac"])


def test_a_replug_the_paused_guest_cannot_acknowledge_says_the_nic_will_go_and_how_to_plug_it_in(
    kvmweb, booted, monkeypatch
):
    """A paused guest cannot answer an unplug: libvirt has asked, and the NIC goes once the
    guest runs again. The run waits (here 1 + 2 s), then fails saying so, with the XML to plug
    the changed NIC in again; that XML, attached after the NIC went, plugs it in."""
    from networks.services.operations import operation_run

    host, change = kvmweb
    conn, _guest = booted
    added, _seconds = change(ADD, {"source": "kvif-b", "scope": "live"})
    mac = added.params["mac"]
    monkeypatch.setattr(hv_guests, "DETACH_WAIT_S", 1.0)
    monkeypatch.setattr(hv_guests, "DETACH_GRACE_S", 2.0)
    dom = conn.lookupByName(GUEST)
    guest = Guest.objects.select_related("host").get(host=host, name=GUEST)
    request = guest_interface_request(action=UPDATE, guest=guest, values={"model": "e1000", "scope": "live"},
                                      mac=mac, actor=None, source=AuditSource.SYSTEM)  # fmt: skip
    dom.suspend()
    try:
        finished = operation_run(request.pk)
        assert _live_interface(conn, mac) is not None, "the unplug is still pending while the guest is paused"
    finally:
        dom.resume()
    assert finished.status == "failed"
    assert finished.error == (
        f"Detach pending: {GUEST} has not released interface {mac} within 3 s; the NIC will disappear when the "
        "guest releases it; re-add it (virsh attach-device --live) with this interface XML:"
    )
    assert finished.result["detach_pending"] is True and finished.result["live_method"] == hv_guests.REPLUG
    plug = xml.parse(finished.result["interface_xml"])
    assert plug.xpath("string(mac/@address)") == mac and plug.xpath("string(model/@type)") == "e1000"
    assert "waiting 2 s more" in finished.log and finished.result["interface_xml"] in finished.log

    deadline = time.monotonic() + 30
    while _live_interface(conn, mac) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _live_interface(conn, mac) is None, "the guest, running again, let the NIC go"
    dom.attachDeviceFlags(finished.result["interface_xml"], hv_guests.LIVE)
    assert _live_interface(conn, mac).xpath("string(model/@type)") == "e1000"
    change(REMOVE, {"scope": "live"}, mac)


def test_a_replug_waits_for_a_guest_slower_than_the_first_wait(kvmweb, booted, monkeypatch):
    """The guest is paused for 7.5 s: libvirt's detach call waits 5 s for the guest itself, the run's
    first wait is 1 s here; the run waits on, and once the guest runs the new NIC is plugged in."""
    import threading

    host, change = kvmweb
    conn, _guest = booted
    added, _seconds = change(ADD, {"source": "kvif-b", "scope": "live"})
    mac = added.params["mac"]
    monkeypatch.setattr(hv_guests, "DETACH_WAIT_S", 1.0)
    dom = conn.lookupByName(GUEST)
    dom.suspend()
    resume = threading.Timer(7.5, dom.resume)  # a libvirt call only: the database stays in this thread
    resume.start()
    try:
        replugged, _seconds = change(UPDATE, {"model": "e1000", "scope": "live"}, mac)
    finally:
        resume.join()
    assert replugged.result["live_method"] == hv_guests.REPLUG
    assert "waiting 60 s more" in replugged.log
    assert _live_interface(conn, mac).xpath("string(model/@type)") == "e1000"
    change(REMOVE, {"scope": "live"}, mac)
