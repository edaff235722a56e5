"""The live-edit endpoints: GET lists the mirror; writes answer 202 or 400 with no operation."""

import pytest

from networks.hypervisor import client
from networks.models import Network, Operation
from networks.services.operations import operation_run


@pytest.fixture
def default(demo_host):
    return Network.objects.get(host=demo_host, name="default")


def _run(response):
    assert response.status_code == 202, response.json()
    finished = operation_run(response.json()["operation"]["id"])
    assert finished.status == "succeeded", finished.error
    return finished


@pytest.mark.parametrize(
    ("collection", "count"),
    [("dhcp-hosts", 3), ("dhcp-ranges", 1), ("dns-hosts", 1), ("dns-txt", 1), ("dns-srv", 1), ("portgroups", 2)],
)
def test_each_section_lists_what_the_mirror_holds(api, default, collection, count):
    response = api.get(f"/api/networks/{default.pk}/{collection}/")
    assert response.status_code == 200 and len(response.json()) == count


def test_a_reservation_is_added_modified_and_deleted_through_the_api(api, default, demo_uri):
    base = f"/api/networks/{default.pk}/dhcp-hosts/"
    _run(
        api.post(
            base, {"mac": "52:54:00:AA:00:01", "ip": "192.168.122.60", "name": "api", "scope": "both"}, format="json"
        )
    )
    _run(
        api.patch(
            f"{base}52:54:00:aa:00:01/",
            {"mac": "52:54:00:aa:00:01", "ip": "192.168.122.61", "name": "api"},
            format="json",
        )
    )
    live = client.connect(demo_uri).networkLookupByName("default").XMLDesc(0)
    assert "192.168.122.61" in live and "192.168.122.60" not in live
    _run(api.delete(f"{base}52:54:00:aa:00:01/"))
    assert "52:54:00:aa:00:01" not in client.connect(demo_uri).networkLookupByName("default").XMLDesc(0)
    assert [h["mac"] for h in api.get(base).json()] == ["52:54:00:0a:00:11", "52:54:00:0a:00:12", "52:54:00:0c:00:31"]


def test_bad_input_answers_400_with_field_errors_and_no_operation(api, default):
    base = f"/api/networks/{default.pk}/dhcp-hosts/"
    response = api.post(base, {"mac": "nope", "ip": "192.168.122.9"}, format="json")
    assert response.status_code == 400 and "mac" in response.json()
    response = api.post(base, {"mac": "nope", "ip": "nope", "name": "a b"}, format="json")
    assert response.status_code == 400 and {"mac", "ip", "name"} <= set(response.json())
    response = api.post(base, {"mac": "52:54:00:00:00:01", "ip": "192.168.122.5", "scope": "sometimes"}, format="json")
    assert response.status_code == 400 and "scope" in response.json()
    response = api.delete(f"{base}52:54:00:ff:ff:ff/")
    assert response.status_code == 400 and "key" in response.json()
    response = api.patch(f"/api/networks/{default.pk}/dhcp-ranges/192.168.122.2/", {}, format="json")
    assert response.status_code == 400 and "command" in response.json()
    assert not Operation.objects.filter(kind="network.update").exists()


def test_dns_records_through_the_api(api, default, demo_uri):
    _run(
        api.post(f"/api/networks/{default.pk}/dns-hosts/", {"ip": "192.168.122.70", "hostnames": "nas"}, format="json")
    )
    _run(
        api.post(
            f"/api/networks/{default.pk}/dns-srv/",
            {"service": "smb", "protocol": "tcp", "target": "nas", "port": 445},
            format="json",
        )
    )
    _run(api.delete(f"/api/networks/{default.pk}/dns-hosts/192.168.122.70/"))
    live = client.connect(demo_uri).networkLookupByName("default").XMLDesc(0)
    assert "192.168.122.70" not in live and "smb" in live


def test_a_running_only_write_is_recorded_with_its_scope(api, default):
    response = api.post(
        f"/api/networks/{default.pk}/dns-txt/",
        {"name": "tmp", "value": "x", "scope": "live", "message": "test"},
        format="json",
    )
    operation = Operation.objects.get(pk=response.json()["operation"]["id"])
    assert operation.params["scope"] == "live" and operation.message == "test"


def test_bulk_import_dry_run_then_apply(api, default):
    url = f"/api/networks/{default.pk}/dhcp-hosts/import/"
    csv_text = "52:54:00:20:00:01,192.168.122.201,a\nbad,192.168.122.202,b\n"
    dry = api.post(url, {"csv": csv_text, "dry_run": True}, format="json")
    assert dry.status_code == 200 and (dry.json()["valid"], dry.json()["invalid"]) == (1, 1)
    assert not Operation.objects.filter(kind="network.bulk_import").exists()
    finished = _run(api.post(url, {"csv": csv_text, "strategy": "live"}, format="json"))
    assert finished.result["added"] == 1


def test_the_ipam_endpoint_finds_reservations_nics_and_subnets(api, default):
    body = api.get("/api/ipam/", {"q": "52:54:00:0a:00:11"}).json()
    assert body["reservations"][0]["network_name"] == "default" and body["reservations"][0]["ip"] == "192.168.122.11"
    assert body["interfaces"][0]["guest_name"] == "web01"
    assert api.get("/api/ipam/", {"q": "10.30.0.77"}).json()["subnets"][0]["prefix"] == 24
    assert api.get("/api/ipam/", {"q": "x"}).status_code == 400


def test_put_xml_answers_202_or_400(api, default):
    url = f"/api/networks/{default.pk}/xml/"
    assert api.put(url, {"xml": "<network><name>other</name></network>"}, format="json").status_code == 400
    changed = default.inactive_xml.replace("<domain name='demo.lan'", "<domain name='demo2.lan'")
    response = api.put(url, {"xml": changed, "apply": "define"}, format="json")
    assert response.status_code == 202
    assert Operation.objects.get(pk=response.json()["operation"]["id"]).kind == "network.define"


def test_rename_through_the_api(api, default):
    assert api.post(f"/api/networks/{default.pk}/rename/", {"name": "x y"}, format="json").status_code == 400
    response = api.post(f"/api/networks/{default.pk}/rename/", {"name": "nat0"}, format="json")
    assert response.status_code == 202


def test_a_dry_run_reports_rows_the_network_already_has(api, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    csv_text = "52:54:00:0a:00:11,192.168.122.11,web01\n52:54:00:99:00:07,192.168.122.77,new77\n"
    url = f"/api/networks/{network.pk}/dhcp-hosts/import/"
    body = api.post(url, {"csv": csv_text, "dry_run": True}, format="json").json()
    assert (body["valid"], body["present"], body["invalid"]) == (1, 1, 0)
    assert [row["present"] for row in body["rows"]] == [True, False]
