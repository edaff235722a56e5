"""A sync writes an object only when its digest (of what libvirt returned) differs from the
stored one: whatever the mirror shows must therefore change the digest, and every writer of
the mirror holds the host's lock."""

import dataclasses

import libvirt
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from networks.hypervisor import snapshot
from networks.hypervisor.types import DhcpLease
from networks.models import DhcpLease as LeaseRow
from networks.models import DhcpReservation, Guest, GuestInterface, Network, Operation
from networks.services import sync
from networks.services.sync import mirror_host, mirror_network
from tests.services import test_sync_queries
from tests.services.test_sync_queries import _sync, _writes, host_file

make_host = test_sync_queries.make_host  # the fixture


def _with_network(found, name: str, **changes):
    networks = tuple(dataclasses.replace(n, **changes) if n.name == name else n for n in found.networks)
    return dataclasses.replace(found, networks=networks)


def test_leases_that_change_alone_are_written_and_the_reservations_are_not(make_host):
    host, conn = make_host("leases", host_file(networks=2, guests=2))
    _sync(host, conn)
    lease = DhcpLease(mac="52:54:00:aa:00:01", ip="10.50.0.150", prefix=24, hostname="vm1", expires=1_900_000_000)
    # The test driver lists no leases: a read as a daemon that has them would give it.
    mirror_host(host, _with_network(snapshot.read_host(conn), "net0", leases=(lease,), leases_known=True))
    row = LeaseRow.objects.get(network__host=host)
    assert (row.network.name, row.address, row.hostname, row.expires_at.timestamp()) == (
        "net0", "10.50.0.150", "vm1", 1_900_000_000,
    )  # fmt: skip
    reservations = set(DhcpReservation.objects.filter(network__host=host).values_list("pk", flat=True))
    renewed = dataclasses.replace(lease, expires=1_900_003_600)
    mirror_host(host, _with_network(snapshot.read_host(conn), "net0", leases=(renewed,), leases_known=True))
    assert LeaseRow.objects.get(network__host=host).expires_at.timestamp() == 1_900_003_600
    # the network's other rows were left as they were
    assert set(DhcpReservation.objects.filter(network__host=host).values_list("pk", flat=True)) == reservations
    mirror_host(host, _with_network(snapshot.read_host(conn), "net0", leases=(), leases_known=True))
    assert not LeaseRow.objects.filter(network__host=host).exists()


def test_autostart_turned_off_with_the_xml_unchanged_shows(make_host):
    host, conn = make_host("flags", host_file(networks=2, guests=0))
    conn.networkLookupByName("net1").setAutostart(1)
    _sync(host, conn)
    assert Network.objects.get(host=host, name="net1").autostart is True
    conn.networkLookupByName("net1").setAutostart(0)
    _sync(host, conn)
    assert Network.objects.get(host=host, name="net1").autostart is False


def test_what_the_guest_agent_reports_changes_the_guest(make_host):
    host, conn = make_host("agent", host_file(networks=1, guests=2))
    _sync(host, conn)

    def read_with_agent(addresses: tuple[str, ...]):
        found = snapshot.read_host(conn)
        guests = []
        for read in found.guests:
            if read.name == "g0":  # parsed with its agent's answer, as on a driver that asks agents
                info = read.info
                first = dataclasses.replace(info.interfaces[0], agent_addresses=addresses)
                read = snapshot.GuestRead.of(dataclasses.replace(info, interfaces=(first, *info.interfaces[1:])))
            guests.append(read)
        return dataclasses.replace(found, guests=tuple(guests))

    mirror_host(host, read_with_agent(("10.50.0.7/24",)))
    interface = GuestInterface.objects.get(guest__host=host, guest__name="g0", position=0)
    assert interface.agent_addresses == ["10.50.0.7/24"]
    mirror_host(host, read_with_agent(()))
    interface = GuestInterface.objects.get(guest__host=host, guest__name="g0", position=0)
    assert interface.agent_addresses == []


