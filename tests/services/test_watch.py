"""The event watcher on the test driver: objects changed behind kvmweb's back reach the mirror
without a sync. The watcher shares the demo host's connection, as a host worker does."""

import os
import threading
import time
from datetime import timedelta

import libvirt
import pytest
from django.db import DatabaseError
from django.utils import timezone

from networks.choices import AuditSource, HostStatus, OperationKind, OperationStatus
from networks.forwarding import rules as fw
from networks.hypervisor import client, events
from networks.models import DhcpReservation, Guest, Host, Network, Operation
from networks.services import watch
from tests.factories import HostFactory

LAB_XML = (
    "<network><name>lab</name><bridge name='virbr19' stp='off'/>"
    "<ip address='10.19.0.1' netmask='255.255.255.0'><dhcp>"
    "<range start='10.19.0.10' end='10.19.0.99'/><host mac='52:54:00:19:00:01' ip='10.19.0.5' name='box'/>"
    "</dhcp></ip></network>"
)


def _syncs_run(host) -> int:
    return Operation.objects.filter(host=host, kind=OperationKind.HOST_SYNC, status=OperationStatus.SUCCEEDED).count()


@pytest.fixture
def watcher(demo_host):
    watcher = watch.HostWatcher(demo_host.pk)
    assert watcher.connect()
    yield watcher
    watcher.close()


def test_a_network_defined_behind_kvmwebs_back_is_mirrored_without_a_sync(demo_host, demo_uri, watcher):
    syncs = _syncs_run(demo_host)
    client.connect(demo_uri).networkDefineXML(LAB_XML)
    assert watcher.process(timeout=5) == 1
    lab = Network.objects.get(host=demo_host, name="lab")
    assert lab.bridge == "virbr19" and not lab.active
    assert list(lab.dhcp_reservations.values_list("mac", "address", "name")) == [
        ("52:54:00:19:00:01", "10.19.0.5", "box")
    ]
    assert _syncs_run(demo_host) == syncs, "no sync ran"


def test_an_undefined_network_leaves_the_mirror_and_a_burst_is_handled_once(demo_host, demo_uri, watcher):
    isolated = client.connect(demo_uri).networkLookupByName("isolated")
    isolated.destroy()
    isolated.undefine()  # two events within the debounce window: one re-read
    assert watcher.process(timeout=5) == 1
    assert not Network.objects.filter(host=demo_host, name="isolated").exists()
    assert Network.objects.filter(host=demo_host, name="default").exists()


def test_a_guest_destroyed_shows_shut_off(demo_host, demo_uri, watcher):
    assert Guest.objects.get(host=demo_host, name="web01").state == "running"
    client.connect(demo_uri).lookupByName("web01").destroy()
    assert watcher.process(timeout=5) == 1
    web01 = Guest.objects.get(host=demo_host, name="web01")
    assert web01.state == "shutoff"
    assert [i.network.name for i in web01.interfaces.all()] == ["default", "isolated"], "interfaces kept their links"


def test_the_xml_check_picks_up_a_reservation_added_with_net_update(demo_host, demo_uri, watcher):
    client.connect(demo_uri).networkLookupByName("default").update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
        libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
        -1,
        "<host mac='52:54:00:77:00:01' ip='192.168.122.77' name='sneaky'/>",
        libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
    )
    assert watcher.process(timeout=0.5) == 0, "libvirt sends no event for a net-update"
    assert watcher.check_xml() == ["default"]
    added = DhcpReservation.objects.get(network__host=demo_host, mac="52:54:00:77:00:01")
    assert (added.address, added.name, added.network.name) == ("192.168.122.77", "sneaky", "default")
    assert watcher.check_xml() == [], "unchanged networks are not mirrored again"


