import re

import libvirt
import pytest
from lxml import etree

from networks.choices import AuditSource, HostStatus, OperationStatus
from networks.hypervisor import client, inventory
from networks.models import AuditEvent, DhcpReservation, DnsRecord, Guest, GuestInterface, Network, NodeDevice
from networks.operation_kinds import RetryPolicy
from networks.services import hosts as host_services
from networks.services import operations, sync
from networks.services.operations import RetryLater, operation_run
from networks.services.sync import mirror_host, mirror_network
from tests.conftest import REPO, run_to_end
from tests.factories import UserFactory


def _fleet():
    """demo/fleet.xml read here, with lxml, independently of kvmweb's readers."""
    return etree.parse(str(REPO / "demo" / "fleet.xml")).getroot()


def _reservations(network) -> set[tuple[str, str, str]]:
    return {(h.get("mac", "").lower(), h.get("ip"), h.get("name", "")) for h in network.findall("ip/dhcp/host")}


def test_a_sync_mirrors_every_network_guest_and_device(demo_host):
    fleet = _fleet()
    assert demo_host.status == HostStatus.REACHABLE
    assert re.fullmatch(r"\d+\.\d+\.\d+", demo_host.libvirt_version)
    networks = {n.findtext("name"): n for n in fleet.findall("network")}
    assert set(demo_host.networks.values_list("name", flat=True)) == set(networks)
    for network in demo_host.networks.all():
        mirrored = set(network.dhcp_reservations.values_list("mac", "address", "name"))
        assert mirrored == _reservations(networks[network.name]), network.name
    assert set(demo_host.guests.values_list("name", flat=True)) == {d.findtext("name") for d in fleet.findall("domain")}
    # kvmweb lists PCI and network devices, not the "system" one.
    wanted = [d for d in fleet.findall("device") if d.find("capability").get("type") in {"pci", "net"}]
    assert sorted(demo_host.node_devices.values_list("name", flat=True)) == sorted(d.findtext("name") for d in wanted)


def test_reservations_keep_their_subnet_and_guests_link_to_their_network(demo_host):
    default = Network.objects.get(host=demo_host, name="default")
    reservation = DhcpReservation.objects.get(network=default, mac="52:54:00:0a:00:11")
    assert reservation.ip.address == "192.168.122.1"
    web01 = Guest.objects.get(host=demo_host, name="web01")
    assert [i.network.name for i in web01.interfaces.all()] == ["default", "isolated"]


def test_vfs_link_to_their_physical_function(demo_host):
    pf = NodeDevice.objects.get(host=demo_host, pci_address="0000:01:00.0")
    assert pf.virtual_functions.count() == len(pf.vf_addresses) == 4


def test_objects_gone_from_the_host_leave_the_mirror(demo_host, demo_uri):
    conn = client.connect(demo_uri)
    conn.networkLookupByName("routed").destroy()  # active+persistent: stays, now inactive
    conn.networkLookupByName("isolated").destroy()
    conn.networkLookupByName("isolated").undefine()
    conn.lookupByName("build01").undefine()
    mirror_host(demo_host, inventory.read_host(conn))
    assert not Network.objects.filter(host=demo_host, name="isolated").exists()
    assert not Network.objects.get(host=demo_host, name="routed").active
    assert not Guest.objects.filter(host=demo_host, name="build01").exists()


def test_an_unreachable_host_is_marked_with_its_error_and_the_sync_fails(db, admin, tmp_path):
    host = host_services.host_create(
        name="gone", uri=f"qemu:///system?socket={tmp_path}/nothing", actor=admin, source=AuditSource.WEB
    )
    first = host.operations.get()
    with pytest.raises(RetryLater):
        operation_run(first.pk)
    host.refresh_from_db()
    assert host.status == HostStatus.UNREACHABLE, "shown unreachable while kvmweb waits to try again"
    first.refresh_from_db()
    assert first.status == OperationStatus.QUEUED and "trying again in 2 s" in first.log
    operation = run_to_end(first.pk)
    host.refresh_from_db()
    assert operation.status == OperationStatus.FAILED and operation.attempts == RetryPolicy().attempts
    assert operation.log.count("trying again") == RetryPolicy().attempts - 1
    assert "Cannot connect" in operation.error
    assert host.status == HostStatus.UNREACHABLE and "Cannot connect" in host.last_error
    assert AuditEvent.objects.filter(action="host.sync.failed", operation=operation).exists()


def test_a_second_sync_request_returns_the_pending_one(demo_host, admin):
    first = host_services.host_request_sync(host=demo_host, actor=admin, source=AuditSource.WEB)
    second = host_services.host_request_sync(host=demo_host, actor=admin, source=AuditSource.WEB)
    assert first.pk == second.pk


# ---------------------------------------------------------------- one network's mirror is one write


@pytest.fixture
def committed_demo_host(transactional_db, monkeypatch, demo_uri):
    """The demo host in a database whose transactions really commit (no broker: nothing is
    enqueued, the sync is run here)."""
    monkeypatch.setattr(operations, "enqueue", lambda operation: None)
    host = host_services.host_create(name="demo", uri=demo_uri, actor=UserFactory(), source=AuditSource.WEB)
    operation_run(host.operations.get().pk)
    return host


