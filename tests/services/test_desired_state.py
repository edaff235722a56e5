"""Desired state: export, plan and apply documents across hosts (test driver)."""

import pytest
import yaml
from lxml import etree

from networks.choices import AuditSource, OperationKind, OperationStatus
from networks.hypervisor import client
from networks.models import AuditEvent, Host, Network, Operation
from networks.services import desired
from networks.services import hosts as host_services
from networks.services.create import network_request_create_from_xml
from networks.services.desired import MAX_NETWORKS, DocumentRejected, export_networks, parse_document
from networks.services.desired_plan import apply_document, plan_document, plan_lines, resolve_hosts
from networks.services.operations import OperationRejected, operation_run
from networks.services.permissions import PermissionDenied
from tests.factories import UserFactory

WEB = AuditSource.WEB


@pytest.fixture
def second_host(db, default_uri, admin):
    """libvirt's test:///default: one network, `default` (virbr0, 192.168.122.0/24, STP on)."""
    host = host_services.host_create(name="second", uri=default_uri, actor=admin, source=WEB)
    operation_run(host.operations.get().pk)
    return Host.objects.get(pk=host.pk)


def run_all(result) -> list[Operation]:
    finished = []
    for item in result.results:
        for ref in item["operations"]:
            finished.append(operation_run(ref["id"]))
    assert all(op.status == OperationStatus.SUCCEEDED for op in finished), [op.error for op in finished]
    return finished


def document(*entries) -> str:
    return yaml.safe_dump({"kvmweb": "networks/v1", "networks": list(entries)}, sort_keys=False)


def entry(name, network_xml, active=True, autostart=False) -> dict:
    return {"name": name, "active": active, "autostart": autostart, "xml": network_xml}


def without_uuid_and_bridge_mac(network_xml: str) -> str:
    """The config as canonical XML with only what each host assigns removed: <uuid> and the
    bridge's <mac>. Anything else a copy lost or gained makes it differ."""
    root = etree.fromstring(network_xml.encode())
    for element in [*root.findall("uuid"), *root.findall("mac")]:
        root.remove(element)
    return etree.tostring(root, method="c14n").decode()


ISOLATED = "<network><name>lab</name><bridge name='virbr70'/><ip address='10.70.0.1' prefix='24'/></network>"


def actions(plan) -> dict:
    return {(item.host.name, item.network): item.action for item in plan.items}


# ---------------------------------------------------------------- export


def test_export_holds_each_network_without_uuid_or_bridge_mac(demo_host):
    data = yaml.safe_load(export_networks(demo_host, ["isolated", "routed"]))
    assert data["kvmweb"] == "networks/v1" and data["exported_from"] == "demo"
    assert [n["name"] for n in data["networks"]] == ["isolated", "routed"]
    isolated = data["networks"][0]
    assert isolated["active"] is True and isolated["autostart"] is False
    assert "<uuid>" not in isolated["xml"] and "<mac " not in isolated["xml"]
    assert "10.10.0.1" in isolated["xml"]


def test_export_of_a_missing_network_is_refused(demo_host):
    with pytest.raises(DocumentRejected, match="no network named 'nope'"):
        export_networks(demo_host, ["nope"])


# ---------------------------------------------------------------- plan and apply


def test_a_host_exported_and_applied_to_another_gives_the_same_networks_and_a_second_apply_changes_nothing(
    demo_host, second_host, admin
):
    text = export_networks(demo_host, ["isolated", "routed"])
    plan = plan_document(text, [second_host])
    assert actions(plan) == {
        ("second", "isolated"): "create", ("second", "routed"): "create", ("second", "default"): "kept",
    }  # fmt: skip
    result = apply_document(text, [second_host], actor=admin, source=WEB)
    kinds = [op.kind for op in run_all(result)]
    assert kinds == [OperationKind.NETWORK_CREATE, OperationKind.NETWORK_CREATE]
    for name in ("isolated", "routed"):
        source = Network.objects.get(host=demo_host, name=name)
        copy = Network.objects.get(host=second_host, name=name)
        assert copy.active and copy.uuid != source.uuid
        assert without_uuid_and_bridge_mac(copy.inactive_xml) == without_uuid_and_bridge_mac(source.inactive_xml)
    before = Operation.objects.count()
    again = apply_document(text, [second_host], actor=admin, source=WEB)
    assert again.summary == "no changes: 2 network(s) unchanged"
    assert Operation.objects.count() == before
    assert (
        yaml.safe_load(export_networks(second_host, ["isolated", "routed"]))["networks"]
        == yaml.safe_load(text)["networks"]
    )


