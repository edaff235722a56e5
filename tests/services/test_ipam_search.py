"""The Addresses search in SQL: subnets by stored bounds, MACs in any form, names by prefix."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from networks import search
from networks.models import DhcpLease, DhcpRange, DhcpReservation, Guest, GuestInterface, Network, NetworkIp
from tests.factories import HostFactory

pytestmark = pytest.mark.django_db


def network_with(host, name, subnets, *, reservations=(), leases=(), bounds=True):
    """A network with `<ip>`s ("10.1.0.1/24", "fd00:1::1/64") and reservations (mac, ip, name)."""
    uuid = f"{Network.objects.count() + 1:08x}-{host.pk:04x}-4000-8000-000000000000"
    network = Network.objects.create(host=host, name=name, uuid=uuid)
    ips = []
    for position, text in enumerate(subnets):
        address, prefix = text.split("/")
        extra = NetworkIp.bounds_of(address, int(prefix)) if bounds else {}
        family = "ipv6" if ":" in address else "ipv4"
        ips.append(
            NetworkIp.objects.create(
                network=network, position=position, address=address, prefix=int(prefix), family=family, **extra
            )
        )
    for mac, ip, res_name in reservations:
        DhcpReservation.objects.create(network=network, ip=ips[0], address=ip, mac=mac, name=res_name)
    for mac, ip, hostname in leases:
        DhcpLease.objects.create(network=network, mac=mac, address=ip, hostname=hostname)
    return network


def test_bounds_are_the_first_and_last_address_as_sortable_keys():
    assert NetworkIp.bounds_of("10.1.2.3", 24) == {
        "subnet_start": "0" * 24 + "0a010200",
        "subnet_end": "0" * 24 + "0a0102ff",
    }
    v6 = NetworkIp.bounds_of("fd00:1::1", 64)
    assert v6["subnet_start"] == "fd000001" + "0" * 24 and v6["subnet_end"] == "fd000001" + "0" * 8 + "f" * 16
    assert NetworkIp.bounds_of("not-an-ip", 24) == {"subnet_start": "", "subnet_end": ""}
    assert DhcpRange.size_of("10.0.0.100", "10.0.0.199") == 100 and DhcpRange.size_of("10.0.0.9", "10.0.0.1") == 0


def test_an_ipv4_address_finds_the_subnets_that_contain_it_and_no_other():
    host = HostFactory(name="kvm1")
    network_with(host, "lan", ["10.1.0.1/24"])
    network_with(host, "wide", ["10.0.0.1/8"])
    network_with(host, "next", ["10.1.1.1/24"])
    network_with(host, "v6", ["fd00:1::1/64"])
    found = search.ipam_search("10.1.0.200")
    assert sorted(f"{ip.network.name} {ip}" for ip in found.subnets) == ["lan 10.1.0.1/24", "wide 10.0.0.1/8"]
    assert [ip.network.name for ip in search.ipam_search("10.1.0.0").subnets] == ["lan", "wide"]  # the first address
    assert [ip.network.name for ip in search.ipam_search("10.1.0.255").subnets] == ["lan", "wide"]  # and the last
    assert search.ipam_search("192.168.1.1").subnets.rows == []


def test_an_ipv6_address_finds_its_subnet_in_any_spelling():
    host = HostFactory(name="kvm1")
    network_with(host, "dual", ["192.168.50.1/24", "fd00:1::1/64"])
    network_with(host, "other6", ["fd00:2::1/64"])
    for spelling in ("fd00:1::abcd", "FD00:0001:0000:0000:0000:0000:0000:ABCD"):
        assert [str(ip) for ip in search.ipam_search(spelling).subnets] == ["fd00:1::1/64"]
    assert search.ipam_search("fd00:3::1").subnets.rows == []


def test_a_subnet_written_without_its_bounds_is_still_found():
    network_with(HostFactory(name="kvm1"), "old", ["10.9.0.1/24"], bounds=False)
    assert [ip.network.name for ip in search.ipam_search("10.9.0.7").subnets] == ["old"]


def test_a_subnet_row_whose_address_cannot_be_read_is_skipped_not_an_error():
    """The rows without bounds are the ones whose address `bounds_of` could not read."""
    from networks.models import NetworkIp

    network = network_with(HostFactory(name="kvm1"), "old", ["10.9.0.1/24"], bounds=False)
    NetworkIp.objects.filter(network=network).update(prefix=99)  # no such IPv4 prefix
    assert list(search.ipam_search("10.9.0.7").subnets) == []


def test_a_mac_is_found_in_any_case_and_form():
    host = HostFactory(name="kvm1")
    network = network_with(
        host,
        "lan",
        ["10.1.0.1/24"],
        reservations=[("52:54:00:ab:cd:ef", "10.1.0.10", "web01")],
        leases=[("52:54:00:ab:cd:ef", "10.1.0.10", "web01")],
    )
    guest = Guest.objects.create(host=host, name="web01")
    GuestInterface.objects.create(guest=guest, position=0, type="network", mac="52:54:00:ab:cd:ef", network=network)
    for spelling in ("52:54:00:AB:CD:EF", "52-54-00-ab-cd-ef", "5254.00ab.cdef", "525400ABCDEF"):
        found = search.ipam_search(spelling)
        assert [r.address for r in found.reservations] == ["10.1.0.10"], spelling
        assert [lease.hostname for lease in found.leases] == ["web01"], spelling
        assert [i.guest.name for i in found.interfaces] == ["web01"], spelling
    assert [r.name for r in search.ipam_search("52:54:00:AB").reservations] == ["web01"]  # a MAC's start
    assert search.ipam_search("52:54:00:ab:cd:ee").empty


def test_an_address_finds_reservations_and_leases_exactly():
    network_with(
        HostFactory(name="kvm1"),
        "lan",
        ["10.1.0.1/24"],
        reservations=[("52:54:00:00:00:01", "10.1.0.10", "a"), ("52:54:00:00:00:02", "10.1.0.100", "b")],
        leases=[("52:54:00:00:00:03", "10.1.0.10", "c")],
    )
    found = search.ipam_search("10.1.0.10")
    assert [r.name for r in found.reservations] == ["a"] and [lease.hostname for lease in found.leases] == ["c"]


def test_names_match_from_their_start_in_any_case():
    network_with(
        HostFactory(name="kvm1"),
        "lan",
        ["10.1.0.1/24"],
        reservations=[
            ("52:54:00:00:00:01", "10.1.0.10", "Web01"),
            ("52:54:00:00:00:02", "10.1.0.11", "web-2"),
            ("52:54:00:00:00:03", "10.1.0.12", "myweb"),
        ],
        leases=[("52:54:00:00:00:04", "10.1.0.13", "WEBBY")],
    )
    found = search.ipam_search("web")
    assert sorted(r.name for r in found.reservations) == ["Web01", "web-2"]
    assert [lease.hostname for lease in found.leases] == ["WEBBY"]
    assert [r.name for r in search.ipam_search("WEB01").reservations] == ["Web01"]


def test_results_are_bounded_and_say_there_are_more():
    network_with(
        HostFactory(name="kvm1"),
        "lan",
        ["10.1.0.1/24"],
        reservations=[(f"52:54:00:00:00:{n:02x}", f"10.1.0.{n + 10}", f"node{n:02d}") for n in range(8)],
    )
    found = search.ipam_search("node", limit=5)
    assert [r.name for r in found.reservations] == ["node00", "node01", "node02", "node03", "node04"]
    assert found.reservations.more and not found.leases.more


def test_another_hosts_rows_are_not_searched():
    mine, theirs = HostFactory(name="mine"), HostFactory(name="theirs")
    network_with(mine, "lan", ["10.1.0.1/24"], reservations=[("52:54:00:00:00:01", "10.1.0.10", "web01")])
    network_with(theirs, "lan", ["10.1.0.1/24"], reservations=[("52:54:00:00:00:02", "10.1.0.10", "web02")])
    found = search.ipam_search("10.1.0.10", host_ids={mine.pk})
    assert [r.name for r in found.reservations] == ["web01"]
    assert [ip.network.host.name for ip in found.subnets] == ["mine"]


@pytest.mark.parametrize("query", ["10.1.0.10", "52:54:00:00:00:01", "web", "fd00:1::5"])
def test_a_search_costs_the_same_queries_at_n_and_3n_hosts(query):
    def fleet(start, count):
        for h in range(start, start + count):
            host = HostFactory(name=f"kvm{h}")
            network_with(
                host,
                "lan",
                ["10.1.0.1/24", "fd00:1::1/64"],
                reservations=[(f"52:54:00:00:{h:02x}:{n:02x}", f"10.1.0.{10 + n}", f"web{h}-{n}") for n in range(3)],
                leases=[(f"52:54:00:01:{h:02x}:00", "10.1.0.100", f"web{h}")],
            )

    def count():
        with CaptureQueriesContext(connection) as queries:
            search.ipam_search(query)
        return len(queries)

    fleet(0, 2)
    small = count()
    fleet(2, 4)
    assert count() == small


@pytest.mark.parametrize("raw", ["", "x", " y ", "a" * 254, "ab\x00cd", "ab\ncd"])
def test_text_that_cannot_be_searched_for_is_refused(raw):
    with pytest.raises(search.BadQuery):
        search.clean_query(raw)


def test_what_a_query_is_read_as():
    assert search.parse("5254.00AB.CDEF").mac == "52:54:00:ab:cd:ef"
    dotted_ip = search.parse("100.200.100.200")
    assert (dotted_ip.mac, dotted_ip.address, dotted_ip.by_name) == ("", "100.200.100.200", False)
    bare = search.parse("deadbeefcafe")
    assert bare.mac == "de:ad:be:ef:ca:fe" and bare.by_name  # a MAC or a name: both
    assert not search.parse("52:54:00:ab:cd:ef").by_name
    assert search.parse("fe80::1").mac == "" and search.parse("fe80::1").address == "fe80::1"
    assert search.parse("ab").mac_prefix == "" and search.parse("ab:cd").mac_prefix == "ab:cd"
    assert search.parse("ABCDEF01-2345-6789-ABCD-EF0123456789").uuid == "abcdef01-2345-6789-abcd-ef0123456789"
