"""Editing a network's whole XML."""

import pytest
from lxml import etree

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client
from networks.models import Network
from networks.services.operations import OperationRejected, operation_run
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
    assert sorted((u.section, u.command) for u in updates) == [
        ("dns-txt", "delete"),
        ("portgroup", "add-last"),
        ("portgroup", "delete"),
    ]


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