def test_a_reservation_added_in_the_document_is_a_live_update(demo_host, admin):
    data = yaml.safe_load(export_networks(demo_host, ["isolated"]))
    data["networks"][0]["xml"] = data["networks"][0]["xml"].replace(
        "<dhcp>", "<dhcp>\n<host mac='52:54:00:77:00:01' name='new' ip='10.10.0.77'/>"
    )
    plan = plan_document(yaml.safe_dump(data), [demo_host])
    item = next(item for item in plan.items if item.network == "isolated")
    assert item.action == "live"
    assert item.updates == ['add-last ip-dhcp-host: <host mac="52:54:00:77:00:01" name="new" ip="10.10.0.77"/>']
    assert [i.action for i in plan.items if i.network != "isolated"] == ["kept"] * (len(plan.items) - 1)
    result = apply_document(yaml.safe_dump(data), [demo_host], actor=admin, source=WEB)
    assert [op.kind for op in run_all(result)] == [OperationKind.NETWORK_XML_LIVE]
    network = Network.objects.get(host=demo_host, name="isolated")
    assert network.dhcp_reservations.filter(mac="52:54:00:77:00:01", address="10.10.0.77").exists()
    assert apply_document(yaml.safe_dump(data), [demo_host], actor=admin, source=WEB).plan.changes == 0


def test_a_bridge_change_on_a_running_network_is_a_restart_listing_its_guests(demo_host, admin):
    text = export_networks(demo_host, ["default"]).replace('stp="off"', 'stp="on"')
    item = next(item for item in plan_document(text, [demo_host]).items if item.network == "default")
    assert item.action == "restart"
    assert item.guests == ["ci01", "web01"]  # web01 running and ci01 paused on default; build01 is off
    result = apply_document(text, [demo_host], actor=admin, source=WEB)
    [operation] = Operation.objects.filter(pk=result.results[0]["operations"][0]["id"])
    assert operation.kind == OperationKind.NETWORK_RESTART and 'stp="on"' in operation.params["new_xml"]


def test_a_live_change_on_a_network_with_a_restart_pending_is_planned_as_a_restart(demo_host, admin):
    network = Network.objects.get(host=demo_host, name="isolated")
    pending = network.inactive_xml.replace("<ip ", "<domain name='pending.test'/>\n  <ip ", 1)  # libvirt's order
    # As a sync stores it (the test driver keeps one config per network): persistent != running.
    Network.objects.filter(pk=network.pk).update(inactive_xml=pending, drifted=True)
    text = export_networks(demo_host, ["isolated"]).replace(
        "<dhcp>", "<dhcp><host mac='52:54:00:77:00:01' name='new' ip='10.10.0.77'/>"
    )
    [item] = [item for item in plan_document(text, [demo_host]).items if item.network == "isolated"]
    assert item.action == "restart" and "restart was pending" in item.detail and not item.updates
    result = apply_document(text, [demo_host], actor=admin, source=WEB)
    [operation] = Operation.objects.filter(pk=result.results[0]["operations"][0]["id"])
    assert operation.kind == OperationKind.NETWORK_RESTART  # the guests on it are re-plugged
    assert "pending.test" in operation.params["new_xml"] and "52:54:00:77:00:01" in operation.params["new_xml"]