def test_a_new_digest_version_writes_every_row_again(make_host, monkeypatch):
    host, conn = make_host("version", host_file(networks=2, guests=3))
    _sync(host, conn)
    # a value the mirror derives differently from the same XML (after an upgrade), stale here
    Guest.objects.filter(host=host).update(uuid="stale")
    _sync(host, conn)
    assert set(Guest.objects.filter(host=host).values_list("uuid", flat=True)) == {"stale"}  # nothing read changed
    monkeypatch.setattr(snapshot, "DIGEST_VERSION", "2")
    counts = mirror_host(host, snapshot.read_host(conn))
    devices = host.node_devices.count()
    assert counts["written"] == {"networks": 2, "guests": 3, "devices": devices} and devices > 0
    assert "stale" not in set(Guest.objects.filter(host=host).values_list("uuid", flat=True))


def test_an_unchanged_host_parses_no_xml(make_host, monkeypatch):
    host, conn = make_host("parse", host_file(networks=2, guests=4))
    _sync(host, conn)
    found = snapshot.read_host(conn)
    monkeypatch.setattr(snapshot.xml, "parse_domain", None)  # calling it would raise TypeError
    monkeypatch.setattr(snapshot.xml, "parse_network", None)
    counts = mirror_host(host, found)
    assert counts["written"] == {"networks": 0, "guests": 0, "devices": 0}


def _lock_before_first_write(statements: list[str]) -> bool:
    writes = [n for n, sql in enumerate(statements) if sql.split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}]
    lock = 'SELECT "networks_host"."id" FROM "networks_host"'  # lock_host's (FOR UPDATE on PostgreSQL)
    locks = [n for n, sql in enumerate(statements) if sql.startswith(lock)]
    return bool(writes) and bool(locks) and locks[0] < writes[0]


def test_an_operations_re_read_writes_under_the_hosts_lock(make_host):
    host, conn = make_host("locked", host_file(networks=2, guests=2))
    _sync(host, conn)
    conn.networkLookupByName("net0").update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
        "<host mac='52:54:03:00:00:77' name='late' ip='10.50.0.77'/>",
        libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
    )  # fmt: skip
    operation = Operation(host=host, target_name="net0")
    with CaptureQueriesContext(connection) as queries:
        sync.remirror_network(operation)
    assert _lock_before_first_write([q["sql"] for q in queries.captured_queries])
    assert DhcpReservation.objects.filter(network__host=host, name="late").exists()

    info = next(read.info for read in snapshot.read_host(conn).guests if read.name == "g0")
    paused = dataclasses.replace(info, state="paused")
    networks = dict(Network.objects.filter(host=host).values_list("name", "pk"))
    with CaptureQueriesContext(connection) as queries:
        sync.mirror_guest(host, paused, networks, None)
    assert _lock_before_first_write([q["sql"] for q in queries.captured_queries])
    assert Guest.objects.get(host=host, name="g0").state == "paused"


def test_an_interface_operations_re_read_of_a_gone_guest_deletes_it_under_the_hosts_lock(make_host):
    from networks.services.interfaces import runs

    host, conn = make_host("gone", host_file(networks=2, guests=2))
    _sync(host, conn)
    dom = conn.lookupByName("g1")
    if dom.isActive():
        dom.destroy()
    dom.undefine()
    with CaptureQueriesContext(connection) as queries:
        runs._mirror_guest(Operation(host=host, target_name="g1"), conn)
    assert _lock_before_first_write([q["sql"] for q in queries.captured_queries])
    assert set(Guest.objects.filter(host=host).values_list("name", flat=True)) == {"g0"}


def test_mirror_network_writes_under_the_hosts_lock(make_host):
    host, conn = make_host("locked2", host_file(networks=1, guests=0))
    info = next(read.info for read in snapshot.read_host(conn).networks)
    with CaptureQueriesContext(connection) as queries:
        mirror_network(host, info)
    assert _lock_before_first_write([q["sql"] for q in queries.captured_queries])
    assert _writes([q["sql"] for q in queries.captured_queries])


