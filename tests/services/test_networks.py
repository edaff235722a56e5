from networks import selectors
from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client
from networks.models import AuditEvent, Network
from networks.services import networks as network_services
from networks.services.operations import operation_run


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
    affected = selectors.running_guests_on_network(_network(demo_host, "default"))
    names = [g.name for g in affected]
    assert "web01" in names
    assert all(g.is_running for g in affected)
