"""Desired state on real daemons: networks exported from one private libvirtd and applied to
a second through kvmweb operations give the same networks; a second apply changes nothing;
a reservation added in the document reaches a running network and its guest live (dnsmasq
not restarted, the guest renews onto the reserved address).
Also measures an apply of 20 networks (printed with -s)."""

import contextlib
import time

import libvirt
import pytest
import yaml
from django.test import override_settings
from lxml import etree

from networks.choices import AuditSource, OperationKind
from networks.hypervisor import client
from networks.models import Host, Operation
from networks.services import hosts as host_services
from networks.services.desired import export_networks
from networks.services.desired_plan import apply_document, plan_document, plan_lines
from networks.services.operations import operation_run
from tests.factories import UserFactory

from .guests import boot_guest
from .kvmweb_setup import nat_network_xml, run_ok

pytestmark = pytest.mark.realvirt
WEB = AuditSource.WEB


@contextlib.contextmanager
def two_hosts(source, target):
    """Both daemons registered in kvmweb and synced: yields (source host, target host, admin)."""
    with override_settings(KVMWEB_URI_PATHS_ALLOWED=[str(source.socket_dir), str(target.socket_dir)]):
        admin = UserFactory(username="netops")
        hosts = []
        for name, daemon in (("real-a", source), ("real-b", target)):
            host = host_services.host_create(name=name, uri=daemon.uri, actor=admin, source=WEB)
            run_ok(host.operations.get())
            hosts.append(Host.objects.get(pk=host.pk))
        try:
            yield hosts[0], hosts[1], admin
        finally:
            client.disconnect(source.uri)
            client.disconnect(target.uri)


def define(conn, network_xml: str, start: bool = True, autostart: bool = False):
    network = conn.networkDefineXML(network_xml)
    if start:
        network.create()
    network.setAutostart(autostart)
    return network


def apply_and_run(text: str, host: Host, admin) -> tuple:
    started = time.monotonic()
    result = apply_document(text, [host], actor=admin, source=WEB)
    operations = [run_ok(Operation.objects.get(pk=ref["id"])) for item in result.results for ref in item["operations"]]
    return result, operations, time.monotonic() - started


def config(conn, name: str) -> str:
    return conn.networkLookupByName(name).XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)


def dnsmasq_pid(daemon, name: str) -> str:
    return daemon.private_path(f"/run/libvirt/network/{name}.pid").read_text().strip()


SOURCE_NETWORKS = {
    # name: (xml, active, autostart)
    "dsnat": (nat_network_xml("dsnat", "dsnat0", "10.91.0"), True, True),
    "dsiso": ("<network><name>dsiso</name><ip address='10.92.0.1' prefix='24'/></network>", True, False),
    "dsroute": (
        "<network><name>dsroute</name><forward mode='route'/><bridge name='dsroute0'/>"
        "<domain name='route.test'/><ip address='10.93.0.1' prefix='24'/></network>",
        False,
        False,
    ),
}


def without_uuid_and_bridge_mac(network_xml: str) -> str:
    """The config as canonical XML with only what each host assigns removed: <uuid> and the
    bridge's <mac>. Anything else a copy lost or gained makes it differ."""
    root = etree.fromstring(network_xml.encode())
    for element in [*root.findall("uuid"), *root.findall("mac")]:
        root.remove(element)
    return etree.tostring(root, method="c14n").decode()


def test_an_exported_host_applied_to_a_second_daemon_gives_the_same_networks(
    db, private_libvirtd, new_private_libvirtd
):
    target = new_private_libvirtd()
    source_conn, target_conn = private_libvirtd.connect(), target.connect()
    try:
        for network_xml, active, autostart in SOURCE_NETWORKS.values():
            define(source_conn, network_xml, active, autostart)
        with two_hosts(private_libvirtd, target) as (host_a, host_b, admin):
            text = export_networks(host_a, sorted(SOURCE_NETWORKS))
            plan = plan_document(text, [host_b])
            print("\nPLAN\n" + "\n".join(plan_lines(plan)))
            assert {item.network: item.action for item in plan.items} == dict.fromkeys(SOURCE_NETWORKS, "create")
            _result, operations, seconds = apply_and_run(text, host_b, admin)
            assert [op.kind for op in operations] == [OperationKind.NETWORK_CREATE] * 3
            for name, (_xml, active, autostart) in SOURCE_NETWORKS.items():
                copy = target_conn.networkLookupByName(name)
                assert (copy.isActive(), copy.autostart()) == (active, autostart)
                assert copy.UUIDString() != source_conn.networkLookupByName(name).UUIDString()
                assert without_uuid_and_bridge_mac(config(target_conn, name)) == without_uuid_and_bridge_mac(
                    config(source_conn, name)
                )
            # a re-export of the second host is the document itself
            assert (
                yaml.safe_load(export_networks(host_b, sorted(SOURCE_NETWORKS)))["networks"]
                == yaml.safe_load(text)["networks"]
            )

            before = Operation.objects.count()
            again = apply_document(text, [host_b], actor=admin, source=WEB)
            assert again.summary == "no changes: 3 network(s) unchanged"
            assert Operation.objects.count() == before
            print(f"MEASURED apply of 3 networks: {seconds:.2f} s")
    finally:
        source_conn.close()
        target_conn.close()
        private_libvirtd.reset()