def test_a_lost_connection_marks_the_host_unreachable_and_a_reconnect_reconciles(demo_host, watcher):
    watcher.events.put(events.ConnectionClosed(reason="the daemon closed the connection"))
    watcher.process(timeout=1)
    host = Host.objects.get(pk=demo_host.pk)
    assert host.status == HostStatus.UNREACHABLE
    assert host.last_error == "Connection lost: the daemon closed the connection"
    Operation.objects.filter(kind=OperationKind.HOST_SYNC).exclude(status=OperationStatus.SUCCEEDED).delete()

    assert watcher.connect()
    host.refresh_from_db()
    assert (host.status, host.last_error) == (HostStatus.REACHABLE, "")
    reconciliation = Operation.objects.get(host=host, kind=OperationKind.HOST_SYNC, status=OperationStatus.QUEUED)
    assert reconciliation.source == AuditSource.SYSTEM and "watcher" in reconciliation.message


def test_an_unreachable_host_is_marked_with_the_error(db, tmp_path, settings):
    settings.KVMWEB_URI_PATHS_ALLOWED = [str(tmp_path)]
    host = HostFactory(name="gone", uri=f"qemu:///system?socket={tmp_path}/nothing")
    assert not watch.HostWatcher(host.pk).connect()
    host.refresh_from_db()
    assert host.status == HostStatus.UNREACHABLE
    assert host.last_error.startswith("Event watcher cannot connect: Cannot connect to")


def test_watchhosts_leaves_out_hosts_with_their_own_worker_and_test_driver_hosts(db):
    HostFactory(name="far", uri="qemu+ssh://root@kvm1.example/system")
    HostFactory(name="own", uri="qemu+ssh://root@kvm2.example/system", worker_seen_at=timezone.now())
    HostFactory(
        name="silent", uri="qemu+ssh://root@kvm3.example/system", worker_seen_at=timezone.now() - timedelta(hours=1)
    )
    HostFactory(name="demo", uri="test:///default")
    assert [h.name for h in watch.hosts_to_watch()] == ["far", "silent"]
    assert [h.name for h in watch.hosts_to_watch(["own"])] == ["own"]


@pytest.fixture
def _not_enqueued(transactional_db, monkeypatch):
    """Committed rows, so the watcher's thread sees them; no broker: the syncs stay queued."""
    from networks.services import operations

    monkeypatch.setattr(operations, "enqueue", lambda operation: None)


def test_the_running_watcher_follows_the_host_by_itself(_not_enqueued, demo_host, demo_uri):
    stop = threading.Event()
    thread, _watcher = watch.watcher_start(demo_host.pk, stop=stop, digest_seconds=1)
    try:
        _wait(lambda: Host.objects.get(pk=demo_host.pk).watched_at is not None)
        conn = client.connect(demo_uri)
        conn.networkDefineXML(LAB_XML)
        _wait(lambda: Network.objects.filter(host=demo_host, name="lab").exists())
        conn.networkLookupByName("routed").update(
            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
            libvirt.VIR_NETWORK_SECTION_DNS_HOST,
            -1,
            "<host ip='10.20.0.50'><hostname>printer</hostname></host>",
            libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
        )
        _wait(
            lambda: Network.objects.get(host=demo_host, name="routed").dns_records.filter(value="10.20.0.50").exists()
        )
        host = Host.objects.get(pk=demo_host.pk)
        assert host.last_event_at is not None and 0 <= host.event_lag_seconds < 5
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def _wait(predicate, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("not within the time allowed")


def test_a_connection_this_process_closed_is_reopened_without_marking_the_host(demo_host, watcher):
    watcher.events.put(events.ConnectionClosed(reason="closed by this process", local=True))
    watcher.process(timeout=1)
    assert watcher.conn is None
    assert Host.objects.get(pk=demo_host.pk).status == HostStatus.REACHABLE


def test_a_node_device_event_reads_the_devices_again_and_keeps_the_vfs_linked(demo_host, watcher):
    before = sorted(demo_host.node_devices.values_list("name", "pk"))
    watcher.events.put(events.NodeDeviceEvent(name="pci_0000_01_10_0", event="created"))
    assert watcher.process(timeout=1) == 1
    assert sorted(demo_host.node_devices.values_list("name", "pk")) == before, "rows updated in place"
    pf = demo_host.node_devices.get(pci_address="0000:01:00.0")
    assert pf.virtual_functions.count() == 4


def test_the_xml_check_also_removes_a_network_whose_events_were_missed(demo_host, demo_uri, watcher):
    watcher.subscription.cancel()  # as if the events were lost
    isolated = client.connect(demo_uri).networkLookupByName("isolated")
    isolated.destroy()
    isolated.undefine()
    assert watcher.process(timeout=0.5) == 0
    assert watcher.check_xml() == ["isolated"]
    assert not Network.objects.filter(host=demo_host, name="isolated").exists()


def test_a_deleted_host_ends_its_watcher(demo_host):
    watcher = watch.HostWatcher(demo_host.pk)
    Host.objects.filter(pk=demo_host.pk).delete()
    assert not watcher.connect()
    assert watcher.stop.is_set()


def test_watchhosts_refuses_an_unknown_host_name(db):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="No host named nope"):
        call_command("watchhosts", "--host", "nope")


