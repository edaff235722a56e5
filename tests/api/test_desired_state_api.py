"""The desired-state API: export (YAML), plan (200) and apply (202), hostile bodies a 400."""

import pytest
import yaml

from networks.choices import AuditSource, OperationKind
from networks.models import AuditEvent, Host, Operation
from networks.services import hosts as host_services
from networks.services.operations import operation_run
from tests.factories import UserFactory

LAB = "<network><name>lab</name><bridge name='virbr70'/><ip address='10.70.0.1' prefix='24'/></network>"
DOCUMENT = yaml.safe_dump({"kvmweb": "networks/v1", "networks": [{"name": "lab", "xml": LAB}]})


@pytest.fixture
def second_host(db, default_uri, admin):
    host = host_services.host_create(name="second", uri=default_uri, actor=admin, source=AuditSource.WEB)
    operation_run(host.operations.get().pk)
    return Host.objects.get(pk=host.pk)


def test_export_answers_yaml_of_the_named_networks(api, demo_host):
    response = api.get(f"/api/hosts/{demo_host.pk}/networks/export/?names=isolated,routed")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/yaml")
    data = yaml.safe_load(response.content)
    assert [n["name"] for n in data["networks"]] == ["isolated", "routed"]
    assert api.get(f"/api/hosts/{demo_host.pk}/networks/export/", HTTP_ACCEPT="application/yaml").status_code == 200


def test_export_of_an_unknown_network_is_a_400_and_of_an_unknown_host_a_404(api, demo_host):
    assert api.get(f"/api/hosts/{demo_host.pk}/networks/export/?names=nope").status_code == 400
    assert api.get("/api/hosts/9999/networks/export/").status_code == 404


def test_export_errors_asked_for_as_yaml_come_as_yaml(api, demo_host):
    bad_name = api.get(f"/api/hosts/{demo_host.pk}/networks/export/?names=nope", HTTP_ACCEPT="application/yaml")
    assert bad_name.status_code == 400 and bad_name["Content-Type"].startswith("application/yaml")
    assert yaml.safe_load(bad_name.content) == {"names": ["demo has no network named 'nope'."]}
    unknown_host = api.get("/api/hosts/9999/networks/export/", HTTP_ACCEPT="application/yaml")
    assert unknown_host.status_code == 404 and "detail" in yaml.safe_load(unknown_host.content)


def test_plan_then_apply_then_no_changes(api, second_host):
    body = {"document": DOCUMENT, "hosts": ["second"], "prune": False}
    plan = api.post("/api/network-plans/", body, format="json")
    assert plan.status_code == 200
    assert [(i["network"], i["action"]) for i in plan.json()["items"]] == [("lab", "create"), ("default", "kept")]
    assert not Operation.objects.exclude(kind=OperationKind.HOST_SYNC).exists()
    applied = api.post("/api/network-plans/apply/", body, format="json")
    assert applied.status_code == 202
    [lab, default] = applied.json()["items"]
    assert lab["status"] == "requested" and lab["operations"][0]["kind"] == OperationKind.NETWORK_CREATE
    assert lab["operations"][0]["url"] == f"/operations/{lab['operations'][0]['id']}/"
    assert default["status"] == "skipped" and default["operations"] == []
    operation_run(lab["operations"][0]["id"])
    again = api.post("/api/network-plans/apply/", body, format="json").json()
    assert again["summary"] == "no changes: 1 network(s) unchanged" and again["changes"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([1, 2], "non_field_errors"),
        ("text", "non_field_errors"),
        ({"document": 5, "hosts": ["second"]}, "document"),
        ({"document": DOCUMENT, "hosts": "second"}, "hosts"),
        ({"document": DOCUMENT, "hosts": [3]}, "hosts"),
        ({"document": DOCUMENT, "hosts": ["nowhere"]}, "hosts"),
        ({"document": DOCUMENT, "hosts": ["second"], "prune": "yes"}, "prune"),
        ({"document": DOCUMENT, "hosts": ["second"], "force": True}, "force"),
        ({"document": "a: &x [1]\nb: *x\n", "hosts": ["second"]}, "document"),
        ({"document": DOCUMENT.replace("virbr70", "virbr70 x"), "hosts": ["second"]}, "document"),
    ],
)
@pytest.mark.parametrize("url", ["/api/network-plans/", "/api/network-plans/apply/"])
def test_hostile_bodies_are_a_400_that_changes_nothing(api, second_host, body, field, url):
    response = api.post(url, body, format="json")
    assert response.status_code == 400 and field in response.json(), response.content
    assert not Operation.objects.exclude(kind=OperationKind.HOST_SYNC).exists()


def test_a_host_outside_the_scope_is_unknown(api, second_host, demo_host, admin):
    admin.kvmweb_role.all_hosts = False
    admin.kvmweb_role.save()
    admin.kvmweb_role.hosts.set([demo_host])
    response = api.post("/api/network-plans/", {"document": DOCUMENT, "hosts": ["second"]}, format="json")
    assert response.status_code == 400 and response.json()["hosts"] == ["Unknown host 'second'."]
    assert api.get(f"/api/hosts/{second_host.pk}/networks/export/").status_code == 404


def test_an_operator_may_plan_but_not_apply(second_host, client):
    from rest_framework.test import APIClient

    operator = UserFactory(username="olga", role="operator")
    api = APIClient()
    api.force_authenticate(operator)
    body = {"document": DOCUMENT, "hosts": ["second"]}
    assert api.post("/api/network-plans/", body, format="json").status_code == 200
    response = api.post("/api/network-plans/apply/", body, format="json")
    assert response.status_code == 403 and "admin" in response.json()["detail"]
    assert AuditEvent.objects.filter(action="network.apply.denied", actor=operator).exists()
    assert not Operation.objects.exclude(kind=OperationKind.HOST_SYNC).exists()
