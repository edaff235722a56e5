"""Importing reservations from CSV in one Operation."""

import re
from datetime import timedelta

import libvirt
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client
from networks.hypervisor import networks as hv_networks
from networks.hypervisor import restart as hv_restart
from networks.hypervisor import updates as hv_updates
from networks.hypervisor.errors import HostUnreachable
from networks.models import Network, Operation
from networks.services import sync
from networks.services.netupdate import bulk, network_bulk_preview, network_request_bulk_import
from networks.services.netupdate.bulk import export_csv
from networks.services.operations import operation_recover_lost, operation_run

CSV = """mac,ip,name
52:54:00:10:00:01,192.168.122.101,alpha
52-54-00-10-00-02,192.168.122.102,beta
52:54:00:10:00:01,192.168.122.103,dup-mac
52:54:00:10:00:04,10.0.0.4,outside
52:54:00:10:00:05,192.168.122.102,dup-ip-in-file

52:54:00:0a:00:11,192.168.122.105,taken-on-host
"""


@pytest.fixture
def default(demo_host):
    return Network.objects.get(host=demo_host, name="default")


def test_the_preview_checks_each_row_against_the_host_and_the_rows_before_it(default):
    preview = network_bulk_preview(network=default, csv_text=CSV)
    verdicts = {row.values["name"]: (row.ok, list(row.errors)) for row in preview.rows}
    assert verdicts["alpha"] == (True, []) and verdicts["beta"] == (True, [])
    assert verdicts["dup-mac"] == (False, ["mac"])
    assert verdicts["outside"] == (False, ["ip"])
    assert verdicts["dup-ip-in-file"] == (False, ["ip"])
    assert verdicts["taken-on-host"] == (False, ["mac"])
    assert (preview.valid, preview.invalid, preview.present) == (2, 4, 0)


def test_the_predicted_time_counts_only_the_rows_that_will_be_sent(default):
    two_sent = network_bulk_preview(network=default, csv_text=CSV).seconds_by_strategy
    four_valid = "\n".join(f"52:54:00:20:00:0{i},192.168.122.{200 + i},n{i}" for i in range(1, 5))
    four_sent = network_bulk_preview(network=default, csv_text=four_valid).seconds_by_strategy
    for strategy in ("live", "config"):
        assert four_sent[strategy] == pytest.approx(2 * two_sent[strategy]), strategy


def test_the_import_applies_the_valid_rows_in_one_operation(default, admin, demo_uri):
    operation = network_request_bulk_import(
        network=default, csv_text=CSV, strategy="live", actor=admin, source=AuditSource.WEB
    )
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    assert finished.result["added"] == 2 and len(finished.result["skipped"]) == 4
    live = client.connect(demo_uri).networkLookupByName("default").XMLDesc(0)
    assert "52:54:00:10:00:02" in live and "192.168.122.103" not in live
    assert default.dhcp_reservations.filter(name__in=["alpha", "beta"]).count() == 2


def test_rows_that_fail_on_the_host_are_reported_and_the_others_applied(default, admin, demo_uri):
    operation = network_request_bulk_import(
        network=default, csv_text=CSV, strategy="live", actor=admin, source=AuditSource.WEB
    )
    # Someone takes beta's address on the host after the preview.
    client.connect(demo_uri).networkLookupByName("default").update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
        libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
        0,
        "<host mac='52:54:00:99:99:99' ip='192.168.122.102'/>",
        libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE,
    )
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.FAILED and "1 of 2 rows failed" in finished.error
    assert [r["status"] for r in finished.result["rows"]] == ["added", "failed"]
    assert "52:54:00:10:00:01" in client.connect(demo_uri).networkLookupByName("default").XMLDesc(0)


def test_a_file_with_nothing_importable_is_refused(default, admin):
    with pytest.raises(ValidationError, match="No row"):
        network_request_bulk_import(
            network=default, csv_text="nonsense,here\n", strategy="live", actor=admin, source="web"
        )