def test_a_stopped_network_gets_a_new_persistent_config_then_is_started(demo_host, admin, demo_uri):
    client.connect(demo_uri).networkLookupByName("isolated").destroy()
    Network.objects.filter(host=demo_host, name="isolated").update(active=False)
    text = export_networks(demo_host, ["isolated"]).replace("active: false", "active: true")
    text = text.replace('<ip address="10.10.0.1"', '<mtu size="9000"/>\n    <ip address="10.10.0.1"')
    item = next(item for item in plan_document(text, [demo_host]).items if item.network == "isolated")
    assert (item.action, item.then) == ("define", ["start"])
    kinds = [op.kind for op in run_all(apply_document(text, [demo_host], actor=admin, source=WEB))]
    assert kinds == [OperationKind.NETWORK_DEFINE, OperationKind.NETWORK_START]
    network = Network.objects.get(host=demo_host, name="isolated")
    assert network.active and network.mtu == 9000


def test_autostart_follows_the_document(demo_host, admin):
    text = export_networks(demo_host, ["routed"]).replace("autostart: false", "autostart: true")
    item = next(item for item in plan_document(text, [demo_host]).items if item.network == "routed")
    assert (item.action, item.then) == ("autostart", ["autostart on"])
    run_all(apply_document(text, [demo_host], actor=admin, source=WEB))
    assert Network.objects.get(host=demo_host, name="routed").autostart


def test_a_create_whose_bridge_or_subnet_is_taken_on_the_target_is_a_conflict(demo_host, second_host, admin):
    taken_bridge = ISOLATED.replace("virbr70", "virbr0")
    taken_subnet = ISOLATED.replace("<name>lab</name>", "<name>lab2</name>").replace("10.70.0.1", "192.168.122.9")
    text = document(entry("lab", taken_bridge), entry("lab2", taken_subnet.replace("virbr70", "virbr71")))
    plan = plan_document(text, [second_host])
    details = {item.network: (item.action, item.detail) for item in plan.items}
    assert details["lab"] == ("conflict", "the bridge virbr0 is used by default")
    assert details["lab2"] == ("conflict", "192.168.122.0/24 overlaps 192.168.122.0/24 of default")
    result = apply_document(text, [second_host], actor=admin, source=WEB)
    assert [r["status"] for r in result.results if r["network"] != "default"] == ["skipped", "skipped"]
    assert not Operation.objects.filter(host=second_host, kind=OperationKind.NETWORK_CREATE).exists()


def test_prune_lists_the_running_guests_that_lose_their_network(demo_host):
    text = export_networks(demo_host, ["isolated"])
    plan = plan_document(text, [demo_host], prune=True)
    default = next(item for item in plan.items if item.network == "default")
    assert default.action == "delete" and default.guests == ["ci01", "web01"]  # build01, on it too, is off
    assert "2 running guest(s) lose their network" in default.detail
    assert any(line.strip() == "guests cut off: ci01, web01" for line in plan_lines(plan))


def test_two_networks_of_one_document_with_the_same_bridge_or_subnet_are_conflicts(second_host, admin):
    same_bridge = ISOLATED.replace("lab", "lab2").replace("10.70.0.1", "10.71.0.1")
    overlapping = (
        ISOLATED.replace("lab", "lab3")
        .replace("virbr70", "virbr73")
        .replace("10.70.0.1' prefix='24", "10.70.0.129' prefix='25")
    )
    apart = ISOLATED.replace("lab", "lab4").replace("virbr70", "virbr74").replace("10.70.0.1", "10.74.0.1")
    text = document(
        entry("lab", ISOLATED), entry("lab2", same_bridge), entry("lab3", overlapping), entry("lab4", apart)
    )
    details = {item.network: (item.action, item.detail) for item in plan_document(text, [second_host]).items}
    assert details["lab"] == (
        "conflict",
        "the bridge virbr70 is also that of lab2 in the document; "
        "10.70.0.0/24 overlaps 10.70.0.128/25 of lab3 in the document",
    )
    assert details["lab2"] == ("conflict", "the bridge virbr70 is also that of lab in the document")
    assert details["lab3"] == ("conflict", "10.70.0.128/25 overlaps 10.70.0.0/24 of lab in the document")
    assert details["lab4"][0] == "create"
    result = apply_document(text, [second_host], actor=admin, source=WEB)
    assert [op.target_name for op in run_all(result)] == ["lab4"]


