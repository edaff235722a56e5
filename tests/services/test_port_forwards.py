"""Port forward requests on the demo fleet: every refusal, the warning, roles, the rule set the
host worker would install, and a run outside the host worker.

Applying rules needs root in a network namespace: that is proved in tests/realvirt.
"""

import contextlib
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from networks.choices import ForwardState, OperationStatus
from networks.forwarding import rules as fw
from networks.forwarding.engine import ApplyReport
from networks.forwarding.rules import ForwardRule
from networks.hypervisor import client
from networks.hypervisor import networks as hv_networks
from networks.hypervisor.errors import InvalidUri
from networks.hypervisor.types import DhcpLease as LibvirtLease
from networks.models import AuditEvent, DhcpLease, Guest, Network, Operation, PortForward
from networks.services import forwards as fs
from networks.services import operations
from networks.services.connections import host_connection
from networks.services.forwards import checks, hostside
from networks.services.interfaces import UPDATE, guest_interface_request
from networks.services.permissions import PermissionDenied
from networks.services.restart import network_request_restart, network_restart_preview
from tests.conftest import run_to_end
from tests.factories import HostFactory, UserFactory

REPO = Path(__file__).resolve().parents[2]
BUILD01_MAC = "52:54:00:0c:00:41"  # build01's NIC on routed (virbr2), no reservation


@pytest.fixture
def host(demo_host):
    """The demo host with a host worker queue (forwards need one)."""
    demo_host.queue = "demo-host"
    demo_host.save()
    return demo_host


def guest(host, name):
    return Guest.objects.get(host=host, name=name)


def spec(host, name="web01", **values):
    fields = {"host_port_start": 8080, "guest_port_start": 80, **values}
    return fs.ForwardSpec(guest=guest(host, name), **fields)


def create(host, actor, name="web01", **values):
    return fs.port_forward_request_create(host=host, spec=spec(host, name, **values), actor=actor, source="api")


def refused(host, actor, field, **values):
    """The request's ValidationError messages for `field`; checks nothing was saved."""
    forwards, operations = PortForward.objects.count(), Operation.objects.count()
    with pytest.raises(ValidationError) as caught:
        create(host, actor, **values)
    assert (PortForward.objects.count(), Operation.objects.count()) == (forwards, operations)
    return " ".join(caught.value.message_dict[field])


# ---------------------------------------------------------------- accepted


def test_a_forward_to_a_reserved_guest_is_saved_and_queued_for_the_host_worker(host, admin):
    requested = create(host, admin, comment="web")
    forward = PortForward.objects.get()
    assert (forward.guest_name, forward.guest_mac, forward.guest_address) == ("web01", "52:54:00:0a:00:11",
                                                                             "192.168.122.11")  # fmt: skip
    assert (forward.host_ports, forward.guest_ports, forward.protocol, forward.comment) == ("8080", "80", "tcp", "web")
    assert requested.warnings == ()
    operation = requested.operation
    assert (operation.kind, operation.status, operation.lock_key) == (
        "port_forward.create",
        OperationStatus.QUEUED,
        f"host:{host.pk}",
    )
    event = AuditEvent.objects.get(action="port_forward.create.requested")
    assert event.object_type == "port_forward" and event.actor_name == admin.username


def test_a_guest_without_a_reservation_is_warned_and_offered_one(host, admin):
    requested = create(host, admin, name="build01")  # on routed, no reservation, shut off
    [warning] = requested.warnings
    assert "build01 has no DHCP reservation on routed" in warning.message
    assert "its address may change: reserve it" in warning.message
    routed = Network.objects.get(host=host, name="routed")
    assert warning.link.startswith(f"/networks/{routed.pk}/edit/ip-dhcp-host/?")
    assert "mac=52%3A54%3A00%3A0c%3A00%3A41" in warning.link and "name=build01" in warning.link
    assert PortForward.objects.get().guest_name == "build01", "a warning does not refuse"


def test_forwarding_the_hosts_ssh_port_on_every_address_is_warned(host, admin):
    requested = create(host, admin, host_port_start=22, guest_port_start=22)
    assert any("hypervisor's own SSH" in w.message for w in requested.warnings)


def test_the_same_port_for_another_protocol_or_another_host_address_is_free(host, admin):
    create(host, admin, host_address="198.51.100.7")
    create(host, admin, protocol="udp")
    create(host, admin, host_address="198.51.100.8")
    assert PortForward.objects.count() == 3


