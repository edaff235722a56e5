import pytest
from django.conf import settings
from django.db import transaction

from networks import tasks
from networks.choices import AuditSource, OperationStatus
from networks.hypervisor.errors import HypervisorError
from networks.models import AuditEvent, Host, Network, Operation
from networks.models.audit import AppendOnlyError
from networks.services import hosts as host_services
from networks.services import networks as network_services
from networks.services.operations import (
    OperationBusy,
    OperationRejected,
    operation_cancel,
    operation_claim,
    operation_run,
)


@pytest.fixture
def default_network(demo_host):
    return Network.objects.get(host=demo_host, name="default")


def test_an_operation_is_claimed_only_once(default_network, admin):
    operation = network_services.network_request_stop(network=default_network, actor=admin, source=AuditSource.WEB)
    assert operation_claim(operation.pk).status == OperationStatus.RUNNING
    assert operation_claim(operation.pk) is None


def test_two_operations_on_one_network_never_run_together(default_network, admin):
    first = network_services.network_request_stop(network=default_network, actor=admin, source=AuditSource.WEB)
    second = network_services.network_request_start(network=default_network, actor=admin, source=AuditSource.WEB)
    operation_claim(first.pk)
    with pytest.raises(OperationBusy):
        operation_claim(second.pk)
    assert Operation.objects.get(pk=second.pk).status == OperationStatus.QUEUED


def test_operations_on_different_networks_may_run_together(demo_host, admin):
    nets = Network.objects.filter(host=demo_host).order_by("name")[:2]
    ops = [network_services.network_request_stop(network=n, actor=admin, source=AuditSource.WEB) for n in nets]
    assert all(operation_claim(op.pk) is not None for op in ops)


def test_a_sync_waits_for_a_running_network_operation_of_its_host(default_network, demo_host, admin):
    running = network_services.network_request_stop(network=default_network, actor=admin, source=AuditSource.WEB)
    operation_claim(running.pk)
    sync = host_services.host_request_sync(host=demo_host, actor=admin, source=AuditSource.WEB)
    with pytest.raises(OperationBusy, match=f"#{running.pk}"):
        operation_claim(sync.pk)
    other_host = host_services.host_create(name="other", uri="test:///default", actor=admin, source="web", sync=False)
    elsewhere = host_services.host_request_sync(host=other_host, actor=admin, source=AuditSource.WEB)
    assert operation_claim(elsewhere.pk) is not None, "another host's sync does not wait"


def test_no_network_operation_starts_while_its_host_syncs(default_network, demo_host, admin):
    sync = host_services.host_request_sync(host=demo_host, actor=admin, source=AuditSource.WEB)
    operation_claim(sync.pk)
    waiting = network_services.network_request_stop(network=default_network, actor=admin, source=AuditSource.WEB)
    with pytest.raises(OperationBusy, match=f"#{sync.pk}"):
        operation_claim(waiting.pk)


def test_every_operation_kind_has_a_run_function_or_kvmweb_does_not_start(monkeypatch):
    from networks import operation_kinds
    from networks.checks import every_operation_kind_is_registered

    assert every_operation_kind_is_registered() == []
    monkeypatch.delitem(operation_kinds._registry, "network.restart")
    errors = every_operation_kind_is_registered()
    assert [error.id for error in errors] == ["networks.E001"] and "network.restart" in errors[0].msg


def test_a_queued_operation_can_be_cancelled_but_not_a_running_one(default_network, admin):
    operation = network_services.network_request_stop(network=default_network, actor=admin, source=AuditSource.WEB)
    assert operation_cancel(operation=operation, actor=admin, source=AuditSource.WEB).status == "cancelled"
    assert operation_run(operation.pk) is None  # a worker picking it up later does nothing
    running = network_services.network_request_stop(network=default_network, actor=admin, source=AuditSource.WEB)
    operation_claim(running.pk)
    with pytest.raises(OperationRejected):
        operation_cancel(operation=running, actor=admin, source=AuditSource.WEB)


