"""A host sync loads the mirror once and writes only what changed, in set-based statements:
its number of queries does not grow with the host, and a host found unchanged writes nothing
but its own row."""

import dataclasses

import libvirt
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from lxml import etree

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client, snapshot
from networks.models import DhcpReservation, Guest, GuestInterface, Network, NodeDevice
from networks.services import hosts as host_services
from networks.services import watch
from networks.services.operations import host_sync_request
from networks.services.sync import mirror_host, mirror_network
from tests.conftest import run_to_end

VFS = 4


def _network(n: int, reservations: int) -> str:
    hosts = "".join(
        f"<host mac='52:54:01:00:{n:02x}:{h:02x}' name='r{n}-{h}' ip='10.50.{n}.{10 + h}'/>"
        for h in range(reservations)
    )
    return (
        f"<network><name>net{n}</name><uuid>00000000-0000-4000-8000-{n:012x}</uuid><forward mode='nat'/>"
        f"<bridge name='virbr{n}' stp='on' delay='0'/><ip address='10.50.{n}.1' netmask='255.255.255.0'><dhcp>"
        f"<range start='10.50.{n}.100' end='10.50.{n}.199'/>{hosts}</dhcp></ip></network>"
    )


def _domain(g: int, network_names: list[str]) -> str:
    nics = "".join(
        f"<interface type='network'><mac address='52:54:02:00:{g:02x}:{i:02x}'/><source network='{name}'/>"
        "<model type='virtio'/></interface>"
        for i, name in enumerate(network_names)
    )
    state = 5 if g % 2 else 1  # every other guest shut off (its config can be redefined)
    return (
        f"<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'><name>g{g}</name>"
        f"<uuid>00000000-0000-4000-9000-{g:012x}</uuid><memory unit='MiB'>512</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64'>hvm</type></os><devices>{nics}</devices>"
        f"<test:runstate>{state}</test:runstate></domain>"
    )


def _pci(slot: int, function: int, capability: str) -> str:
    return (
        f"<device><name>pci_0000_01_{slot:02x}_{function:x}</name><parent>computer</parent><capability type='pci'>"
        f"<domain>0</domain><bus>1</bus><slot>{slot}</slot><function>{function}</function>"
        f"<product id='0x10fb'>NIC</product><vendor id='0x8086'>Intel</vendor>{capability}</capability></device>"
    )


def host_file(networks: int, guests: int, reservations: int = 5, extra_domains: str = "") -> str:
    """A test driver host: `networks` NAT networks, `guests` guests with 2 NICs, a PF with VFs."""
    vf = "<address domain='0x0000' bus='0x01' slot='0x10' function='0x{:x}'/>"
    pf = (
        "<capability type='phys_function'><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></capability>"
    )
    devices = _pci(0, 0, f"<capability type='virt_functions' maxCount='7'>{''.join(map(vf.format, range(VFS)))}"
                         "</capability>")  # fmt: skip
    devices += "".join(_pci(0x10, f, pf) for f in range(VFS))
    return (
        "<node><cpu><mhz>2900</mhz><model>x86_64</model><active>4</active><nodes>1</nodes><sockets>1</sockets>"
        "<cores>4</cores><threads>1</threads></cpu><memory>8388608</memory>"
        + "".join(_network(n, reservations) for n in range(networks))
        + "".join(_domain(g, [f"net{g % networks}", f"net{(g + 1) % networks}"]) for g in range(guests))
        + extra_domains
        + "<device><name>computer</name><capability type='system'><hardware>"
        "<uuid>00000000-0000-4000-8000-0000000000c1</uuid></hardware></capability></device>" + devices + "</node>"
    )