def test_equal_ranges_are_accepted(host, admin):
    create(host, admin, host_port_start=8000, host_port_end=8009, guest_port_start=9000, guest_port_end=9009)
    forward = PortForward.objects.get()
    assert (forward.host_ports, forward.guest_ports) == ("8000-8009", "9000-9009")


def test_source_cidrs_are_kept_once_each(host, admin):
    create(host, admin, source_cidrs=["203.0.113.0/24", "198.51.100.9/32", "203.0.113.0/24"])
    assert PortForward.objects.get().source_cidrs == ["203.0.113.0/24", "198.51.100.9/32"]


# ---------------------------------------------------------------- refused


def test_a_host_port_outside_1_to_65535_is_refused(host, admin):
    assert "outside 1-65535" in refused(host, admin, "host_port", host_port_start=0)
    assert "outside 1-65535" in refused(host, admin, "host_port_end", host_port_end=65536)


def test_a_guest_port_outside_1_to_65535_is_refused(host, admin):
    assert "outside 1-65535" in refused(host, admin, "guest_port", guest_port_start=70000)


def test_a_port_that_is_not_a_number_is_refused(host, admin):
    assert "port number" in refused(host, admin, "host_port", host_port_start="80")
    assert "port number" in refused(host, admin, "guest_port", guest_port_start=True)


def test_ranges_of_different_length_are_refused(host, admin):
    message = refused(host, admin, "guest_port", host_port_start=8000, host_port_end=8009, guest_port_start=80)
    assert "10 port(s)" in message and "same length" in message


def test_a_range_that_ends_before_it_starts_is_refused(host, admin):
    assert "ends (7999) before it starts (8000)" in refused(
        host, admin, "host_port_end", host_port_start=8000, host_port_end=7999
    )


def test_a_host_port_already_forwarded_on_the_host_is_refused_naming_the_forward(host, admin):
    first = create(host, admin, host_port_start=8000, host_port_end=8010, guest_port_start=8000, guest_port_end=8010)
    message = refused(host, admin, "host_port", host_port_start=8010, guest_port_start=80)
    assert f"forward #{first.forward.pk}" in message and "tcp/8000-8010" in message


def test_every_address_overlaps_a_forward_on_one_address(host, admin):
    create(host, admin, host_address="198.51.100.7")
    assert "already forwarded" in refused(host, admin, "host_port")


def test_a_disabled_forward_still_holds_its_port(host, admin):
    create(host, admin, enabled=False)
    assert "(disabled)" in refused(host, admin, "host_port", name="db01")


def test_a_host_address_that_is_not_ipv4_is_refused(host, admin):
    assert "not an IPv4 address" in refused(host, admin, "host_address", host_address="fd00::1")
    assert "not an IPv4 address" in refused(host, admin, "host_address", host_address="kvm1")


def test_a_host_address_that_cannot_be_the_hosts_is_refused(host, admin):
    assert "cannot be an address" in refused(host, admin, "host_address", host_address="127.0.0.1")
    assert "cannot be an address" in refused(host, admin, "host_address", host_address="224.0.0.1")
    assert "guest subnet 192.168.122.0/24" in refused(host, admin, "host_address", host_address="192.168.122.50")


def test_a_source_cidr_with_host_bits_set_is_refused_not_masked(host, admin):
    assert "'10.0.0.1/24' is not an IPv4 network" in refused(host, admin, "source_cidrs", source_cidrs=["10.0.0.1/24"])


def test_source_cidrs_that_are_not_a_list_of_ipv4_networks_are_refused(host, admin):
    assert "list of IPv4 networks" in refused(host, admin, "source_cidrs", source_cidrs="10.0.0.0/8")
    assert "written as text" in refused(host, admin, "source_cidrs", source_cidrs=[10])
    assert "not an IPv4 network" in refused(host, admin, "source_cidrs", source_cidrs=["fd00::/8"])


def test_a_guest_that_is_not_on_a_nat_or_routed_network_is_refused_saying_why(host, admin):
    message = refused(host, admin, "guest", name="nas01")  # on the host bridge br0
    assert "nas01 has no interface on a NAT or routed network" in message and "br0" in message