def _device_xml(product: str) -> str:
    return (
        "<device><name>pci_0000_05_00_0</name><parent>computer</parent><capability type='pci'><domain>0</domain>"
        f"<bus>5</bus><slot>0</slot><function>0</function><product id='0x10fb'>{product}</product>"
        "<vendor id='0x8086'>Intel</vendor></capability></device>"
    )


def test_node_devices_read_again_are_not_parsed_again_unless_their_xml_is_oversized():
    snapshot._cached_device.cache_clear()
    usual = _device_xml("NIC")
    assert snapshot.parsed_device(usual) is snapshot.parsed_device(usual)  # the second read is the first's value
    assert snapshot._cached_device.cache_info().currsize == 1
    huge = _device_xml("N" * 20_000)  # a hostile host's: parsed each time, never kept
    assert snapshot.parsed_device(huge).product == "N" * 20_000
    assert snapshot._cached_device.cache_info().currsize == 1


def _update(net, command: int, section: int, xml_text: str) -> None:
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    net.update(command, section, -1, xml_text, flags)


def _reservations(host) -> dict[str, int]:
    return dict(DhcpReservation.objects.filter(network__host=host, network__name="net0").values_list("name", "pk"))


def _reservation_writes(statements: list[str]) -> list[str]:
    return [sql.split(None, 1)[0] for sql in _writes(statements) if '"networks_dhcpreservation"' in sql]


def test_a_reservation_added_or_removed_behind_kvmwebs_back_writes_that_one_row(make_host):
    host, conn = make_host("reserve", host_file(networks=2, guests=1, reservations=5))
    _sync(host, conn)
    before = _reservations(host)
    net = conn.networkLookupByName("net0")
    added = "<host mac='52:54:03:00:00:78' name='added' ip='10.50.0.78'/>"
    _update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, added)
    assert _reservation_writes(_sync(host, conn)) == ["INSERT"]
    after = _reservations(host)
    assert after == {**before, "added": after["added"]}  # the others kept their rows

    gone = "<host mac='52:54:01:00:00:02' name='r0-2' ip='10.50.0.12'/>"
    _update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, gone)
    assert _reservation_writes(_sync(host, conn)) == ["DELETE"]
    assert _reservations(host) == {name: pk for name, pk in after.items() if name != "r0-2"}


def test_a_changed_dhcp_range_writes_the_networks_addresses_again(make_host):
    host, conn = make_host("ranges", host_file(networks=2, guests=1, reservations=3))
    _sync(host, conn)
    net = conn.networkLookupByName("net0")
    section = libvirt.VIR_NETWORK_SECTION_IP_DHCP_RANGE
    _update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, section, "<range start='10.50.0.100' end='10.50.0.199'/>")
    _update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, section, "<range start='10.50.0.150' end='10.50.0.159'/>")
    _sync(host, conn)
    network = Network.objects.get(host=host, name="net0")
    (ip,) = network.ips.all()
    assert [(r.start, r.end, r.size) for r in ip.dhcp_ranges.all()] == [("10.50.0.150", "10.50.0.159", 10)]
    assert sorted(network.dhcp_reservations.values_list("name", "address", "ip_id")) == [
        ("r0-0", "10.50.0.10", ip.pk), ("r0-1", "10.50.0.11", ip.pk), ("r0-2", "10.50.0.12", ip.pk),
    ]  # fmt: skip


def _interfaces(host, guest: str) -> dict[int, tuple[int, str]]:
    rows = GuestInterface.objects.filter(guest__host=host, guest__name=guest)
    return {position: (pk, link) for position, pk, link in rows.values_list("position", "pk", "link_state")}


def _interface_writes(statements: list[str]) -> list[str]:
    return [sql.split(None, 1)[0] for sql in _writes(statements) if '"networks_guestinterface"' in sql]