def test_export_writes_every_reservation(default):
    lines = export_csv(default.dhcp_reservations.order_by("address")).splitlines()
    assert lines[0] == "mac,ip,name" and "52:54:00:0a:00:11,192.168.122.11,web01" in lines and len(lines) == 4


def test_the_restart_strategy_saves_the_config_then_restarts_once(demo_host, admin, demo_uri):
    routed = Network.objects.get(host=demo_host, name="routed")
    csv_text = "52:54:00:30:00:01,10.20.0.31,r1\n52:54:00:30:00:02,10.20.0.32,r2\n"
    operation = network_request_bulk_import(
        network=routed, csv_text=csv_text, strategy="restart", actor=admin, source="web"
    )
    assert operation.params["scope"] == "config"
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    assert finished.result["added"] == 2 and finished.result["interfaces"] == [] and "down_seconds" in finished.result
    assert client.connect(demo_uri).networkLookupByName("routed").isActive()


# ---------------------------------------------------------------- failures part way, and recovery

ROUTED_CSV = "52:54:00:30:00:01,10.20.0.31,r1\n52:54:00:30:00:02,10.20.0.32,r2\n"


def test_a_run_that_crashes_after_some_rows_still_mirrors_them(default, admin, demo_uri, monkeypatch):
    operation = network_request_bulk_import(network=default, csv_text=CSV, strategy="live", actor=admin, source="web")

    def crashes(*args):  # injected: a bug right after the first row reached the host
        raise RuntimeError("injected bug")

    monkeypatch.setattr(bulk, "with_host", crashes)
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.FAILED and "injected" in finished.error
    assert "52:54:00:10:00:01" in client.connect(demo_uri).networkLookupByName("default").XMLDesc(0)
    # alpha is on the host: the mirror shows it although the run never reached its end.
    assert default.dhcp_reservations.filter(name="alpha").exists()


def test_a_run_that_stops_part_way_and_cannot_reread_the_host_requests_a_sync(demo_host, admin, monkeypatch):
    routed = Network.objects.get(host=demo_host, name="routed")
    operation = network_request_bulk_import(
        network=routed, csv_text=ROUTED_CSV, strategy="restart", actor=admin, source="web"
    )

    def lost(*args, **kwargs):  # injected: the connection drops during the restart and stays down
        raise HostUnreachable("injected: connection lost")

    monkeypatch.setattr(hv_restart, "restart_network", lost)
    monkeypatch.setattr(sync, "host_connection", lost)  # the re-read cannot connect either
    assert operation_run(operation.pk).status == OperationStatus.FAILED
    resync = Operation.objects.get(kind="host.sync", status=OperationStatus.QUEUED)
    assert str(operation.pk) in resync.message


def test_the_checkpoint_names_each_row_before_it_is_sent(default, admin, monkeypatch):
    seen = []
    real = hv_updates.NetworkUpdater.apply

    def apply(self, **kwargs):
        checkpoint = {
            k: v
            for k, v in Operation.objects.get(kind="network.bulk_import").checkpoint.items()
            if k != "host_changing"
        }
        seen.append((re.search(r"name=[\"']([^\"']+)", kwargs["fragment"]).group(1), checkpoint))
        return real(self, **kwargs)

    monkeypatch.setattr(hv_updates.NetworkUpdater, "apply", apply)
    operation = network_request_bulk_import(network=default, csv_text=CSV, strategy="live", actor=admin, source="web")
    assert operation_run(operation.pk).status == OperationStatus.SUCCEEDED
    # alpha is line 2 of the file and beta line 3: each is named before libvirt gets it.
    assert seen == [
        ("alpha", {"sending": 2, "applied_lines": []}),
        ("beta", {"sending": 3, "applied_lines": [[2, 2]]}),
    ]


FIVE = "\n".join(f"52:54:00:50:00:0{i},192.168.122.{150 + i},five{i}" for i in range(1, 6)) + "\n"