def test_a_reservation_added_in_the_document_reaches_a_guest_live_without_restarting_dnsmasq(
    db, private_libvirtd, new_private_libvirtd, guest_image
):
    target = new_private_libvirtd()
    source_conn, target_conn = private_libvirtd.connect(), target.connect()
    try:
        define(source_conn, SOURCE_NETWORKS["dsnat"][0])
        with two_hosts(private_libvirtd, target) as (host_a, host_b, admin):
            text = export_networks(host_a, ["dsnat"])
            apply_and_run(text, host_b, admin)
            guest = boot_guest(target_conn, "ds-guest", guest_image, target.scratch / "guests", network="dsnat")
            guest.wait_for_lease(timeout=90)
            pid_before = dnsmasq_pid(target, "dsnat")
            reservation = f"<host mac='{guest.mac}' name='pinned' ip='10.91.0.5'/>"
            changed = text.replace("<dhcp>", f"<dhcp>\n        {reservation}")
            operation_run(host_services.host_request_sync(host=host_b, actor=None, source=AuditSource.SYSTEM).pk)
            plan = plan_document(changed, [host_b])
            print("\nPLAN\n" + "\n".join(plan_lines(plan)))
            [item] = plan.items
            assert item.action == "live" and len(item.updates) == 1 and "add-last ip-dhcp-host" in item.updates[0]
            _result, operations, _seconds = apply_and_run(changed, host_b, admin)
            assert [op.kind for op in operations] == [OperationKind.NETWORK_XML_LIVE]
            assert dnsmasq_pid(target, "dsnat") == pid_before  # reloaded, not restarted
            since = guest.release_renew(target)
            assert guest.wait_for_new_lease(since, timeout=30, ip="10.91.0.5").ip == "10.91.0.5"
            assert guest.mac in config(target_conn, "dsnat")
            assert apply_document(changed, [host_b], actor=admin, source=WEB).plan.changes == 0
    finally:
        source_conn.close()
        target_conn.close()
        private_libvirtd.reset()
        target.reset()


def test_measure_an_apply_of_20_networks(db, private_libvirtd, new_private_libvirtd):
    target = new_private_libvirtd()
    source_conn = private_libvirtd.connect()
    try:
        for number in range(20):
            define(source_conn, nat_network_xml(f"bench{number:02}", f"bench{number:02}", f"10.120.{number}"))
        with two_hosts(private_libvirtd, target) as (host_a, host_b, admin):
            text = export_networks(host_a)
            result, operations, seconds = apply_and_run(text, host_b, admin)
            assert len(operations) == 20 and len(target.connect().listAllNetworks()) == 20
            started = time.monotonic()
            assert apply_document(text, [host_b], actor=admin, source=WEB).plan.changes == 0
            replan = time.monotonic() - started
            print(f"\nMEASURED apply of 20 NAT networks (request + run, one worker): {seconds:.2f} s; "
                  f"second apply (plan only, no change): {replan * 1000:.0f} ms")  # fmt: skip
    finally:
        source_conn.close()
        private_libvirtd.reset()


def test_a_change_to_a_network_with_a_restart_pending_is_a_restart_that_runs_both(db, private_libvirtd):
    conn = private_libvirtd.connect()
    admin = UserFactory(username="netops")
    try:
        network = define(conn, SOURCE_NETWORKS["dsnat"][0])
        pending = network.XMLDesc(0).replace("</network>", "<domain name='pending.test'/></network>")
        conn.networkDefineXML(pending)  # the persistent config only: a restart is pending
        with override_settings(KVMWEB_URI_PATHS_ALLOWED=[str(private_libvirtd.socket_dir)]):
            created = host_services.host_create(name="real-a", uri=private_libvirtd.uri, actor=admin, source=WEB)
            run_ok(created.operations.get())
            host = Host.objects.get(pk=created.pk)
            assert host.networks.get(name="dsnat").drifted
            reservation = "<host mac='52:54:00:91:00:05' name='pinned' ip='10.91.0.5'/>"
            changed = export_networks(host, ["dsnat"]).replace("<dhcp>", f"<dhcp>\n        {reservation}")
            [item] = plan_document(changed, [host]).items
            print("\nPLAN\n" + "\n".join(plan_lines(plan_document(changed, [host]))))
            assert item.action == "restart" and not item.updates
            _result, operations, seconds = apply_and_run(changed, host, admin)
            assert [op.kind for op in operations] == [OperationKind.NETWORK_RESTART]
            running = conn.networkLookupByName("dsnat").XMLDesc(0)
            assert "pending.test" in running and "52:54:00:91:00:05" in running
            run_ok(
                Operation.objects.get(
                    pk=host_services.host_request_sync(host=host, actor=None, source=AuditSource.SYSTEM).pk
                )
            )
            assert not host.networks.get(name="dsnat").drifted
            assert plan_document(changed, [host]).changes == 0
            print(f"MEASURED define + restart of a drifted network: {seconds:.2f} s")
            client.disconnect(private_libvirtd.uri)
    finally:
        conn.close()
        private_libvirtd.reset()