def _redefine(conn, name: str, change) -> None:
    from lxml import etree

    root = etree.fromstring(conn.lookupByName(name).XMLDesc(0))
    change(root.find("devices"))
    conn.defineXML(etree.tostring(root, encoding="unicode"))


def test_a_nic_changed_or_removed_writes_that_interface_row_alone(make_host):
    from lxml import etree

    host, conn = make_host("nics", host_file(networks=2, guests=2))
    _sync(host, conn)
    before = _interfaces(host, "g1")  # g1 is shut off: its config can be redefined
    assert [link for _, link in before.values()] == ["", ""]
    _redefine(conn, "g1", lambda devices: etree.SubElement(devices.findall("interface")[1], "link", state="down"))
    assert _interface_writes(_sync(host, conn)) == ["UPDATE"]
    assert _interfaces(host, "g1") == {0: before[0], 1: (before[1][0], "down")}  # both rows kept

    _redefine(conn, "g1", lambda devices: devices.remove(devices.findall("interface")[1]))
    assert _interface_writes(_sync(host, conn)) == ["DELETE"]
    assert _interfaces(host, "g1") == {0: before[0]}


# ---------------------------------------------------------------- leases and a network's other changes

_LEASE = DhcpLease(mac="52:54:00:aa:00:01", ip="10.50.0.150", prefix=24, hostname="vm1", expires=1_900_000_000)


def _sync_with_leases(host, conn, leases) -> None:
    mirror_host(host, _with_network(snapshot.read_host(conn), "net0", leases=leases, leases_known=True))


def test_a_lease_listed_again_after_a_stop_and_start_is_mirrored(make_host):
    host, conn = make_host("restarted", host_file(networks=2, guests=0))
    net = conn.networkLookupByName("net0")
    _sync_with_leases(host, conn, (_LEASE,))
    net.destroy()  # stopped: no leases listed (and the flags changed in the same read)
    _sync(host, conn)
    assert not LeaseRow.objects.filter(network__host=host).exists()
    net.create()  # started again, and dnsmasq lists the same lease
    _sync_with_leases(host, conn, (_LEASE,))
    assert Network.objects.get(host=host, name="net0").active
    assert list(LeaseRow.objects.filter(network__host=host).values_list("address", flat=True)) == ["10.50.0.150"]


def test_a_lease_seen_with_a_flag_change_goes_when_released(make_host):
    host, conn = make_host("released", host_file(networks=2, guests=0))
    _sync_with_leases(host, conn, ())
    conn.networkLookupByName("net0").setAutostart(1)  # one read sees the flag and the lease change
    _sync_with_leases(host, conn, (_LEASE,))
    assert LeaseRow.objects.filter(network__host=host).count() == 1
    _sync_with_leases(host, conn, ())  # released
    assert not LeaseRow.objects.filter(network__host=host).exists()


def test_a_renames_mirror_row_is_renamed_under_the_hosts_lock(demo_host, admin):
    from networks.services.operations import operation_run
    from networks.services.restart import network_request_rename

    routed = Network.objects.get(host=demo_host, name="routed")
    operation = network_request_rename(network=routed, new_name="routed2", move_guests=False, actor=admin, source="web")
    with CaptureQueriesContext(connection) as queries:
        operation_run(operation.pk)
    statements = [q["sql"] for q in queries.captured_queries]
    renames = [n for n, sql in enumerate(statements) if sql.startswith('UPDATE "networks_network" SET "name"')]
    assert renames, "the row was not renamed"
    lock = 'SELECT "networks_host"."id" FROM "networks_host"'
    # The statement before (after the savepoint's) takes the lock, in the same transaction.
    assert [sql for sql in statements[renames[0] - 2 : renames[0]] if sql.startswith(lock)]
    assert Network.objects.get(pk=routed.pk).name == "routed2"


