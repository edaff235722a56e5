"""The fleet overview (dashboard): what needs a look first, pools, failures, in bounded queries."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from networks.models import DhcpLease, DhcpRange, ForwardInterface, Network, NodeDevice, Operation
from networks.services.audit import audit_record
from tests.factories import HostFactory
from tests.services.test_ipam_search import network_with
from tests.views.test_global_search import fill, scoped_client

pytestmark = pytest.mark.django_db


def pool(host, name, leases, size=100):
    """A network whose DHCP range holds `size` addresses with `leases` current leases."""
    network = network_with(host, name, ["10.5.0.1/16"])
    ip = network.ips.get()
    DhcpRange.objects.create(ip=ip, start="10.5.0.1", end=f"10.5.{(size) // 256}.{size % 256}", size=size)
    DhcpLease.objects.bulk_create(
        DhcpLease(network=network, mac=f"52:54:00:07:{n // 256:02x}:{n % 256:02x}", address=f"10.5.1.{n % 250}")
        for n in range(leases)
    )
    return network


def test_unreachable_hosts_come_first_then_unsynced_then_drifted(logged_in):
    HostFactory(name="a-fine", status="reachable")
    HostFactory(name="b-new", status="unknown")
    drifting = HostFactory(name="c-drifting", status="reachable")
    Network.objects.create(host=drifting, name="changed", drifted=True)
    HostFactory(name="z-down", status="unreachable", last_error="Cannot recv data")
    page = logged_in.get(reverse("networks:dashboard")).content.decode()
    table = page[page.index('id="dashboard-hosts"') :]
    order = sorted(["a-fine", "b-new", "c-drifting", "z-down"], key=table.index)
    assert order == ["z-down", "b-new", "c-drifting", "a-fine"]
    assert "1 unreachable" in page and "Cannot recv data" in page
    assert 'id="dashboard-drifted"' in page and "changed" in page


def test_the_host_table_is_paginated(logged_in):
    for n in range(30):
        HostFactory(name=f"kvm{n:02d}", status="reachable")
    first = logged_in.get(reverse("networks:dashboard")).content.decode()
    assert "kvm24" in first and "kvm25" not in first and "hosts page 1 of 2" in first
    second = logged_in.get(reverse("networks:dashboard"), {"hosts_page": "2"}).content.decode()
    assert "kvm25" in second and "kvm29" in second and "kvm00" not in second
    for bad in ("two", "²", "٣", "-1"):  # Unicode digits pass str.isdigit() but not int()
        assert logged_in.get(reverse("networks:dashboard"), {"hosts_page": bad}).status_code == 400


def test_networks_by_mode(logged_in):
    host = HostFactory(name="kvm1")
    for name, mode in (("a", "nat"), ("b", "nat"), ("c", ""), ("d", "route")):
        Network.objects.create(host=host, name=name, forward_mode=mode)
    page = logged_in.get(reverse("networks:dashboard")).content.decode()
    modes = page[page.index('id="dashboard-modes"') : page.index("</table>", page.index('id="dashboard-modes"'))]
    assert "<td>NAT</td><td>2</td>" in modes and "<td>Isolated</td><td>1</td>" in modes
    assert "<td>Routed</td><td>1</td>" in modes


def test_the_fullest_dhcp_pools_are_listed_and_warned_from_90_percent(logged_in):
    host = HostFactory(name="kvm1")
    pool(host, "full", 95)
    pool(host, "half", 50)
    pool(host, "edge", 89)
    expired = pool(host, "stale", 0)
    DhcpLease.objects.create(network=expired, mac="52:54:00:09:00:01", address="10.5.1.1",
                             expires_at=timezone.now() - timedelta(hours=1))  # fmt: skip
    page = logged_in.get(reverse("networks:dashboard")).content.decode()
    table = page[page.index('id="dashboard-pools"') : page.index("</table>", page.index('id="dashboard-pools"'))]
    assert sorted(["full", "edge", "half"], key=table.index) == ["full", "edge", "half"]
    assert "95 of 100" in table and "89 of 100" in table and "stale" not in table
    assert table.count("over 90%") == 1  # only the 95% one


def test_a_range_written_without_its_size_still_counts():
    host = HostFactory(name="kvm1")
    network = network_with(host, "old", ["10.6.0.1/24"])
    DhcpRange.objects.create(ip=network.ips.get(), start="10.6.0.101", end="10.6.0.110")  # size not stored
    DhcpLease.objects.create(network=network, mac="52:54:00:06:00:01", address="10.6.0.101")
    from networks import overview

    [usage] = overview.fullest_pools(None)
    assert (usage.network.name, usage.leases, usage.size, usage.percent) == ("old", 1, 10, 10)


def test_failed_operations_of_the_last_day_only(logged_in):
    host = HostFactory(name="kvm1")
    recent = Operation.objects.create(kind="network.start", status="failed", host=host, host_name="kvm1",
                                      target_name="lab", lock_key="x", error="network is already active")  # fmt: skip
    old = Operation.objects.create(kind="network.stop", status="failed", host=host, host_name="kvm1",
                                   target_name="old-lab", lock_key="y")  # fmt: skip
    Operation.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    Operation.objects.create(kind="host.sync", status="succeeded", host=host, host_name="kvm1", lock_key="z")
    page = logged_in.get(reverse("networks:dashboard")).content.decode()
    table = page[page.index('id="dashboard-failed"') : page.index("</table>", page.index('id="dashboard-failed"'))]
    assert recent.get_absolute_url() in table and "network is already active" in table and "old-lab" not in table


def test_vf_pools_show_their_use(logged_in):
    host = HostFactory(name="kvm1")
    sriov = Network.objects.create(host=host, name="sriov-pool", forward_mode="hostdev", connections=4)
    ForwardInterface.objects.create(network=sriov, kind="pf", dev="ens1f0")
    NodeDevice.objects.create(host=host, name="pci_0000_3b_00_0", capability="pci", net_interface="ens1f0",
                              vf_addresses=[f"0000:3b:10.{n}" for n in range(4)])  # fmt: skip
    page = logged_in.get(reverse("networks:dashboard")).content.decode()
    table = page[page.index('id="dashboard-vf-pools"') : page.index("</table>", page.index('id="dashboard-vf-pools"'))]
    assert "sriov-pool" in table and "4 of 4" in table and "full" in table


def test_recent_audit_events_and_scope(client):
    mine, theirs = HostFactory(name="mine"), HostFactory(name="theirs", status="unreachable")
    fill(mine, 1)
    fill(theirs, 2)
    audit_record(action="network.start.requested", source="web", object_type="network", object_name="lan1", host=mine)
    audit_record(action="network.stop.requested", source="web", object_type="network", object_name="lan2", host=theirs)
    page = scoped_client(client, mine).get(reverse("networks:dashboard")).content.decode()
    events = page[page.index('id="dashboard-audit"') :]
    assert "network.start.requested" in events and "network.stop.requested" not in events
    assert ">theirs<" not in page and "unreachable</span>" not in page and "lan2" not in page


def test_the_dashboard_costs_the_same_queries_at_n_and_3n_hosts(logged_in):
    def grow(start, count):
        for n in range(start, start + count):
            host = HostFactory(name=f"kvm{n}", status="unreachable" if n % 2 else "reachable")
            fill(host, n)
            pool(host, f"pool{n}", n)
            sriov = Network.objects.create(host=host, name="sriov", forward_mode="hostdev", connections=1)
            ForwardInterface.objects.create(network=sriov, kind="pf", dev="ens1f0")
            Operation.objects.create(kind="network.start", status="failed", host=host, host_name=host.name,
                                     lock_key=f"l{n}")  # fmt: skip
            audit_record(action="host.sync.requested", source="web", object_type="host", host=host)

    def count():
        with CaptureQueriesContext(connection) as queries:
            assert logged_in.get(reverse("networks:dashboard")).status_code == 200
        return len(queries)

    grow(1, 2)
    small = count()
    grow(3, 4)
    assert count() == small
