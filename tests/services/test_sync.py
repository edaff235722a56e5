import pytest

from networks.choices import AuditSource, HostStatus, OperationStatus
from networks.hypervisor import client, inventory
from networks.models import AuditEvent, DhcpReservation, Guest, Network, NodeDevice
from networks.services import hosts as host_services
from networks.services.operations import RetryLater, operation_run
from networks.services.sync import mirror_host
from tests.conftest import run_to_end


def test_a_sync_mirrors_every_network_guest_and_device(demo_host, demo_uri):
    found = inventory.read_host(client.connect(demo_uri))
    assert demo_host.status == HostStatus.REACHABLE
    assert demo_host.libvirt_version == found.facts.libvirt_version
    assert set(demo_host.networks.values_list("name", flat=True)) == {n.name for n in found.networks}
    assert set(demo_host.guests.values_list("name", flat=True)) == {g.name for g in found.guests}
    assert demo_host.node_devices.count() == len(found.devices)


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
    assert operation.status == OperationStatus.FAILED and operation.attempts == 4
    assert operation.log.count("trying again") == 3
    assert "Cannot connect" in operation.error
    assert host.status == HostStatus.UNREACHABLE and "Cannot connect" in host.last_error
    assert AuditEvent.objects.filter(action="host.sync.failed", operation=operation).exists()


def test_a_second_sync_request_returns_the_pending_one(demo_host, admin):
    first = host_services.host_request_sync(host=demo_host, actor=admin, source=AuditSource.WEB)
    second = host_services.host_request_sync(host=demo_host, actor=admin, source=AuditSource.WEB)
    assert first.pk == second.pk