class _ListingThen:
    """The watcher's connection, doing `then()` right after it lists the networks."""

    def __init__(self, conn, then):
        self.conn, self.then = conn, then

    def listAllNetworks(self):
        networks = self.conn.listAllNetworks()
        self.then()
        return networks

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_the_xml_check_keeps_a_network_mirrored_after_its_listing(demo_host, demo_uri, watcher):
    conn = client.connect(demo_uri)

    def defined_and_mirrored_meanwhile():
        conn.networkDefineXML(LAB_XML)
        watch.mirror_network_by_name(demo_host, conn, "lab")

    watcher.conn = _ListingThen(watcher.conn, defined_and_mirrored_meanwhile)
    assert "lab" not in watcher.check_xml()
    assert Network.objects.filter(host=demo_host, name="lab").exists()
    watcher.conn = watcher.conn.conn
    assert watcher.check_xml() == [], "the next check finds it as mirrored"


def test_a_database_error_while_connecting_leaves_no_subscription_behind(demo_host, monkeypatch):
    subscriptions = []
    subscribe = events.subscribe

    def recorded(*args, **kwargs):
        subscriptions.append(subscribe(*args, **kwargs))
        return subscriptions[-1]

    monkeypatch.setattr(watch.events, "subscribe", recorded)
    watcher = watch.HostWatcher(demo_host.pk)
    real_digests = watcher._mirrored_digests

    def database_away():
        raise DatabaseError("the database is away")

    watcher._mirrored_digests = database_away
    with pytest.raises(DatabaseError):
        watcher.connect()
    assert watcher.subscription is None and subscriptions[0]._cancelled
    watcher._mirrored_digests = real_digests
    try:
        assert watcher.connect()
        assert [sub for sub in subscriptions if not sub._cancelled] == [watcher.subscription]
    finally:
        watcher.close()


@pytest.fixture
def host_worker_paths(settings, tmp_path, monkeypatch):
    """The host worker's hooks, pidfile and rules in tmp_path: never this machine's libvirt."""
    from networks.forwarding import engine

    settings.KVMWEB_LIBVIRT_HOOKS_DIR = str(tmp_path / "hooks")
    settings.KVMWEB_LIBVIRTD_PIDFILE = str(tmp_path / "libvirtd.pid")
    settings.KVMWEB_FORWARD_RULES_FILE = str(tmp_path / "forwards" / "rules.json")
    settings.KVMWEB_NETWORK_UPDATES_DIR = ""
    monkeypatch.setattr(engine, "MODULAR_PIDFILES", ())
    return engine.HostPaths.from_settings()


