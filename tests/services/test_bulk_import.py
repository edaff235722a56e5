"""Importing reservations from CSV in one Operation."""

import libvirt
import pytest
from django.core.exceptions import ValidationError

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client
from networks.models import Network
from networks.services.netupdate import network_bulk_preview, network_request_bulk_import
from networks.services.netupdate.bulk import export_csv
from networks.services.operations import operation_run

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
    assert (preview.valid, preview.invalid) == (2, 4)
    assert preview.seconds_by_strategy["live"] > 100 * preview.seconds_by_strategy["config"]


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