def test_a_guest_of_another_host_is_refused(host, admin, default_uri):
    other = HostFactory(name="other", uri=default_uri)
    stranger = Guest.objects.create(host=other, name="stranger")
    with pytest.raises(ValidationError, match="stranger runs on other, not on demo"):
        fs.port_forward_request_create(
            host=host, spec=fs.ForwardSpec(guest=stranger, host_port_start=1, guest_port_start=1), actor=admin,
            source="api",
        )  # fmt: skip


def test_a_host_without_a_host_worker_is_refused(demo_host, admin):
    message = refused(demo_host, admin, "host")
    assert "need demo's host worker" in message and "scripts/host-worker.sh demo" in message


def test_a_comment_that_is_not_printable_text_is_refused(host, admin):
    assert "printable text" in refused(host, admin, "comment", comment="a\x00b")


# ---------------------------------------------------------------- roles


def test_a_viewer_may_not_create_a_forward_and_the_refusal_is_audited(host):
    viewer = UserFactory(username="watcher", role="viewer")
    with pytest.raises(PermissionDenied, match="operator"):
        create(host, viewer)
    assert not PortForward.objects.exists()
    assert AuditEvent.objects.filter(action="port_forward.create.denied", actor_name="watcher").count() == 1


def test_a_viewer_may_not_delete_or_reapply_and_each_refusal_is_audited(host, admin):
    forward = create(host, admin).forward
    viewer = UserFactory(username="watcher", role="viewer")
    with pytest.raises(PermissionDenied):
        fs.port_forward_request_delete(forward=forward, actor=viewer, source="web")
    with pytest.raises(PermissionDenied):
        fs.port_forward_request_reapply(host=host, actor=viewer, source="web")
    with pytest.raises(PermissionDenied):
        fs.port_forward_request_update(forward=forward, changes={"comment": "x"}, actor=viewer, source="web")
    assert PortForward.objects.filter(pk=forward.pk, comment="").exists()
    denied = AuditEvent.objects.filter(actor_name="watcher", action__endswith=".denied").values_list(
        "action", flat=True
    )
    assert sorted(denied) == ["port_forward.delete.denied", "port_forward.reapply.denied", "port_forward.update.denied"]


def test_an_operator_may_create_forwards(host):
    operator = UserFactory(username="op", role="operator")
    assert create(host, operator).operation.requested_by == operator


# ---------------------------------------------------------------- change, delete, re-apply


def test_a_change_is_checked_against_the_other_forwards_but_not_itself(host, admin):
    forward = create(host, admin).forward
    other = create(host, admin, host_port_start=9090).forward
    requested = fs.port_forward_request_update(
        forward=forward, changes={"host_port_start": 8081, "host_port_end": None, "comment": "moved"}, actor=admin,
        source="api",
    )  # fmt: skip
    forward.refresh_from_db()
    assert (forward.host_ports, forward.comment, requested.operation.kind) == ("8081", "moved", "port_forward.update")
    event = AuditEvent.objects.get(action="port_forward.update.requested")
    assert '"host_ports": "8080"' in event.before_xml, "the audit log keeps the forward as it was"
    with pytest.raises(ValidationError, match=f"forward #{other.pk}"):
        fs.port_forward_request_update(forward=forward, changes={"host_port_start": 9090}, actor=admin, source="api")


def test_deleting_removes_the_row_and_leaves_the_operation_what_it_removes(host, admin):
    forward = create(host, admin).forward
    operation = fs.port_forward_request_delete(forward=forward, actor=admin, source="web", message="gone")
    assert not PortForward.objects.exists()
    assert operation.kind == "port_forward.delete" and operation.params["description"] == "tcp/8080 → web01:80"
    event = AuditEvent.objects.get(action="port_forward.delete.requested")
    assert '"guest": "web01"' in event.before_xml and event.message == "gone"


def test_a_reapply_of_a_host_is_one_host_wide_operation(host, admin):
    operation = fs.port_forward_request_reapply(host=host, actor=admin, source="api")
    assert (operation.kind, operation.lock_key, operation.params) == (
        "port_forward.reapply",
        f"host:{host.pk}",
        {"forward_id": None},
    )


def test_a_run_outside_the_host_worker_fails_saying_so(host, admin, settings):
    settings.KVMWEB_HOST_WORKER = ""
    finished = run_to_end(create(host, admin).operation.pk)
    assert finished.status == OperationStatus.FAILED
    assert "applied by its host worker (scripts/host-worker.sh demo" in finished.error
    assert PortForward.objects.get().state == ForwardState.UNKNOWN, "nothing claims the rules are there"