def test_an_interface_operations_re_read_links_the_guest_to_networks_read_under_the_lock(make_host):
    from networks.services.interfaces import runs

    host, conn = make_host("linked", host_file(networks=2, guests=2))
    _sync(host, conn)
    with CaptureQueriesContext(connection) as queries:
        runs._mirror_guest(Operation(host=host, target_name="g0"), conn)
    statements = [q["sql"] for q in queries.captured_queries]
    lock = next(n for n, sql in enumerate(statements) if sql.startswith('SELECT "networks_host"."id"'))
    loads = [n for n, sql in enumerate(statements) if sql.startswith('SELECT "networks_network"."name"')]
    assert loads and loads[0] > lock, "the host's networks were read before its lock was taken"
    linked = GuestInterface.objects.filter(guest__host=host, guest__name="g0", network__isnull=False)
    assert linked.exists()


# ---------------------------------------------------------------- hostile figures, digests, row writes


@pytest.mark.parametrize("mtu", ["-5", str(2**40), str(2**31), "lots"])
def test_a_network_with_an_out_of_range_figure_is_mirrored_without_it(make_host, mtu):
    host, conn = make_host(f"hostile{len(mtu)}", host_file(networks=2, guests=1))
    _sync(host, conn)
    found = snapshot.read_host(conn)
    net0 = next(read for read in found.networks if read.name == "net0")
    xml_text = net0.live_xml.replace("</network>", f"<mtu size='{mtu}'/></network>")
    mirror_host(host, _with_network(found, "net0", live_xml=xml_text, inactive_xml=xml_text))
    row = Network.objects.get(host=host, name="net0")
    assert row.mtu is None and "<mtu size=" in row.live_xml
    assert set(Network.objects.filter(host=host).values_list("name", flat=True)) == {"net0", "net1"}
    assert Guest.objects.filter(host=host).count() == 1


def test_the_largest_figure_a_column_holds_is_kept(make_host):
    host, conn = make_host("hostilemax", host_file(networks=1, guests=0))
    found = snapshot.read_host(conn)
    xml_text = found.networks[0].live_xml.replace("</network>", f"<mtu size='{2**31 - 1}'/></network>")
    mirror_host(host, _with_network(found, "net0", live_xml=xml_text, inactive_xml=xml_text))
    assert Network.objects.get(host=host, name="net0").mtu == 2**31 - 1


@pytest.mark.parametrize("version", ["2", "12", "abc"])
def test_a_digest_is_32_characters_whatever_the_version(monkeypatch, version):
    monkeypatch.setattr(snapshot, "DIGEST_VERSION", version)
    value = snapshot.digest("<network/>", "x")
    assert len(value) == 32 and value.startswith(version)
    assert value != snapshot.digest("<network/>", "y")


def test_insert_rows_refuses_a_key_that_names_no_column(make_host):
    host, _ = make_host("unknown", host_file(networks=0, guests=0))
    with pytest.raises(ValueError, match="bridgee"):
        sync.insert_rows(
            Network, [{"host_id": host.pk, "name": "n"}, {"host_id": host.pk, "name": "m", "bridgee": "b"}]
        )
    assert not Network.objects.filter(host=host).exists()


def test_update_rows_casts_to_the_columns_type_without_its_length():
    # On PostgreSQL a cast to varchar(100) cuts a longer value silently; to varchar, assigning
    # it to the column fails as an INSERT of it does. (SQL built for PostgreSQL, not run here.)
    from django.db.backends.postgresql.base import DatabaseWrapper

    postgresql = DatabaseWrapper({**connection.settings_dict, "ENGINE": "django.db.backends.postgresql"}, "pg")
    fields = [Network._meta.pk, Network._meta.get_field("bridge"), Network._meta.get_field("synced_at")]
    assert sync._unnest_sql(fields, postgresql) == (
        "SELECT * FROM UNNEST((%s)::bigint[], (%s)::varchar[], (%s)::timestamp with time zone[]) "
        "AS u(column1, column2, column3)"
    )
