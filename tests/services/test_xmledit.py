"""Editing a network's whole XML."""

import re
from datetime import timedelta

import libvirt
import pytest
from django.utils import timezone
from lxml import etree

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client
from networks.hypervisor import updates as hv_updates
from networks.hypervisor.errors import HypervisorError
from networks.models import Network, Operation
from networks.services.operations import OperationRejected, operation_recover_lost, operation_run
from networks.services.xmledit import analyse, network_request_xml_change, network_xml_preview


@pytest.fixture
def default(demo_host):
    return Network.objects.get(host=demo_host, name="default")


def _edited(network_xml: str, change) -> str:
    root = etree.fromstring(network_xml.encode())
    change(root)
    return etree.tostring(root, encoding="unicode")


def _add_host(root):
    etree.SubElement(root.find("ip/dhcp"), "host", mac="52:54:00:44:00:01", ip="192.168.122.44", name="xmlhost")


def test_a_new_reservation_in_the_xml_can_be_applied_live(default):
    analysis = analyse(default.inactive_xml, _edited(default.inactive_xml, _add_host))
    assert analysis.live_possible and not analysis.unchanged
    assert [(u.section, u.command, u.parent_index) for u in analysis.live_updates] == [("ip-dhcp-host", "add-last", 0)]
    assert "+" in analysis.diff and "xmlhost" in analysis.diff


def test_removing_a_dns_record_and_changing_a_portgroup_are_live_too(default):
    def change(root):
        root.find("dns").remove(root.find("dns/txt"))
        root.find("portgroup[@name='dev']/vlan/tag").set("id", "201")

    updates = analyse(default.inactive_xml, _edited(default.inactive_xml, change)).live_updates
    # A changed portgroup is one modify (by name): never a delete that a failure could strand.
    assert sorted((u.section, u.command) for u in updates) == [("dns-txt", "delete"), ("portgroup", "modify")]


def test_a_bridge_or_address_change_needs_a_restart(default):
    def change(root):
        root.find("bridge").set("stp", "on")

    analysis = analyse(default.inactive_xml, _edited(default.inactive_xml, change))
    assert not analysis.live_possible and "stp" in analysis.diff


def test_the_same_xml_changes_nothing(default):
    assert analyse(default.inactive_xml, default.inactive_xml).unchanged


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda r: r.find("name").__setattr__("text", "other"), "keep the name"),
        (lambda r: r.find("uuid").__setattr__("text", "11111111-2222-3333-4444-555555555555"), "UUID"),
    ],
)
def test_renames_and_new_uuids_are_refused(default, edit, says):
    with pytest.raises(OperationRejected, match=says):
        network_xml_preview(network=default, new_xml=_edited(default.inactive_xml, edit))


def test_malformed_xml_is_refused(default):
    with pytest.raises(OperationRejected, match="Malformed"):
        network_xml_preview(network=default, new_xml="<network><name>default</name>")


def test_applying_live_adds_the_reservation_on_the_host(default, admin, demo_uri):
    operation = network_request_xml_change(
        network=default,
        new_xml=_edited(default.inactive_xml, _add_host),
        apply="live",
        actor=admin,
        source=AuditSource.API,
    )
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    assert "xmlhost" in client.connect(demo_uri).networkLookupByName("default").XMLDesc(0)


def test_a_change_that_needs_a_restart_cannot_be_applied_live(default, admin):
    new_xml = _edited(default.inactive_xml, lambda r: r.find("bridge").set("stp", "on"))
    with pytest.raises(OperationRejected, match="cannot be applied to the running network"):
        network_request_xml_change(network=default, new_xml=new_xml, apply="live", actor=admin, source="web")
    operation = network_request_xml_change(network=default, new_xml=new_xml, apply="restart", actor=admin, source="web")
    assert operation.kind == "network.restart" and operation.params["new_xml"] == new_xml


def test_a_namespace_declared_on_the_network_does_not_make_every_entry_look_changed(default):
    # Adding dnsmasq's declaration moves nothing: only the new reservation is an update.
    declared = default.inactive_xml.replace(
        "<network>", "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>", 1
    )
    analysis = analyse(default.inactive_xml, _edited(declared, _add_host))
    assert [(u.section, u.command) for u in analysis.live_updates] == [("ip-dhcp-host", "add-last")]


def test_a_hostile_edit_is_refused_before_any_operation(default, admin):
    new_xml = "<!DOCTYPE network [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>" + default.inactive_xml.replace(
        "</network>", "<metadata><a:x xmlns:a='urn:a'>&x;</a:x></metadata></network>"
    )
    for apply in ("live", "define", "restart"):
        with pytest.raises(OperationRejected, match="DOCTYPE"):
            network_request_xml_change(network=default, new_xml=new_xml, apply=apply, actor=admin, source="api")
    assert not default.operations.exists()


# ---------------------------------------------------------------- a changed entry is never lost


def _live_xml(uri: str) -> str:
    return client.connect(uri).networkLookupByName("default").XMLDesc(0)


def _fail_calls(calls: list, failing: set[int], monkeypatch):
    """Injected fault in kvmweb's own updater: the net-updates numbered in `failing` (1-based)
    fail as a lost connection would. The calls that do run are real, on the test driver."""
    real = hv_updates.NetworkUpdater.apply

    def apply(self, **kwargs):
        calls.append((kwargs["command"], kwargs["fragment"]))
        if len(calls) in failing:
            raise HypervisorError("injected: connection lost")
        return real(self, **kwargs)

    monkeypatch.setattr(hv_updates.NetworkUpdater, "apply", apply)