def test_clashes_within_a_document_are_found_among_many_subnets_and_a_few_are_told(second_host):
    def network(name, third_octets, ipv6=""):
        ips = "".join(f"<ip address='10.80.{octet}.1' prefix='24'/>" for octet in third_octets)
        return entry(name, f"<network><name>{name}</name>{ips}{ipv6}</network>")

    v6 = "<ip family='ipv6' address='fd00:80::1' prefix='64'/>"
    text = document(network("many", range(200)), network("more", range(100, 250)), network("v6a", [], v6),
                    network("v6b", [], v6.replace("::1", "::2")), network("apart", [250]))  # fmt: skip
    details = {item.network: (item.action, item.detail) for item in plan_document(text, [second_host]).items}
    assert details["many"] == (
        "conflict",
        "10.80.100.0/24 overlaps 10.80.100.0/24 of more in the document; "
        "10.80.101.0/24 overlaps 10.80.101.0/24 of more in the document; "
        "10.80.102.0/24 overlaps 10.80.102.0/24 of more in the document",
    )
    assert details["more"][0] == "conflict" and details["more"][1].count("overlaps") == 3
    assert details["v6a"] == ("conflict", "fd00:80::/64 overlaps fd00:80::/64 of v6b in the document")
    assert details["apart"][0] == "create"


def test_without_overwrite_a_different_network_of_the_same_name_is_a_conflict(demo_host, second_host):
    text = export_networks(demo_host, ["default"])
    [item] = plan_document(text, [second_host], overwrite=False).items
    assert (item.action, item.detail) == ("conflict", "a different network named default exists on second")
    same = export_networks(second_host, ["default"])  # its own config: nothing to replace
    assert [item.action for item in plan_document(same, [second_host], overwrite=False).items] == ["unchanged"]


def test_prune_deletes_networks_not_in_the_document_and_only_with_the_flag(second_host, admin):
    text = document(entry("lab", ISOLATED))
    assert actions(plan_document(text, [second_host]))[("second", "default")] == "kept"
    assert actions(plan_document(text, [second_host], prune=True))[("second", "default")] == "delete"
    result = apply_document(text, [second_host], prune=True, actor=admin, source=WEB)
    assert sorted(op.kind for op in run_all(result)) == [OperationKind.NETWORK_CREATE, OperationKind.NETWORK_UNDEFINE]
    assert list(second_host.networks.values_list("name", flat=True)) == ["lab"]


def test_one_document_planned_against_several_hosts(demo_host, second_host):
    plan = plan_document(document(entry("lab", ISOLATED)), [demo_host, second_host])
    assert actions(plan)[("demo", "lab")] == "create" and actions(plan)[("second", "lab")] == "create"


# ---------------------------------------------------------------- who may apply


def test_apply_needs_the_admin_role_on_every_host_and_a_refusal_is_audited(demo_host, second_host):
    operator = UserFactory(username="olga", role="operator")
    with pytest.raises(PermissionDenied):
        apply_document(document(entry("lab", ISOLATED)), [second_host], actor=operator, source=WEB)
    assert AuditEvent.objects.filter(action="network.apply.denied", host=second_host, actor=operator).exists()
    assert not Operation.objects.filter(kind=OperationKind.NETWORK_CREATE).exists()


def test_hosts_out_of_scope_are_unknown(demo_host, second_host):
    scoped_admin = UserFactory(username="sam")
    scoped_admin.kvmweb_role.all_hosts = False
    scoped_admin.kvmweb_role.save()
    scoped_admin.kvmweb_role.hosts.set([demo_host])
    assert resolve_hosts(scoped_admin, ["demo"]) == [demo_host]
    for names in (["second"], ["nowhere"]):
        with pytest.raises(DocumentRejected, match="Unknown host"):
            resolve_hosts(scoped_admin, names)
    for bad in ("demo", [], [1], None):
        with pytest.raises(DocumentRejected):
            resolve_hosts(scoped_admin, bad)