@pytest.fixture
def make_host(db, tmp_path, admin):
    """make_host(name, file text) → (host row, open connection); connections closed afterwards."""
    uris = []

    def make(name: str, text: str):
        path = tmp_path / f"{name}.xml"
        path.write_text(text)
        uri = f"test://{path}"
        uris.append(uri)
        client.disconnect(uri)
        host = host_services.host_create(name=name, uri=uri, actor=admin, source=AuditSource.WEB)
        return host, client.connect(uri, test_driver_dirs=(str(tmp_path),), uri_paths_allowed=())

    yield make
    for uri in uris:
        client.disconnect(uri)


def _sync(host, conn) -> list[str]:
    """Sync `host` as the host sync operation does; returns the SQL it ran."""
    with CaptureQueriesContext(connection) as queries:
        mirror_host(host, snapshot.read_host(conn))
    return [query["sql"] for query in queries.captured_queries]


def _writes(statements: list[str]) -> list[str]:
    return [sql for sql in statements if sql.split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}]


def _change(conn, networks: int, guests: int) -> None:
    """A third of the host changes: a reservation on networks, paused and redefined guests."""
    for n in range(max(1, networks // 3)):
        conn.networkLookupByName(f"net{n}").update(
            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
            f"<host mac='52:54:03:00:00:{n:02x}' name='extra' ip='10.50.{n}.90'/>",
            libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
        )  # fmt: skip
    for g in range(0, max(2, guests // 3), 2):
        conn.lookupByName(f"g{g}").suspend()
    for g in range(1, max(2, guests // 3), 2):
        _redefine_with_link_down(conn, f"g{g}")


def _redefine_with_link_down(conn, name: str) -> None:
    root = etree.fromstring(conn.lookupByName(name).XMLDesc(0))
    etree.SubElement(root.find("devices/interface"), "link", state="down")
    conn.defineXML(etree.tostring(root, encoding="unicode"))


def test_a_sync_runs_as_many_queries_for_a_host_three_times_the_size(make_host):
    """First sync, a third of the host changed, unchanged. (On SQLite, Django splits a bulk
    statement every 999 values: the sizes here stay below that, as PostgreSQL never splits.)"""
    counts = {}
    for size in (3, 9):
        host, conn = make_host(f"h{size}", host_file(networks=size, guests=size * 3))
        first = _sync(host, conn)
        _change(conn, size, size * 3)
        changed = _sync(host, conn)
        unchanged = _sync(host, conn)
        counts[size] = (len(first), len(changed), len(unchanged))
        assert Guest.objects.filter(host=host, state="paused").count() == len(range(0, size, 2))
        assert GuestInterface.objects.filter(guest__host=host, link_state="down").count() == len(range(1, size, 2))
        assert DhcpReservation.objects.filter(network__host=host).count() == size * 5 + max(1, size // 3)
    assert counts[3] == counts[9]


def test_an_unchanged_host_writes_nothing_but_its_own_row(make_host):
    host, conn = make_host("same", host_file(networks=3, guests=6))
    _sync(host, conn)
    before = {
        "networks": list(Network.objects.filter(host=host).values_list("pk", "synced_at")),
        "reservations": list(DhcpReservation.objects.filter(network__host=host).values_list("pk", flat=True)),
        "interfaces": list(GuestInterface.objects.filter(guest__host=host).values_list("pk", flat=True)),
        "devices": list(NodeDevice.objects.filter(host=host).values_list("pk", "physical_function_id")),
    }
    writes = _writes(_sync(host, conn))
    assert len(writes) == 1 and writes[0].startswith('UPDATE "networks_host"'), writes
    after = {
        "networks": list(Network.objects.filter(host=host).values_list("pk", "synced_at")),
        "reservations": list(DhcpReservation.objects.filter(network__host=host).values_list("pk", flat=True)),
        "interfaces": list(GuestInterface.objects.filter(guest__host=host).values_list("pk", flat=True)),
        "devices": list(NodeDevice.objects.filter(host=host).values_list("pk", "physical_function_id")),
    }
    assert after == before
    host.refresh_from_db()
    assert host.last_sync_at is not None and host.status == "reachable"


def test_a_changed_reservation_a_removed_guest_and_a_new_network_land(make_host):
    # g9 sits on "later", a network the host does not have yet
    late_guest = _domain(9, ["later"])
    host, conn = make_host("moves", host_file(networks=3, guests=4, extra_domains=late_guest))
    _sync(host, conn)
    assert GuestInterface.objects.get(guest__host=host, guest__name="g9").network is None
    net1 = conn.networkLookupByName("net1")
    net1.update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
        "<host mac='52:54:01:00:01:02' name='moved' ip='10.50.1.77'/>",
        libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
    )  # fmt: skip
    conn.lookupByName("g1").undefine()  # shut off: undefining removes it
    conn.networkDefineXML(_network(7, 2).replace("net7", "later")).create()
    _sync(host, conn)

    moved = DhcpReservation.objects.get(network__host=host, network__name="net1", mac="52:54:01:00:01:02")
    assert (moved.address, moved.name) == ("10.50.1.77", "moved")
    assert DhcpReservation.objects.filter(network__host=host, network__name="net1").count() == 5
    assert not Guest.objects.filter(host=host, name="g1").exists()
    assert not GuestInterface.objects.filter(guest__host=host, guest__name="g1").exists()
    later = Network.objects.get(host=host, name="later")
    assert sorted(later.dhcp_reservations.values_list("address", flat=True)) == ["10.50.7.10", "10.50.7.11"]
    assert later.ips.get().dhcp_ranges.get().size == 100
    # g9's XML did not change, but its interface links to the network now there
    assert GuestInterface.objects.get(guest__host=host, guest__name="g9").network == later
    # untouched networks keep their rows
    assert DhcpReservation.objects.filter(network__host=host, network__name="net0").count() == 5


def test_a_network_defined_again_through_kvmweb_gets_its_guests_back_at_the_next_sync(make_host):
    host, conn = make_host("again", host_file(networks=2, guests=2))
    _sync(host, conn)
    info = next(read.info for read in snapshot.read_host(conn).networks if read.name == "net0")
    Network.objects.filter(host=host, name="net0").delete()  # as an operation's re-read of a gone network
    mirror_network(host, info)  # and a later operation's mirror of it
    assert GuestInterface.objects.filter(guest__host=host, network__isnull=True).count() == 2
    _sync(host, conn)
    assert not GuestInterface.objects.filter(guest__host=host, network__isnull=True).exists()


def _vf_links(host) -> dict[str, str | None]:
    return {
        vf.name: vf.physical_function.name if vf.physical_function else None
        for vf in NodeDevice.objects.filter(host=host, name__startswith="pci_0000_01_10")
    }


def test_vf_links_to_their_pf_survive_resyncs_and_a_pf_that_leaves_and_returns(make_host):
    host, conn = make_host("sriov", host_file(networks=1, guests=2))
    _sync(host, conn)
    linked = {f"pci_0000_01_10_{f}": "pci_0000_01_00_0" for f in range(VFS)}
    assert _vf_links(host) == linked
    _change(conn, 1, 2)
    _sync(host, conn)
    assert _vf_links(host) == linked

    found = snapshot.read_host(conn)
    without_pf = dataclasses.replace(found, devices=tuple(d for d in found.devices if d.name != "pci_0000_01_00_0"))
    mirror_host(host, without_pf)
    assert _vf_links(host) == dict.fromkeys(linked)
    mirror_host(host, snapshot.read_host(conn))
    assert _vf_links(host) == linked
    # a PF whose details changed is updated in place, its VFs still linked to it
    pf_row = NodeDevice.objects.get(host=host, name="pci_0000_01_00_0").pk
    found = snapshot.read_host(conn)
    renamed = tuple(
        dataclasses.replace(d, product="NIC rev 2") if d.name == "pci_0000_01_00_0" else d for d in found.devices
    )
    mirror_host(host, dataclasses.replace(found, devices=renamed))
    pf = NodeDevice.objects.get(host=host, name="pci_0000_01_00_0")
    assert (pf.pk, pf.product, pf.virtual_functions.count()) == (pf_row, "NIC rev 2", VFS)


def test_mirror_network_of_an_unchanged_network_returns_its_row_and_writes_nothing(make_host):
    host, conn = make_host("one", host_file(networks=2, guests=0))
    _sync(host, conn)
    info = next(read.info for read in snapshot.read_host(conn).networks if read.name == "net1")
    with CaptureQueriesContext(connection) as queries:
        row = mirror_network(host, info)
    assert row == Network.objects.get(host=host, name="net1")
    assert not _writes([query["sql"] for query in queries.captured_queries])


def test_what_the_watcher_writes_between_a_syncs_read_and_its_write_survives_the_sync(make_host, monkeypatch):
    host, conn = make_host("race", host_file(networks=2, guests=2))
    _sync(host, conn)
    read_host = snapshot.read_host

    def read_then_the_watcher_writes(c):
        found = read_host(c)  # the sync has read the host; now, before it writes:
        conn.networkLookupByName("net0").update(
            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
            "<host mac='52:54:03:00:00:99' name='late' ip='10.50.0.99'/>",
            libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
        )  # fmt: skip
        conn.networkDefineXML(_network(5, 1).replace("net5", "fresh"))
        conn.lookupByName("g0").suspend()
        assert watch.mirror_network_by_name(host, conn, "net0")
        assert watch.mirror_network_by_name(host, conn, "fresh")
        assert watch.mirror_guest_by_name(host, conn, "g0")
        return found

    monkeypatch.setattr(snapshot, "read_host", read_then_the_watcher_writes)
    operation = host_sync_request(host=host, actor=None, source=AuditSource.SYSTEM, message="the race")
    run_to_end(operation.pk)
    operation.refresh_from_db()
    assert operation.status == OperationStatus.SUCCEEDED, operation.error

    survived = (
        DhcpReservation.objects.filter(network__host=host, network__name="net0", name="late").exists(),
        Network.objects.filter(host=host, name="fresh").count(),  # neither deleted nor duplicated
        Guest.objects.get(host=host, name="g0").state,
    )
    assert survived == (True, 1, "paused")
    # and the next sync, whose read is newer, still writes as usual
    monkeypatch.setattr(snapshot, "read_host", read_host)
    conn.lookupByName("g0").resume()
    run_to_end(host_sync_request(host=host, actor=None, source=AuditSource.SYSTEM, message="again").pk)
    assert Guest.objects.get(host=host, name="g0").state == "running"


def test_a_hostdev_nic_on_a_pool_network_links_to_it_once_the_network_is_there(make_host):
    """libvirt writes <source network='pool'/> with single quotes; the NIC is no type="network" one."""
    host, conn = make_host("pool", host_file(networks=1, guests=0))
    nic = (
        "<interface type='hostdev' managed='yes'><mac address='52:54:02:00:aa:01'/><source network='pool'/>"
        "<source><address type='pci' domain='0x0000' bus='0x01' slot='0x10' function='0x1'/></source></interface>"
    )
    guest = snapshot.GuestRead(name="g0", xml=_domain(0, []).replace("<devices>", f"<devices>{nic}"), state="running")

    def read_with_the_guest():
        found = snapshot.read_host(conn)
        return dataclasses.replace(
            found, guests=(*found.guests, snapshot.GuestRead(guest.name, guest.xml, guest.state))
        )

    mirror_host(host, read_with_the_guest())
    assert GuestInterface.objects.get(guest__host=host, guest__name="g0").network is None
    conn.networkDefineXML(_network(3, 1).replace("net3", "pool"))
    mirror_host(host, read_with_the_guest())
    assert GuestInterface.objects.get(guest__host=host, guest__name="g0").network.name == "pool"