def test_a_failure_while_mirroring_a_network_leaves_its_previous_rows_whole(committed_demo_host, demo_uri, monkeypatch):
    demo_host = committed_demo_host
    default = Network.objects.get(host=demo_host, name="default")
    before = set(default.dhcp_reservations.values_list("mac", "address"))
    assert len(before) == 3
    conn = client.connect(demo_uri)
    conn.networkLookupByName("default").update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, 0,
        "<host mac='52:54:00:44:00:01' ip='192.168.122.44' name='new'/>",
        libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
    )  # fmt: skip
    info = next(n for n in inventory.read_host(conn).networks if n.name == "default")

    insert_rows = sync.insert_rows

    def fail_on_dns(model, rows, **kwargs):  # injected: the database fails after the old rows were deleted
        if model is DnsRecord:
            raise RuntimeError("injected: write failed")
        return insert_rows(model, rows, **kwargs)

    monkeypatch.setattr(sync, "insert_rows", fail_on_dns)
    with pytest.raises(RuntimeError, match="injected"):
        mirror_network(demo_host, info)
    default.refresh_from_db()
    assert set(default.dhcp_reservations.values_list("mac", "address")) == before
    assert default.ips.count() == 1 and default.dns_records.count() == 3
    assert "192.168.122.44" not in default.live_xml  # the network row was not half-written either


# ---------------------------------------------------------------- objects removed during a sync


class RacingConnection:
    """The test driver's connection, where someone undefines an object right after kvmweb
    listed it (an injected race: the listing and the removal are both real libvirt calls)."""

    def __init__(self, conn):
        self._conn = conn

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def listAllNetworks(self, *args):
        listed = self._conn.listAllNetworks(*args)
        gone = self._conn.networkLookupByName("isolated")
        gone.destroy()
        gone.undefine()
        return listed

    def listAllDomains(self, *args):
        listed = self._conn.listAllDomains(*args)
        self._conn.lookupByName("build01").undefine()  # shut off: undefining removes it
        return listed


def test_an_object_removed_between_listing_and_reading_is_skipped_and_the_rest_syncs(
    demo_host, demo_uri, admin, monkeypatch
):
    racing = RacingConnection(client.connect(demo_uri))
    monkeypatch.setattr(sync, "host_connection", lambda host: racing)
    operation = host_services.host_request_sync(host=demo_host, actor=admin, source=AuditSource.WEB)
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    demo_host.refresh_from_db()
    fleet = _fleet()
    assert set(demo_host.networks.values_list("name", flat=True)) == {
        n.findtext("name") for n in fleet.findall("network")
    } - {"isolated"}
    assert set(demo_host.guests.values_list("name", flat=True)) == {
        d.findtext("name") for d in fleet.findall("domain")
    } - {"build01"}
    warnings = " ".join(demo_host.sync_warnings)
    assert "network isolated disappeared" in warnings and "guest build01 disappeared" in warnings
    assert "network isolated disappeared" in finished.log


# ---------------------------------------------------------------- every field of a guest interface


def _mirrored_interfaces(host, guest_name: str) -> dict[str, GuestInterface]:
    return {iface.mac: iface for iface in GuestInterface.objects.filter(guest__host=host, guest__name=guest_name)}


def test_guest_interfaces_mirror_link_bandwidth_and_pci_address(demo_host):
    web01 = _mirrored_interfaces(demo_host, "web01")
    prod = web01["52:54:00:0a:00:11"]
    assert prod.bandwidth == {"inbound": {"average": 2048, "peak": 4096, "burst": 1024}, "outbound": {"average": 1024}}
    assert (prod.pci_address, prod.link_state, prod.portgroup) == ("0000:00:03.0", "", "prod")
    backend = web01["52:54:00:0a:01:11"]
    assert (backend.link_state, backend.pci_address, backend.bandwidth) == ("down", "0000:00:04.0", {})


def test_a_macvtap_interface_mirrors_its_host_device_and_mode(demo_host):
    macvtap = _mirrored_interfaces(demo_host, "nas01")["52:54:00:0d:01:61"]
    assert (macvtap.type, macvtap.source, macvtap.source_mode, macvtap.model) == ("direct", "ens1f1", "vepa", "e1000e")
    assert macvtap.network is None


def test_every_interface_of_the_demo_fleet_is_mirrored_with_its_link_and_mode(demo_host):
    """Compared with demo/fleet.xml as lxml reads it, for every NIC of every guest."""
    expected = {
        iface.find("mac").get("address").lower(): (
            iface.get("type"),
            iface.xpath("string(link/@state)"),
            iface.xpath("string(source/@mode)") if iface.get("type") == "direct" else "",
        )
        for iface in _fleet().findall("domain/devices/interface")
    }
    mirrored = {
        mac: (kind, link, mode)
        for mac, kind, link, mode in GuestInterface.objects.filter(guest__host=demo_host).values_list(
            "mac", "type", "link_state", "source_mode"
        )
    }
    assert mirrored == expected


def test_the_test_driver_gives_no_agent_addresses_and_no_agent_warning(demo_host):
    assert not GuestInterface.objects.filter(guest__host=demo_host).exclude(agent_addresses=[]).exists()
    assert not [warning for warning in demo_host.sync_warnings if "agent" in warning]


def test_a_later_sync_replaces_changed_interface_fields(demo_host, demo_uri):
    conn = client.connect(demo_uri)
    root = etree.fromstring(conn.lookupByName("build01").XMLDesc(0))  # shut off: its config can be redefined
    iface = root.find("devices/interface")
    etree.SubElement(iface, "link", state="down")
    etree.SubElement(etree.SubElement(iface, "bandwidth"), "outbound", average="300", burst="64")
    etree.SubElement(iface, "address", type="pci", domain="0x0000", bus="0x00", slot="0x09", function="0x0")
    conn.defineXML(etree.tostring(root, encoding="unicode"))
    mirror_host(demo_host, inventory.read_host(conn))
    changed = _mirrored_interfaces(demo_host, "build01")["52:54:00:0c:00:41"]
    assert (changed.link_state, changed.pci_address) == ("down", "0000:00:09.0")
    assert changed.bandwidth == {"outbound": {"average": 300, "burst": 64}}
