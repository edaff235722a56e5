"""Port forward requests on the demo fleet: every refusal, the warning, roles, the rule set the
host worker would install, and a run outside the host worker.

Applying rules needs root in a network namespace: that is proved in tests/realvirt.
"""

from dataclasses import replace
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from networks.choices import ForwardState, OperationStatus
from networks.forwarding.rules import ForwardRule
from networks.hypervisor import client
from networks.models import AuditEvent, Guest, Network, Operation, PortForward
from networks.services import forwards as fs
from networks.services.permissions import PermissionDenied
from networks.services.restart import network_request_restart, network_restart_preview
from tests.conftest import run_to_end
from tests.factories import HostFactory, UserFactory


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
    rules = fs.host_forward_rules(host, client.connect(demo_uri))
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