def _move_web01(root):
    root.find("ip/dhcp/host[@name='web01']").set("ip", "192.168.122.77")


def test_a_changed_reservation_is_modified_in_one_call_so_a_second_call_failing_loses_nothing(
    default, admin, demo_uri, monkeypatch
):
    analysis = analyse(default.inactive_xml, _edited(default.inactive_xml, _move_web01))
    assert [(u.section, u.command) for u in analysis.live_updates] == [("ip-dhcp-host", "modify")]
    calls = []
    _fail_calls(calls, {2, 3}, monkeypatch)
    operation = network_request_xml_change(
        network=default, new_xml=_edited(default.inactive_xml, _move_web01), apply="live", actor=admin, source="api"
    )
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    assert [c[0] for c in calls] == ["modify"]
    hosts = re.findall(r"<host mac='52:54:00:0a:00:11'[^>]*>", _live_xml(demo_uri))
    assert hosts == ["<host mac='52:54:00:0a:00:11' name='web01' ip='192.168.122.77'/>"]
    assert default.dhcp_reservations.get(mac="52:54:00:0a:00:11").address == "192.168.122.77"


def test_an_ambiguous_reservation_change_is_a_replace_not_a_modify(default):
    # The new web01 takes web02's address: libvirt's modify would overwrite whichever of the
    # two comes first, so kvmweb deletes and adds (and puts back on failure) instead.
    def change(root):
        root.find("ip/dhcp").remove(root.find("ip/dhcp/host[@name='web02']"))
        root.find("ip/dhcp/host[@name='web01']").set("ip", "192.168.122.12")

    updates = analyse(default.inactive_xml, _edited(default.inactive_xml, change)).live_updates
    assert [u.command for u in updates] == ["delete", "replace"]


def _rename_mirror(root):
    root.find("dns/host[@ip='192.168.122.5']/hostname").text = "mirror2"


def test_a_changed_dns_host_whose_add_fails_is_put_back(default, admin, demo_uri, monkeypatch):
    calls = []
    _fail_calls(calls, {2}, monkeypatch)  # the delete runs; the add of the new version fails
    operation = network_request_xml_change(
        network=default, new_xml=_edited(default.inactive_xml, _rename_mirror), apply="live", actor=admin, source="api"
    )
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.FAILED and "injected" in finished.error
    assert [c[0] for c in calls] == ["delete", "add-last", "add-last"]  # the last one puts it back
    live = _live_xml(demo_uri)
    assert "<hostname>mirror</hostname>" in live and "mirror2" not in live
    assert "mirror2" not in Network.objects.get(pk=default.pk).live_xml  # mirrored again from the host
    assert finished.checkpoint["replacing"]["old_fragment"].count("<hostname>mirror</hostname>") == 1


def test_the_entry_to_put_back_is_in_the_checkpoint_before_the_delete(default, admin, monkeypatch):
    seen = []
    real = hv_updates.NetworkUpdater.apply

    def apply(self, **kwargs):
        if kwargs["command"] == "delete":
            seen.append(Operation.objects.get(kind="network.xml_live").checkpoint.get("replacing"))
        return real(self, **kwargs)

    monkeypatch.setattr(hv_updates.NetworkUpdater, "apply", apply)
    operation = network_request_xml_change(
        network=default, new_xml=_edited(default.inactive_xml, _rename_mirror), apply="live", actor=admin, source="api"
    )
    assert operation_run(operation.pk).status == OperationStatus.SUCCEEDED
    assert seen and "<hostname>mirror</hostname>" in seen[0]["old_fragment"]


def test_a_worker_killed_between_the_delete_and_the_add_is_recovered_by_putting_the_entry_back(
    default, admin, demo_uri
):
    new_xml = _edited(default.inactive_xml, _rename_mirror)
    operation = network_request_xml_change(network=default, new_xml=new_xml, apply="live", actor=admin, source="api")
    update = analyse(default.inactive_xml, new_xml).live_updates[0]
    assert update.command == "replace"
    # What a worker killed right after the delete leaves: the row running with its checkpoint,
    # silent, and the host without the entry.
    net = client.connect(demo_uri).networkLookupByName("default")
    net.update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_DNS_HOST, -1, update.old_fragment,
        libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
    )  # fmt: skip
    assert "<hostname>mirror</hostname>" not in _live_xml(demo_uri)
    stale = timezone.now() - timedelta(minutes=5)
    Operation.objects.filter(pk=operation.pk).update(
        status=OperationStatus.RUNNING, started_at=stale, heartbeat_at=stale,
        checkpoint={"replacing": {"section": update.section, "command": "replace", "fragment": update.fragment,
                                  "parent_index": update.parent_index, "old_fragment": update.old_fragment}},
    )  # fmt: skip
    assert operation_recover_lost(stale_after=timedelta(seconds=30)) == 1
    operation.refresh_from_db()
    assert "<hostname>mirror</hostname>" in _live_xml(demo_uri)
    assert operation.status == OperationStatus.FAILED and "put back" in operation.error
    assert operation.result["completed"] is False