# ---------------------------------------------------------------- hostile documents


BOGUS_RESERVATION = ISOLATED.replace(
    "/></network>", "><dhcp><host mac='52:54:00:00:70:05' ip='10.70.0.5' name='h5' bogus='x'/></dhcp></ip></network>"
)
BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b]\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (42, "as text"),
        ("{{{ not yaml", "not readable YAML"),
        ("- a\n- b\n", "must be a YAML mapping"),
        (BOMB, "anchors and aliases"),
        ("[" * 100_000, "nests deeper than 20"),
        ("- " * 50_000 + "x", "nests deeper than 20"),
        ("a: " + "{b: " * 30 + "1" + "}" * 30, "nests deeper than 20"),
        ("kvmweb: networks/v1\nkvmweb: networks/v1\nnetworks: []\n", "appears twice"),
        ("kvmweb: networks/v2\nnetworks: []\n", "kvmweb: networks/v1"),
        ("kvmweb: networks/v1\nnetworks: {a: 1}\n", "must be a list"),
        ("kvmweb: networks/v1\nextra: 1\nnetworks: []\n", "Unknown key 'extra'"),
        ("kvmweb: networks/v1\nnetworks: [[1]]\n", "must be a mapping"),
        ("kvmweb: networks/v1\nnetworks: [{name: 12, xml: x}]\n", "`name` must be a network name"),
        ("kvmweb: !!python/object/apply:os.system [echo]\nnetworks: []\n", "not readable YAML"),
        ("x" * (2 * 1024 * 1024), "at most 1,048,576 characters"),
        ("kvmweb: networks/v1\n" + "".join(f"k{i}: 1\n" for i in range(200_000)), "at most 1,048,576 characters"),
        # just under 1 MB: 100,000 keys, or half a million list items, would each cost a node
        ("kvmweb: networks/v1\n" + "".join(f"k{i:05}: 1\n" for i in range(100_000)), "more than 10,000 YAML values"),
        ("[" + "1," * 500_000 + "1]", "more than 10,000 YAML values"),
        ("a: 1\n" + "".join(f"k{i}: 1\n" for i in range(4_000)) + "a: 2\n", "'a' appears twice"),
        (document(entry("lab", ISOLATED, active="yes")), "`active` must be true or false"),
        (document(entry("lab", ISOLATED), entry("lab", ISOLATED)), "more than once"),
        (document({**entry("lab", ISOLATED), "colour": "red"}), "unknown key 'colour'"),
        (document(entry("lab", ["<network/>"])), "`xml` must be the network's XML"),
        (document(entry("other", ISOLATED)), "names the network 'lab'"),
        (document(entry("lab", ISOLATED.replace("<name>lab</name>", "<name>lab</name><uuid>0f3c</uuid>"))), "uuid"),
        (document(entry("lab", "<!DOCTYPE x [<!ENTITY e 'x'>]><network><name>lab</name></network>")), "DOCTYPE"),
        (
            document(entry("lab", ISOLATED.replace("<ip ", "<ip><tftp root='/etc'/></ip><ip "))),
            "serve a directory",
        ),
        (
            document(
                entry(
                    "lab",
                    "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'><name>lab</name>"
                    "<dnsmasq:options><dnsmasq:option value='dhcp-script=/tmp/x'/></dnsmasq:options></network>",
                )
            ),
            "dhcp-script",
        ),
        (document(entry("lab", ISOLATED.replace("virbr70", "bad\nname"))), "<bridge name>"),
        (document(entry("lab", BOGUS_RESERVATION)), "<host mac='52:54:00:00:70:05'.*unknown attribute 'bogus'"),
        (document(entry("lab", ISOLATED.replace("<ip ", "<portgroup name='p'><colour/></portgroup><ip "))), "<colour>"),
    ],
)
def test_hostile_documents_are_refused_before_anything_is_planned(text, message, demo_host):
    with pytest.raises(DocumentRejected, match=message):
        plan_document(text, [demo_host])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BOMB, "anchors and aliases"),
        ("[" * 100_000, "nests deeper than 20"),
        ("a: 1\n" + "".join(f"k{i}: 1\n" for i in range(4_000)) + "a: 2\n", "'a' appears twice"),
        ("[" + "1," * 20_000 + "1]", "more than 10,000 YAML values"),
    ],
)
def test_without_libyaml_the_pure_python_reader_refuses_the_same(text, message, monkeypatch):
    monkeypatch.setattr(desired, "Loader", yaml.SafeLoader)
    with pytest.raises(DocumentRejected, match=message):
        parse_document(text)
    assert parse_document(document(entry("lab", ISOLATED)))[0].name == "lab"