def test_a_failed_operation_records_libvirts_error(default_network, admin, demo_uri):
    from networks.hypervisor import client

    gone = client.connect(demo_uri).networkLookupByName("default")  # removed behind kvmweb's back
    gone.destroy()
    gone.undefine()
    operation = network_services.network_request_start(network=default_network, actor=admin, source=AuditSource.WEB)
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.FAILED
    assert "does not exist" in finished.error
    event = AuditEvent.objects.get(action="network.start.failed")
    assert event.actor_name == "alice" and "does not exist" in event.detail


@pytest.fixture
def sent(monkeypatch):
    """What was handed to the broker: (args, queue) of each run_operation message."""
    messages = []
    monkeypatch.setattr(tasks.run_operation, "apply_async", lambda args, queue: messages.append((args, queue)))
    return messages


def test_operations_are_enqueued_only_after_commit(default_network, admin, django_capture_on_commit_callbacks, sent):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        operation = network_services.network_request_stop(network=default_network, actor=admin, source="web")
        assert sent == []  # inside the transaction nothing has reached the broker
    assert sent == [([operation.pk], settings.CELERY_TASK_DEFAULT_QUEUE)]
    assert Operation.objects.get(pk=operation.pk).dispatched_at is not None


def test_a_rolled_back_request_sends_nothing(default_network, admin, django_capture_on_commit_callbacks, sent):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        network_services.network_request_stop(network=default_network, actor=admin, source="web")
        raise RuntimeError("the caller fails after the request")
    assert sent == [] and not Operation.objects.filter(kind="network.stop").exists()


def test_an_operation_goes_to_its_hosts_own_queue(default_network, admin, django_capture_on_commit_callbacks, sent):
    Host.objects.filter(pk=default_network.host_id).update(queue="kvm-rack7")
    default_network.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        operation = network_services.network_request_stop(network=default_network, actor=admin, source="web")
    assert sent == [([operation.pk], "kvm-rack7")]


def test_a_start_that_fails_after_starting_still_mirrors_the_running_network(default_network, admin, monkeypatch):
    from networks.hypervisor import restart as hv_restart

    assert operation_run(
        network_services.network_request_stop(network=default_network, actor=admin, source="web").pk
    ).status == OperationStatus.SUCCEEDED  # fmt: skip
    default_network.refresh_from_db()
    assert not default_network.active

    def replug_crashes(*args, **kwargs):  # injected: a failure after the network was started
        raise HypervisorError("injected: re-plug failed")

    monkeypatch.setattr(hv_restart, "reattach_missing", replug_crashes)
    start = network_services.network_request_start(network=default_network, actor=admin, source="web")
    assert operation_run(start.pk).status == OperationStatus.FAILED
    default_network.refresh_from_db()
    assert default_network.active  # the host runs it: the mirror says so


def test_audit_events_cannot_be_changed_or_deleted(default_network, admin):
    network_services.network_request_stop(network=default_network, actor=admin, source=AuditSource.WEB)
    event = AuditEvent.objects.get(action="network.stop.requested")
    event.message = "rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    assert AuditEvent.objects.get(pk=event.pk).message == ""


def test_a_change_that_reached_the_host_is_not_retried_when_the_connection_drops_after(
    default_network, admin, monkeypatch
):
    from networks.hypervisor import updates as hv_updates
    from networks.hypervisor.errors import HostUnreachable
    from networks.services.netupdate import network_request_update

    real = hv_updates.update_network

    def applied_then_lost(*args, **kwargs):
        real(*args, **kwargs)  # the reservation is on the host...
        raise HostUnreachable("connection reset")  # ...but the answer never came back (injected)

    monkeypatch.setattr(hv_updates, "update_network", applied_then_lost)
    operation = network_request_update(
        network=default_network, section="ip-dhcp-host", command="add-last", actor=admin, source="web",
        values={"mac": "52:54:00:99:00:01", "ip": "192.168.122.99", "name": "new99"},
    )  # fmt: skip
    finished = operation_run(operation.pk)  # a retry would raise RetryLater and then fail "already reserved"
    assert finished.status == OperationStatus.FAILED and finished.attempts == 1
    assert default_network.dhcp_reservations.filter(mac="52:54:00:99:00:01").exists(), "the mirror was re-read"