def test_a_run_in_another_hosts_worker_fails_too(host, admin, settings):
    settings.KVMWEB_HOST_WORKER = "kvm7"
    finished = run_to_end(create(host, admin).operation.pk)
    assert finished.status == OperationStatus.FAILED and "KVMWEB_HOST_WORKER is kvm7" in finished.error


# ---------------------------------------------------------------- the rule set the host worker installs


def test_the_rule_set_holds_each_enabled_forward_with_its_reserved_address(host, admin, demo_uri):
    web = create(host, admin, source_cidrs=["203.0.113.0/24"]).forward
    db = create(host, admin, name="db01", protocol="udp", host_address="198.51.100.7", host_port_start=5353,
                guest_port_start=53).forward  # fmt: skip
    create(host, admin, host_port_start=9000, enabled=False)
    rules = list(fs.host_forward_plan(host, client.connect(demo_uri)).rules)
    assert rules == [
        ForwardRule(forward_id=web.pk, protocol="tcp", host_address=None, host_port_start=8080, host_port_end=8080,
                    guest_name="web01", guest_mac="52:54:00:0a:00:11", guest_address="192.168.122.11",
                    guest_port_start=80, guest_port_end=80, bridge="virbr0", source_cidrs=("203.0.113.0/24",)),
        ForwardRule(forward_id=db.pk, protocol="udp", host_address="198.51.100.7", host_port_start=5353,
                    host_port_end=5353, guest_name="db01", guest_mac="52:54:00:0b:00:21", guest_address="10.30.0.21",
                    guest_port_start=53, guest_port_end=53, bridge="virbr3"),
    ]  # fmt: skip


def test_a_guest_with_neither_reservation_nor_lease_gets_no_rule_and_says_why(host, admin, demo_uri):
    forward = create(host, admin, name="build01").forward  # the test driver lists no leases
    plan = fs.host_forward_plan(host, client.connect(demo_uri))
    assert plan.rules == ()
    state, why = plan.not_applied[forward.pk]
    assert state == ForwardState.NO_ADDRESS and "no reservation and no lease" in why
    assert plan.networks[forward.pk] == "routed"


# ---------------------------------------------------------------- what pages read


def test_a_forward_reads_host_worker_absent_while_the_worker_is_silent(host, admin, settings):
    settings.KVMWEB_HOST_WORKER_HEARTBEAT_SECONDS = 30
    forward = create(host, admin).forward
    forward.state = ForwardState.PRESENT
    assert fs.live_state(forward) == ForwardState.WORKER_ABSENT, "never seen"
    host.worker_seen_at = timezone.now() - timedelta(seconds=91)
    assert fs.live_state(forward) == ForwardState.WORKER_ABSENT, "silent for more than three heartbeats"
    host.worker_seen_at = timezone.now() - timedelta(seconds=80)
    assert fs.live_state(forward) == ForwardState.PRESENT


# ---------------------------------------------------------------- network restarts


def test_the_restart_preview_lists_the_forwards_of_the_networks_guests(host, admin):
    forward = create(host, admin).forward
    create(host, admin, name="db01", host_port_start=5432, guest_port_start=5432)  # on dualstack
    preview = network_restart_preview(Network.objects.get(host=host, name="default"))
    assert preview.forwards == [forward]