def test_creating_from_xml_refuses_what_edit_xml_refuses(demo_host, admin):
    dangerous = (
        "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'><name>lab</name>"
        "<dnsmasq:options><dnsmasq:option value='conf-file=/etc/shadow'/></dnsmasq:options></network>"
    )
    with pytest.raises(OperationRejected, match="conf-file"):
        network_request_create_from_xml(
            host=demo_host, network_xml=dangerous, start=True, autostart=False, actor=admin, source=WEB
        )
    with pytest.raises(OperationRejected, match="unknown attribute 'bogus'"):  # libvirt would drop it silently
        network_request_create_from_xml(
            host=demo_host, network_xml=BOGUS_RESERVATION, start=True, autostart=False, actor=admin, source=WEB
        )
    with pytest.raises(OperationRejected, match="already exists"):
        network_request_create_from_xml(
            host=demo_host, network_xml=ISOLATED.replace("lab", "isolated"), start=True, autostart=False,
            actor=admin, source=WEB,
        )  # fmt: skip
    assert not Operation.objects.filter(kind=OperationKind.NETWORK_CREATE).exists()


def test_a_document_of_the_most_networks_allowed_is_read(demo_host):
    entries = [
        entry(f"n{i}", f"<network><name>n{i}</name><ip address='10.{i // 250}.{i % 250}.1' prefix='24'/></network>")
        for i in range(MAX_NETWORKS)
    ]
    assert len(parse_document(document(*entries))) == MAX_NETWORKS
    with pytest.raises(DocumentRejected, match="at most 500 networks"):
        parse_document(document(*entries, entry("one-more", ISOLATED.replace("lab", "one-more"))))


def test_parse_keeps_what_the_document_says(demo_host):
    [network] = parse_document(document(entry("lab", ISOLATED, active=False, autostart=True)))
    assert (network.name, network.active, network.autostart) == ("lab", False, True)
    assert "10.70.0.1" in network.xml


def test_a_hand_written_document_compares_equal_once_libvirt_has_normalised_it(second_host, admin):
    """No forward mode, no STP, elements out of libvirt's order: after one apply, nothing to do."""
    written = (
        "<network><name>hand</name><ip address='10.72.0.1' prefix='24'><dhcp><range start='10.72.0.10' "
        "end='10.72.0.20'/></dhcp></ip><forward/><bridge name='virbr72'/></network>"
    )
    text = document(entry("hand", written))
    run_all(apply_document(text, [second_host], actor=admin, source=WEB))
    assert 'stp="on"' in export_networks(second_host, ["hand"])  # libvirt's default, as the host wrote it
    again = apply_document(text, [second_host], actor=admin, source=WEB)
    assert again.summary == "no changes: 1 network(s) unchanged"


# ---------------------------------------------------------------- management commands