def test_a_host_worker_watches_its_host_also_when_the_host_row_comes_later(_not_enqueued, demo_uri, host_worker_paths):
    from networks.services.hostworker import host_worker_watcher_start

    stop = host_worker_watcher_start(host_name="late")
    try:
        time.sleep(0.2)  # the watcher finds no such host yet, and looks again
        host = HostFactory(name="late", uri=demo_uri)
        _wait(lambda: Host.objects.get(pk=host.pk).watched_at is not None)
    finally:
        stop.set()
        for thread in threading.enumerate():
            if thread.name == "kvmweb-watch-late":
                thread.join(10)
                assert not thread.is_alive()


class _ConfigOnlyChange:
    """A host whose network `default` had a `net-update --config`: its persistent XML (which the
    test driver cannot give) differs from the live one."""

    EXTRA = "<host mac='52:54:00:88:00:01' ip='192.168.122.88' name='config-only'/>"

    def __init__(self, conn):
        self.conn = conn

    def _network(self, net):
        return _PersistentXml(net, self.EXTRA) if net.name() == "default" else net

    def listAllNetworks(self):
        return [self._network(net) for net in self.conn.listAllNetworks()]

    def networkLookupByName(self, name):
        return self._network(self.conn.networkLookupByName(name))

    def __getattr__(self, name):
        return getattr(self.conn, name)


class _PersistentXml:
    def __init__(self, net, extra):
        self.net, self.extra = net, extra

    def XMLDesc(self, flags=0):
        text = self.net.XMLDesc(flags & ~libvirt.VIR_NETWORK_XML_INACTIVE)
        return text.replace("</dhcp>", f"{self.extra}</dhcp>", 1) if flags & libvirt.VIR_NETWORK_XML_INACTIVE else text

    def __getattr__(self, name):
        return getattr(self.net, name)


def test_the_xml_check_also_sees_a_change_to_the_persistent_xml_only(demo_host, watcher):
    assert watcher.check_xml() == []
    watcher.conn = _ConfigOnlyChange(watcher.conn)
    assert watcher.check_xml() == ["default"]
    default = Network.objects.get(host=demo_host, name="default")
    assert "config-only" in default.inactive_xml and "config-only" not in default.live_xml
    assert watcher.check_xml() == [], "mirrored: the digests match now"


# ---------------------------------------------------------------- net-updates the network hook marked


def _add_reservation(conn, network: str, mac: str, ip: str, name: str) -> None:
    conn.networkLookupByName(network).update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
        libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
        -1,
        f"<host mac='{mac}' ip='{ip}' name='{name}'/>",
        libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
    )


def test_a_marker_left_by_the_network_hook_re_reads_just_that_network(demo_host, demo_uri, tmp_path):
    spool = tmp_path / "network-updates"
    watcher = watch.HostWatcher(demo_host.pk, updates_dir=spool)
    assert watcher.connect()
    try:
        conn = client.connect(demo_uri)
        _add_reservation(conn, "default", "52:54:00:66:00:01", "192.168.122.66", "hooked")
        _add_reservation(conn, "isolated", "52:54:00:66:00:02", "10.0.5.66", "unmarked")
        assert watcher.check_updates() == [], "no marker yet"
        fw.record_network_update(spool, "default")  # as the network hook does after the net-update
        assert watcher.check_updates() == ["default"]
        added = DhcpReservation.objects.get(network__host=demo_host, mac="52:54:00:66:00:01")
        assert (added.address, added.name, added.network.name) == ("192.168.122.66", "hooked", "default")
        assert not DhcpReservation.objects.filter(mac="52:54:00:66:00:02").exists(), "only the marked network"
        assert list(spool.iterdir()) == [] and watcher.check_updates() == []
        assert watcher.check_xml() == ["isolated"], "the XML check still catches what no hook marked"
        assert Host.objects.get(pk=demo_host.pk).last_event_at is not None
    finally:
        watcher.close()