def test_a_restart_on_a_central_worker_says_its_forwards_were_not_verified(host, admin, settings):
    settings.KVMWEB_HOST_WORKER = ""
    forward = create(host, admin, name="build01").forward
    routed = Network.objects.get(host=host, name="routed")  # build01 is shut off: nothing to re-plug
    finished = run_to_end(network_request_restart(network=routed, actor=admin, source="web").pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    assert "were not re-applied or verified" in finished.result["forwards_note"]
    [row] = finished.result["forwards"]
    assert (row["id"], row["verified"], row["network"]) == (forward.pk, False, "routed")


def test_a_protocol_other_than_tcp_or_udp_is_refused(host, admin):
    assert "tcp, udp" in refused(host, admin, "protocol", protocol="icmp")


def test_the_host_worker_leaves_out_a_forward_on_an_address_its_host_does_not_hold(host, admin, demo_uri):
    """kvmweb cannot see the host's own addresses from afar; the host worker can, by binding to it."""
    from networks.services.forwards import hostside

    here = create(host, admin, host_address="198.51.100.7").forward  # TEST-NET-2: no machine here holds it
    plan = fs.host_forward_plan(host, client.connect(demo_uri))
    local = hostside.ForwardPlan(
        plan.rules + (replace(plan.rules[0], forward_id=here.pk + 1, host_address="127.0.0.1"),),
        plan.not_applied,
        plan.networks,
    )
    kept = hostside._only_local_addresses(local)
    assert [rule.host_address for rule in kept.rules] == ["127.0.0.1"]
    assert kept.not_applied[here.pk] == (ForwardState.MISSING, "198.51.100.7 is not an address of this host")


# ---------------------------------------------------------------- long ranges, concurrent requests


def test_a_range_moved_to_other_guest_ports_is_at_most_1024_ports(host, admin):
    message = refused(host, admin, "guest_port", host_port_start=10000, host_port_end=11024,
                      guest_port_start=20000, guest_port_end=21024)  # fmt: skip
    assert "at most 1024 ports long; this one has 1025" in message and "10000-11024" in message
    create(host, admin, host_port_start=10000, host_port_end=11023, guest_port_start=20000, guest_port_end=21023)
    assert PortForward.objects.get().host_ports == "10000-11023"


def test_a_range_kept_on_its_own_ports_has_no_such_limit(host, admin):
    create(host, admin, host_port_start=30000, host_port_end=40000, guest_port_start=30000, guest_port_end=40000)
    assert PortForward.objects.get().guest_ports == "30000-40000"


@pytest.fixture
def not_enqueued(monkeypatch):
    """Committed operations stay queued rows: no broker in these tests."""
    monkeypatch.setattr(operations, "enqueue", lambda operation: None)


def test_two_requests_for_one_host_port_at_the_same_moment_save_one_forward(
    not_enqueued, transactional_db, host, admin, monkeypatch
):
    """Each request waits, after its overlap check, for the other to pass its own: without the
    host lock both checks see no forward and both save one; with it the second request's check
    runs only once the first is saved (the first waits alone until the barrier gives up)."""
    barrier = threading.Barrier(2, timeout=3)
    check_overlap = checks.check_overlap

    def check_then_wait_for_the_other(*args, **kwargs):
        check_overlap(*args, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()

    monkeypatch.setattr(checks, "check_overlap", check_then_wait_for_the_other)
    outcomes = []

    def request(name: str) -> None:
        try:
            create(host, admin, name=name)
            outcomes.append("saved")
        except ValidationError as error:
            outcomes.append("refused: " + " ".join(error.message_dict["host_port"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=request, args=(name,)) for name in ("web01", "db01")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    saved = PortForward.objects.get()  # exactly one
    assert sorted(outcomes) == [
        f"refused: tcp/8080 is already forwarded on demo by forward #{saved.pk} ({saved}).",
        "saved",
    ]


# ---------------------------------------------------------------- which address, and following it


def test_the_warning_and_the_host_worker_both_choose_the_newest_lease(host, admin, demo_uri, monkeypatch):
    routed = Network.objects.get(host=host, name="routed")
    now = timezone.now()
    DhcpLease.objects.create(
        network=routed, mac=BUILD01_MAC, address="10.20.0.150", expires_at=now + timedelta(minutes=5)
    )
    DhcpLease.objects.create(
        network=routed, mac=BUILD01_MAC, address="10.20.0.160", expires_at=now + timedelta(hours=1)
    )
    requested = create(host, admin, name="build01")
    [warning] = requested.warnings
    assert "(it has 10.20.0.160 now)" in warning.message and "ip=10.20.0.160" in warning.link
    assert requested.forward.guest_address == "10.20.0.160"

    epoch = int(now.timestamp())
    _libvirt_leases(monkeypatch, {"routed": [(BUILD01_MAC, "10.20.0.160", epoch + 3600),
                                             (BUILD01_MAC, "10.20.0.150", epoch + 300)]})  # fmt: skip
    [rule] = fs.host_forward_plan(host, client.connect(demo_uri)).rules
    assert rule.guest_address == "10.20.0.160"


def test_the_no_reservation_warning_says_the_lease_is_followed_only_at_the_next_check(host, admin, settings):
    settings.KVMWEB_FORWARD_CHECK_SECONDS = 60
    [warning] = create(host, admin, name="build01").warnings
    assert (
        "Until then the forward follows its lease only at the host worker's next check (every 60 s): after a "
        "new lease, connections go to the old address until that check re-applies the forward."
    ) in warning.message


def _libvirt_leases(monkeypatch, leases: dict) -> None:
    """The networks as libvirt answers, with these leases ({network: [(mac, ip, expires)]})."""
    read = hv_networks.get_network

    def with_leases(conn, name):
        info = read(conn, name)
        if name not in leases:
            return info
        return replace(info, leases=tuple(LibvirtLease(mac, ip, expires=exp) for mac, ip, exp in leases[name]))

    monkeypatch.setattr(hv_networks, "get_network", with_leases)


@pytest.fixture
def in_host_worker(host, settings, demo_uri, tmp_path, monkeypatch):
    """This process as demo's host worker, reading the demo fleet as its local libvirt. The
    firewall is this machine's, not a hypervisor's: the engine's check answers "guest stopped"
    for every rule (build01 is shut off) and nothing of this machine is read."""
    settings.KVMWEB_HOST_WORKER = "demo"
    settings.KVMWEB_HOST_WORKER_URI = demo_uri
    settings.KVMWEB_FORWARD_RULES_FILE = str(tmp_path / "forwards" / "rules.json")
    checked = []

    def check(rules, **kwargs):
        checked.append(kwargs)
        return ApplyReport({rule.forward_id: ForwardState.GUEST_STOPPED for rule in rules})

    monkeypatch.setattr(hostside, "forwards_check", check)
    return checked


def _applied_as_now(host) -> None:
    """The host worker's last apply: the forward operations done, the rules file the hooks
    read written from the current plan (as the engine writes it)."""
    Operation.objects.filter(host=host).update(status=OperationStatus.SUCCEEDED)
    plan = fs.installed_plan(host, host_connection(host))
    for rule in plan.rules:
        PortForward.objects.filter(pk=rule.forward_id).update(guest_address=rule.guest_address)
    path = Path(hostside.HostPaths.from_settings().rules_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(fw.rules_to_json("iptables", plan.rules, hostside.guest_bridges(host)))


def test_the_periodic_check_records_the_state_the_firewall_has_now(host, admin, in_host_worker):
    forward = create(host, admin).forward  # web01, reserved
    _applied_as_now(host)
    assert fs.host_forwards_periodic_check(host) == {
        "states": {forward.pk: ForwardState.GUEST_STOPPED}, "changes": [], "reapply": None,
    }  # fmt: skip
    forward.refresh_from_db()
    assert forward.state == ForwardState.GUEST_STOPPED and forward.checked_at is not None
    assert in_host_worker == [{}], "the engine decides which guests run (no libvirt read passed in)"


def test_the_periodic_check_reapplies_once_when_a_leased_guest_gets_another_address(
    host, admin, in_host_worker, monkeypatch
):
    leases = {"routed": [(BUILD01_MAC, "10.20.0.150", 2_000_000_000)]}
    _libvirt_leases(monkeypatch, leases)
    forward = create(host, admin, name="build01").forward
    _applied_as_now(host)
    assert fs.host_forwards_periodic_check(host)["reapply"] is None, "nothing changed since the apply"

    leases["routed"] = [(BUILD01_MAC, "10.20.0.160", 2_000_000_100)]  # dnsmasq handed out another address
    checked = fs.host_forwards_periodic_check(host)
    assert checked["changes"] == [f"#{forward.pk}: 10.20.0.150 on virbr2 → 10.20.0.160 on virbr2 (lease)"]
    reapply = Operation.objects.get(pk=checked["reapply"])
    assert (reapply.kind, reapply.source, reapply.requested_by, reapply.status) == (
        "port_forward.reapply", "system", None, OperationStatus.QUEUED,
    )  # fmt: skip
    assert "10.20.0.150 on virbr2 → 10.20.0.160 on virbr2 (lease)" in reapply.message
    forward.refresh_from_db()
    assert forward.guest_address == "10.20.0.150", "a check leaves the address its rules have"

    assert fs.host_forwards_periodic_check(host) is None, "while the re-apply is queued, it records the states"
    Operation.objects.filter(pk=reapply.pk).update(status=OperationStatus.FAILED)
    assert fs.host_forwards_periodic_check(host)["reapply"] is None, "the same set is not asked for again"
    assert Operation.objects.filter(kind="port_forward.reapply").count() == 1
    mine = fs.port_forward_request_reapply(host=host, actor=admin, source="web")  # someone tried meanwhile
    Operation.objects.filter(pk=mine.pk).update(status=OperationStatus.FAILED)
    again = fs.host_forwards_periodic_check(host)["reapply"]
    assert again not in (None, reapply.pk), "after another forward operation, the check asks again"


def test_the_periodic_check_is_only_the_hosts_own_workers(host, admin, in_host_worker, settings):
    create(host, admin)
    _applied_as_now(host)
    settings.KVMWEB_HOST_WORKER = "kvm7"
    assert fs.host_forwards_periodic_check(host) is None


def test_moving_a_guests_nic_to_another_network_reapplies_its_forwards(host, admin):
    create(host, admin, name="build01")  # on routed
    build01 = guest(host, "build01")
    moved = guest_interface_request(action=UPDATE, guest=build01, values={"source": "default"}, mac=BUILD01_MAC,
                                    actor=admin, source="web")  # fmt: skip
    assert run_to_end(moved.pk).status == OperationStatus.SUCCEEDED
    reapply = Operation.objects.get(kind="port_forward.reapply")
    assert (reapply.source, reapply.requested_by, reapply.status, reapply.params["forward_id"]) == (
        "system", None, OperationStatus.QUEUED, None,
    )  # fmt: skip
    assert reapply.message == "build01's interfaces changed: its port forwards follow them"


def test_an_interface_change_of_a_guest_without_forwards_reapplies_nothing(host, admin):
    create(host, admin, name="web01")
    moved = guest_interface_request(action=UPDATE, guest=guest(host, "build01"), values={"source": "default"},
                                    mac=BUILD01_MAC, actor=admin, source="web")  # fmt: skip
    assert run_to_end(moved.pk).status == OperationStatus.SUCCEEDED
    assert not Operation.objects.filter(kind="port_forward.reapply").exists()


# ---------------------------------------------------------------- the host worker's own libvirt


def test_the_host_worker_reads_its_own_hypervisor_not_the_hosts_stored_uri(host, admin, settings, tmp_path):
    local = tmp_path / "local-fleet.xml"  # the hypervisor's own daemon: web01 reserved another address
    local.write_text((REPO / "demo" / "fleet.xml").read_text().replace(
        "name='web01' ip='192.168.122.11'", "name='web01' ip='192.168.122.77'"))  # fmt: skip
    settings.KVMWEB_HOST_WORKER_URI = f"test://{local}"
    create(host, admin)
    try:
        settings.KVMWEB_HOST_WORKER = ""  # a central worker: the stored URI (the demo)
        assert [r.guest_address for r in fs.installed_plan(host, host_connection(host)).rules] == ["192.168.122.11"]
        settings.KVMWEB_HOST_WORKER = "demo"
        assert [r.guest_address for r in fs.installed_plan(host, host_connection(host)).rules] == ["192.168.122.77"]
    finally:
        client.disconnect(f"test://{local}")


def test_the_host_worker_uri_is_checked_like_a_hosts(host, settings):
    settings.KVMWEB_HOST_WORKER = "demo"
    settings.KVMWEB_HOST_WORKER_URI = "qemu:///system?socket=/tmp/elsewhere/libvirt-sock"
    with pytest.raises(InvalidUri, match="socket"):
        host_connection(host)


def test_an_apply_passes_the_bridges_of_the_hosts_libvirt_made_networks(host, admin, demo_uri, monkeypatch):
    """Not the host bridge br0 of lan-bridge: connections from the LAN come in over it."""
    forward = create(host, admin).forward
    calls = []

    def apply(rules, **kwargs):
        calls.append(kwargs)
        return ApplyReport({rule.forward_id: ForwardState.PRESENT for rule in rules}, ["libvirtd not reloaded"])

    monkeypatch.setattr(hostside, "forwards_apply", apply)
    monkeypatch.setattr(hostside.domains, "running_domain_names", lambda conn: pytest.fail("asked libvirt"))
    applied = hostside.apply_host_forwards(host, client.connect(demo_uri))
    assert calls == [{"guest_bridges": ("virbr0", "virbr1", "virbr2", "virbr3")}]
    assert (applied.states, applied.warnings) == ({forward.pk: ForwardState.PRESENT}, ("libvirtd not reloaded",))
