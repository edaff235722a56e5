import pytest

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client
from networks.models import AuditEvent, Network, Operation
from networks.services import networks as network_services
from networks.services.operations import OperationRejected, operation_run


def _network(host, name):
    return Network.objects.get(host=host, name=name)


def test_stopping_a_network_stops_it_on_the_host_and_in_the_mirror(demo_host, admin, demo_uri):
    net = _network(demo_host, "default")
    op = network_services.network_request_stop(network=net, actor=admin, source=AuditSource.WEB, message="maint")
    assert operation_run(op.pk).status == OperationStatus.SUCCEEDED
    assert not client.connect(demo_uri).networkLookupByName("default").isActive()
    assert not _network(demo_host, "default").active
    outcome = AuditEvent.objects.get(action="network.stop.succeeded")
    assert outcome.message == "maint" and outcome.actor_name == "alice" and "<name>default</name>" in outcome.before_xml


def test_starting_again_brings_it_back(demo_host, admin, demo_uri):
    net = _network(demo_host, "default")
    operation_run(network_services.network_request_stop(network=net, actor=admin, source=AuditSource.WEB).pk)
    operation_run(network_services.network_request_start(network=net, actor=admin, source=AuditSource.WEB).pk)
    assert client.connect(demo_uri).networkLookupByName("default").isActive()
    assert _network(demo_host, "default").active


def test_autostart_is_switched_on_the_host(demo_host, admin, demo_uri):
    net = _network(demo_host, "isolated")
    want = not net.autostart
    op = network_services.network_request_autostart(network=net, enabled=want, actor=admin, source=AuditSource.WEB)
    operation_run(op.pk)
    assert bool(client.connect(demo_uri).networkLookupByName("isolated").autostart()) is want
    assert _network(demo_host, "isolated").autostart is want


def test_undefine_removes_the_network_everywhere(demo_host, admin, demo_uri):
    op = network_services.network_request_undefine(
        network=_network(demo_host, "routed"), actor=admin, source=AuditSource.WEB
    )
    operation_run(op.pk)
    conn = client.connect(demo_uri)
    assert "routed" not in conn.listNetworks() + conn.listDefinedNetworks()
    assert not Network.objects.filter(host=demo_host, name="routed").exists()


def test_stop_lists_the_running_guests_that_lose_connectivity(demo_host):
    affected = network_services.network_affected_guests(_network(demo_host, "default"))
    names = [g.name for g in affected]
    assert "web01" in names
    assert all(g.is_running for g in affected)


def test_create_defines_and_starts_a_nat_network(demo_host, admin, demo_uri):
    op = network_services.network_request_create(
        host=demo_host, name="lab", bridge="virbr42", ipv4_cidr="10.42.0.0/24", actor=admin, source=AuditSource.API
    )
    assert operation_run(op.pk).status == OperationStatus.SUCCEEDED
    net = _network(demo_host, "lab")
    assert net.active and net.forward_mode == "nat"
    ip = net.ips.get()
    assert (ip.address, ip.prefix) == ("10.42.0.1", 24)
    assert (ip.dhcp_ranges.get().start, ip.dhcp_ranges.get().end) == ("10.42.0.2", "10.42.0.254")
    assert client.connect(demo_uri).networkLookupByName("lab").isActive()


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"name": "default", "ipv4_cidr": "10.1.0.0/24"}, "already exists"),
        ({"name": "bad name!", "ipv4_cidr": "10.1.0.0/24"}, "letters, digits"),
        ({"name": "lab", "ipv4_cidr": "10.1.0.0/33"}, "not an IPv4 subnet"),
        ({"name": "lab", "ipv4_cidr": "10.1.0.0/30"}, "too small"),
        ({"name": "lab", "ipv4_cidr": ""}, "need an IPv4 subnet"),
        ({"name": "lab", "ipv4_cidr": "10.1.0.0/24", "bridge": "a-bridge-name-too-long"}, "at most 15"),
    ],
)
def test_bad_create_input_is_refused_before_any_operation(demo_host, admin, kwargs, reason):
    before = Operation.objects.count()
    with pytest.raises(OperationRejected, match=reason):
        network_services.network_request_create(host=demo_host, actor=admin, source=AuditSource.WEB, **kwargs)
    assert Operation.objects.count() == before