def test_export_plan_and_apply_commands(demo_host, second_host, admin, tmp_path, capsys):
    from django.core.management import call_command

    call_command("exportnetworks", "demo", "--names", "isolated")
    path = tmp_path / "networks.yaml"
    path.write_text(capsys.readouterr().out)
    call_command("plannetworks", str(path), "--hosts", "second")
    out = capsys.readouterr().out
    assert "isolated" in out and "create" in out and "not in the document, kept" in out
    assert out.strip().endswith("1 change(s), 0 network(s) unchanged")
    call_command("applynetworks", str(path), "--hosts", "second", "--as", admin.username)
    out = capsys.readouterr().out
    [operation] = Operation.objects.filter(kind=OperationKind.NETWORK_CREATE)
    assert f"#{operation.pk} network.create" in out and operation.requested_by == admin
    assert operation_run(operation.pk).status == OperationStatus.SUCCEEDED
    call_command("applynetworks", str(path), "--hosts", "second", "--as", admin.username)
    assert capsys.readouterr().out.strip().endswith("no changes: 1 network(s) unchanged")


def test_apply_command_waiting_gives_up_after_its_timeout(second_host, admin, tmp_path):
    from django.core.management import CommandError, call_command

    path = tmp_path / "lab.yaml"
    path.write_text(document(entry("lab", ISOLATED)))
    for bad in ("soon", "-1", "nan", "inf"):
        with pytest.raises(CommandError, match="--timeout"):
            call_command("applynetworks", str(path), "--hosts", "second", "--as", admin.username, "--timeout", bad)
    assert not Operation.objects.filter(kind=OperationKind.NETWORK_CREATE).exists()
    # no worker runs in the tests: the operation stays queued
    args = ("--hosts", "second", "--as", admin.username, "--wait", "--timeout", "0.2")
    with pytest.raises(CommandError, match=r"Gave up after 0.2 s; not finished yet: #\d+ queued"):
        call_command("applynetworks", str(path), *args)
    [operation] = Operation.objects.filter(kind=OperationKind.NETWORK_CREATE)
    assert operation.status == OperationStatus.QUEUED


def test_commands_refuse_bad_input_with_a_message(demo_host, tmp_path):
    from django.core.management import CommandError, call_command

    bad = tmp_path / "bad.yaml"
    bad.write_text("kvmweb: networks/v1\nnetworks: nope\n")
    with pytest.raises(CommandError, match="Unknown host 'nowhere'"):
        call_command("exportnetworks", "nowhere")
    with pytest.raises(CommandError, match="must be a list"):
        call_command("plannetworks", str(bad), "--hosts", "demo")
    with pytest.raises(CommandError, match="Unknown host"):
        call_command("plannetworks", str(bad), "--hosts", "nowhere")
    with pytest.raises(CommandError, match="No active user"):
        call_command("applynetworks", str(bad), "--hosts", "demo", "--as", "ghost")
    viewer = UserFactory(username="vera", role="viewer")
    good = tmp_path / "good.yaml"
    good.write_text(document(entry("lab", ISOLATED)))
    with pytest.raises(CommandError, match="needs the admin role"):
        call_command("applynetworks", str(good), "--hosts", "demo", "--as", viewer.username)
    assert AuditEvent.objects.filter(action="network.apply.denied", actor=viewer).exists()


def test_a_network_whose_mirrored_xml_cannot_be_read_is_refused_not_a_crash(demo_host):
    Network.objects.filter(host=demo_host, name="isolated").update(inactive_xml="<network><name>", live_xml="")
    text = document(entry("isolated", ISOLATED.replace("lab", "isolated")))
    [item] = [item for item in plan_document(text, [demo_host]).items if item.network == "isolated"]
    assert item.action == "refused" and "cannot be read" in item.detail


def test_a_change_edit_xml_refuses_on_the_target_is_refused_there_and_not_requested(demo_host, second_host, admin):
    text = export_networks(demo_host, ["default"])  # its portgroups carry VLAN tags on a Linux bridge
    result = apply_document(text, [second_host], actor=admin, source=WEB)
    [item] = [r for r in result.results if r["network"] == "default"]
    assert item["action"] == "refused" and "VLAN tags" in item["detail"] and item["status"] == "skipped"
    assert not Operation.objects.filter(host=second_host).exclude(kind=OperationKind.HOST_SYNC).exists()
    assert result.summary == "no changes: 0 network(s) unchanged, 1 refused"