def test_a_marker_for_a_network_the_host_lacks_adds_nothing(demo_host, tmp_path):
    spool = tmp_path / "network-updates"
    watcher = watch.HostWatcher(demo_host.pk, updates_dir=spool)
    assert watcher.connect()
    try:
        names = set(Network.objects.filter(host=demo_host).values_list("name", flat=True))
        fw.record_network_update(spool, "nosuch")
        assert watcher.check_updates() == []
        assert set(Network.objects.filter(host=demo_host).values_list("name", flat=True)) == names
        assert Host.objects.get(pk=demo_host.pk).last_event_at is None, "no event seen: nothing was mirrored"
        assert list(spool.iterdir()) == [], "the marker is taken all the same"
    finally:
        watcher.close()


def test_a_host_worker_installs_its_hooks_at_start_and_follows_their_markers(
    _not_enqueued, demo_host, demo_uri, host_worker_paths, settings
):
    from networks.services.hostworker import host_worker_watcher_start

    paths = host_worker_paths
    settings.KVMWEB_XML_DIGEST_SECONDS = 3600  # the XML check would come much later: only the marker can do it
    stop = host_worker_watcher_start(host_name=demo_host.name)
    try:
        assert "network_updates_dir=" in paths.hook_path("network").read_text(), "installed before any forward"
        _wait(lambda: Host.objects.get(pk=demo_host.pk).watched_at is not None)
        _add_reservation(client.connect(demo_uri), "default", "52:54:00:66:00:03", "192.168.122.67", "spooled")
        fw.record_network_update(paths.network_updates_dir, "default")
        started = time.monotonic()
        _wait(lambda: DhcpReservation.objects.filter(mac="52:54:00:66:00:03").exists(), timeout=5)
        print(f"marker to mirror: {time.monotonic() - started:.2f} s")
    finally:
        stop.set()
        for thread in threading.enumerate():
            if thread.name == f"kvmweb-watch-{demo_host.name}":
                thread.join(10)


def test_the_lag_of_a_marked_net_update_runs_from_when_the_hook_wrote_the_marker(demo_host, demo_uri, tmp_path):
    spool = tmp_path / "network-updates"
    watcher = watch.HostWatcher(demo_host.pk, updates_dir=spool)
    assert watcher.connect()
    try:
        _add_reservation(client.connect(demo_uri), "default", "52:54:00:66:00:04", "192.168.122.68", "late")
        fw.record_network_update(spool, "default")
        five_seconds_ago = time.time() - 5
        os.utime(spool / fw._marker_name("default"), (five_seconds_ago, five_seconds_ago))  # a slow poll
        assert watcher.check_updates() == ["default"]
        assert 5 <= Host.objects.get(pk=demo_host.pk).event_lag_seconds < 10
    finally:
        watcher.close()


def _failing_spool(spool):
    raise OSError("a failure of the spool nobody foresaw")


@pytest.mark.parametrize(
    "breakage", ["a file in place of the spool", "a directory where a marker is taken to", "an unforeseen failure"]
)
def test_a_spool_that_cannot_be_read_never_stops_the_xml_check(
    _not_enqueued, demo_host, demo_uri, tmp_path, breakage, monkeypatch
):
    spool = tmp_path / "network-updates"
    if breakage == "a file in place of the spool":
        spool.write_text("not a directory")
    elif breakage == "an unforeseen failure":
        monkeypatch.setattr(watch, "take_network_update_times", _failing_spool)
    else:
        fw.record_network_update(spool, "default")
        (spool / f".taken-{fw._marker_name('default')}").mkdir()
        (spool / f".taken-{fw._marker_name('default')}" / "x").write_text("")
    stop = threading.Event()
    thread, _watcher = watch.watcher_start(demo_host.pk, stop=stop, digest_seconds=1, updates_dir=spool)
    try:
        _wait(lambda: Host.objects.get(pk=demo_host.pk).watched_at is not None)
        _add_reservation(client.connect(demo_uri), "default", "52:54:00:66:00:05", "192.168.122.69", "checked")
        _wait(lambda: DhcpReservation.objects.filter(mac="52:54:00:66:00:05").exists(), timeout=6)
    finally:
        stop.set()
        thread.join(10)