def _killed_after_two_rows(default, admin, demo_uri) -> Operation:
    """An import of FIVE as a worker killed while sending its second row leaves it: rows 1
    and 2 on the host, the checkpoint saying only row 1, the row running and silent."""
    operation = network_request_bulk_import(network=default, csv_text=FIVE, strategy="live", actor=admin, source="web")
    updater = hv_updates.NetworkUpdater(client.connect(demo_uri), "default", "both")
    for i in (1, 2):
        updater.apply(
            command="add-last", section="ip-dhcp-host", parent_index=0,
            fragment=f"<host mac='52:54:00:50:00:0{i}' name='five{i}' ip='192.168.122.{150 + i}'/>",
        )  # fmt: skip
    stale = timezone.now() - timedelta(minutes=5)
    Operation.objects.filter(pk=operation.pk).update(
        status=OperationStatus.RUNNING, started_at=stale, heartbeat_at=stale,
        checkpoint={"sending": 2, "applied_lines": [[1, 1]]},
    )  # fmt: skip
    return operation


def test_recovery_asks_the_host_which_rows_were_applied(default, admin, demo_uri):
    operation = _killed_after_two_rows(default, admin, demo_uri)
    assert operation_recover_lost(stale_after=timedelta(seconds=30)) == 1
    operation.refresh_from_db()
    assert operation.status == OperationStatus.FAILED and operation.error.startswith("Interrupted; ")
    assert [(r["line"], r["status"]) for r in operation.result["rows"]] == [
        (1, "applied"), (2, "applied"), (3, "not applied"), (4, "not applied"), (5, "not applied"),
    ]  # fmt: skip
    assert operation.result["completed"] is False
    assert "2 of 5 rows" in operation.result["recovery"] and "3-5" in operation.result["recovery"]
    assert set(default.dhcp_reservations.filter(name__startswith="five").values_list("name", flat=True)) == {
        "five1",
        "five2",
    }  # fmt: skip  (mirrored by the recovery)


def test_the_same_file_imported_again_adds_only_the_missing_rows(default, admin, demo_uri):
    _killed_after_two_rows(default, admin, demo_uri)
    operation_recover_lost(stale_after=timedelta(seconds=30))
    default.refresh_from_db()  # as the import page loads it
    preview = network_bulk_preview(network=default, csv_text=FIVE)
    assert [row.present for row in preview.rows] == [True, True, False, False, False]
    assert (preview.valid, preview.present, preview.invalid) == (3, 2, 0)
    again = network_request_bulk_import(network=default, csv_text=FIVE, strategy="live", actor=admin, source="web")
    finished = operation_run(again.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    assert finished.result["added"] == 3 and again.params["present"] == [1, 2]
    live = client.connect(demo_uri).networkLookupByName("default").XMLDesc(0)
    assert [live.count(f"52:54:00:50:00:0{i}") for i in range(1, 6)] == [1, 1, 1, 1, 1]
    default.refresh_from_db()
    with pytest.raises(ValidationError, match="already on the network"):
        network_request_bulk_import(network=default, csv_text=FIVE, strategy="live", actor=admin, source="web")


def test_a_row_added_on_the_host_since_the_preview_is_reported_present_not_failed(default, admin, demo_uri):
    operation = network_request_bulk_import(network=default, csv_text=FIVE, strategy="live", actor=admin, source="web")
    hv_updates.NetworkUpdater(client.connect(demo_uri), "default", "both").apply(
        command="add-last", section="ip-dhcp-host", parent_index=0,
        fragment="<host mac='52:54:00:50:00:03' name='five3' ip='192.168.122.153'/>",
    )  # fmt: skip
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    assert [r["status"] for r in finished.result["rows"]] == ["added", "added", "already present", "added", "added"]
    assert hv_networks.get_network(client.connect(demo_uri), "default").live_xml.count("52:54:00:50:00:03") == 1
