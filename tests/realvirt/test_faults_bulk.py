"""A worker killed in the middle of a bulk import, for real: a real Celery worker imports 200
DHCP reservations live into a NAT network of the private libvirtd (each row reloads the
firewall, so the import takes over a minute) and is killed (SIGKILL, by its PID) once about
20 rows are in its checkpoint. The next worker recovers the operation: every row is reported
applied or not applied as the host really has it, and importing the same file again adds
only the rows that are missing, each exactly once."""

import os
import signal
import time

import libvirt
import pytest
from lxml import etree

from networks.choices import AuditSource, OperationStatus
from networks.models import Network, Operation
from networks.services.netupdate import network_bulk_preview, network_request_bulk_import

from .kvmweb_setup import nat_network_xml, registered_host

pytestmark = [pytest.mark.realvirt, pytest.mark.worker]
NETWORK = "kvbulk"
ROWS = 200
KILL_AFTER_ROWS = 20
STALE_SECONDS = 3


def _mac(i: int) -> str:
    return f"52:54:00:87:{i >> 8:02x}:{i & 0xFF:02x}"


def _csv() -> str:
    """Line i (1-based) reserves 10.87.0.(i+1) for MAC _mac(i)."""
    return "".join(f"{_mac(i)},10.87.0.{i + 1},bk{i}\n" for i in range(1, ROWS + 1))


def _worker_env(daemon) -> dict:
    return {
        "KVMWEB_URI_PATHS_ALLOWED": str(daemon.socket_dir),
        "KVMWEB_HEARTBEAT_SECONDS": "1",
        "KVMWEB_OPERATION_STALE_SECONDS": str(STALE_SECONDS),
    }


def _lines_in(ranges) -> set[int]:
    return {line for first, last in ranges or [] for line in range(first, last + 1)}


def _macs_on_host(net, flags: int = 0) -> list[str]:
    """Reservation MACs in the network's XML, read here with lxml (not kvmweb's reader)."""
    root = etree.fromstring(net.XMLDesc(flags).encode())
    return [host.get("mac").lower() for host in root.findall("ip/dhcp/host")]


def _wait(predicate, timeout: float, what: str, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    tail = log.read_text()[-3000:] if log else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")


def _terminal(operation_id: int):
    operation = Operation.objects.get(pk=operation_id)
    return operation if operation.is_terminal else None


def test_a_worker_killed_mid_import_is_recovered_and_a_rerun_adds_only_the_missing_rows(
    transactional_db, redis_socket, start_celery_worker, private_libvirtd, private_conn
):
    net = private_conn.networkDefineXML(nat_network_xml(NETWORK, "kvbk0", "10.87.0"))
    net.create()
    with registered_host(private_libvirtd, "kvm-bulk") as (host, admin):
        worker, log = start_celery_worker(redis_socket, "bulk-killed", **_worker_env(private_libvirtd))
        network = Network.objects.get(host=host, name=NETWORK)
        operation = network_request_bulk_import(
            network=network, csv_text=_csv(), strategy="live", actor=admin, source=AuditSource.WEB
        )
        assert len(operation.params["rows"]) == ROWS

        def enough_rows_recorded():
            checkpoint = Operation.objects.get(pk=operation.pk).checkpoint
            return len(_lines_in(checkpoint.get("applied_lines"))) >= KILL_AFTER_ROWS

        _wait(enough_rows_recorded, 300, f"{KILL_AFTER_ROWS} rows in the checkpoint", log)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        killed = Operation.objects.get(pk=operation.pk)
        assert killed.status == OperationStatus.RUNNING
        recorded, sending = _lines_in(killed.checkpoint["applied_lines"]), killed.checkpoint["sending"]

        # The next worker recovers lost operations as it starts, once the row is stale.
        time.sleep(STALE_SECONDS + 1.5)
        _next, next_log = start_celery_worker(redis_socket, "bulk-next", **_worker_env(private_libvirtd))
        finished = _wait(lambda: _terminal(operation.pk), 120, "the recovery", next_log)

        live = _macs_on_host(net)
        config = _macs_on_host(net, libvirt.VIR_NETWORK_XML_INACTIVE)
        on_host = {i for i in range(1, ROWS + 1) if _mac(i) in live and _mac(i) in config}
        print(f"\nkilled with {len(recorded)} rows recorded, sending line {sending}; {len(on_host)} on the host")
        assert KILL_AFTER_ROWS <= len(on_host) < ROWS, "killed neither too early nor after the end"
        # The checkpoint was written before each row: at most the row being sent is unknown.
        assert recorded <= on_host and on_host - recorded <= {sending}
        assert finished.status == OperationStatus.FAILED and finished.result["completed"] is False
        assert finished.error.startswith("Interrupted; ") and "by recovery" in finished.error
        reported = {row["line"]: row["status"] for row in finished.result["rows"]}
        assert reported == {i: "applied" if i in on_host else "not applied" for i in range(1, ROWS + 1)}
        assert set(network.dhcp_reservations.values_list("mac", flat=True)) == {_mac(i) for i in on_host}

        # The same file again: the rows on the host are "already present", the others are added.
        network.refresh_from_db()
        preview = network_bulk_preview(network=network, csv_text=_csv())
        assert {row.line for row in preview.rows if row.present} == on_host
        assert (preview.valid, preview.invalid) == (ROWS - len(on_host), 0)
        again = network_request_bulk_import(
            network=network, csv_text=_csv(), strategy="restart", actor=admin, source=AuditSource.WEB
        )
        rerun = _wait(lambda: _terminal(again.pk), 300, "the second import", next_log)
        assert rerun.status == OperationStatus.SUCCEEDED, rerun.error
        assert rerun.result["added"] == ROWS - len(on_host)
        for macs in (_macs_on_host(net), _macs_on_host(net, libvirt.VIR_NETWORK_XML_INACTIVE)):
            assert sorted(macs) == sorted(_mac(i) for i in range(1, ROWS + 1)), "every row exactly once"
