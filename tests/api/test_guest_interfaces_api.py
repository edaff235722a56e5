"""`/api/guests/{id}/interfaces/`: the contract other tools rely on. Writes answer 202 with the
operation; bad input of any JSON type answers 400 naming the field and queues nothing."""

import pytest
from rest_framework.test import APIClient

from networks.hypervisor import client
from networks.models import AuditEvent, Guest, Operation
from networks.services.permissions import role_set
from tests.conftest import run_to_end
from tests.factories import HostFactory, UserFactory


@pytest.fixture
def build01(demo_host):
    return Guest.objects.get(host=demo_host, name="build01")


@pytest.fixture
def web01(demo_host):
    return Guest.objects.get(host=demo_host, name="web01")


def _accepted(response):
    assert response.status_code == 202, response.json()
    body = response.json()
    assert set(body) == {"operation"} and body["operation"]["status"] == "queued"
    return run_to_end(body["operation"]["id"])


def test_the_list_shows_the_mirrors_interfaces(api, web01):
    response = api.get(f"/api/guests/{web01.pk}/interfaces/")
    assert response.status_code == 200
    assert [(i["mac"], i["source"]) for i in response.json()] == [
        ("52:54:00:0a:00:11", "default"),
        ("52:54:00:0a:01:11", "isolated"),
    ]
    one = api.get(f"/api/guests/{web01.pk}/interfaces/52:54:00:0A:00:11/")
    assert one.status_code == 200 and one.json()["portgroup"] == "prod"
    assert api.get(f"/api/guests/{web01.pk}/interfaces/52:54:00:99:99:99/").status_code == 404


def test_an_interface_is_added_changed_and_removed(api, build01, demo_uri):
    base = f"/api/guests/{build01.pk}/interfaces/"
    body = {"source_type": "network", "source": "default", "portgroup": "dev", "model": "e1000e",
            "mac": "52:54:00:AB:00:01", "scope": "config", "message": "a second NIC"}  # fmt: skip
    added = _accepted(api.post(base, body, format="json"))
    assert added.status == "succeeded", added.error
    assert AuditEvent.objects.get(operation=added, action="guest.interface_add.requested").message == "a second NIC"
    changed = _accepted(api.patch(f"{base}52:54:00:ab:00:01/", {"source": "isolated", "link": "down"}, format="json"))
    assert changed.status == "succeeded", changed.error
    config = client.connect(demo_uri).lookupByName("build01").XMLDesc(0)
    assert "<source network='isolated'/>" in config and "<link state='down'/>" in config
    removed = _accepted(api.delete(f"{base}52:54:00:ab:00:01/?scope=config"))
    assert removed.status == "succeeded", removed.error
    assert [i["mac"] for i in api.get(base).json()] == ["52:54:00:0c:00:41"]


def test_dry_run_answers_the_preview_and_changes_nothing(api, web01):
    before = Operation.objects.count()
    response = api.patch(
        f"/api/guests/{web01.pk}/interfaces/52:54:00:0a:00:11/?dry_run=1", {"model": "e1000"}, format="json"
    )
    assert response.status_code == 200, response.json()
    preview = response.json()
    assert preview["replug"] is True and preview["effect"].startswith("Hot-unplug + plug")
    assert "virtio" in preview["before_xml"] and "e1000" in preview["after_xml"]
    added = api.post(f"/api/guests/{web01.pk}/interfaces/?dry_run=1", {"source": "isolated"}, format="json").json()
    assert added["mac"].startswith("52:54:00:") and added["scope"] == "both" and added["effect"].startswith("Hot-plug")
    assert Operation.objects.count() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"source": "default", "model": ["virtio"]}, "model"),
        ({"source": 5}, "source"),
        ({"source": "default", "vlan_tags": "x"}, "vlan_tags"),
        ({"source": "default", "inbound": [1]}, "inbound"),
        ({"source": "default", "scope": {"a": 1}}, "scope"),
        ({"source": "default", "mac": "52:54:00:0a:00:11"}, "mac"),
        ({"source": "default", "message": ["why"]}, "message"),
        ({"source": "default", "unknown": 1}, "non_field_errors"),
    ],
)
def test_bad_input_of_any_json_type_is_a_400_naming_the_field(api, build01, body, field):
    before = Operation.objects.count()
    response = api.post(f"/api/guests/{build01.pk}/interfaces/", body, format="json")
    assert response.status_code == 400 and field in response.json(), response.json()
    assert Operation.objects.count() == before


@pytest.mark.parametrize("body", [[], "default", 7, None, [{"source": "default"}]])
def test_a_body_that_is_not_an_object_is_a_400(api, build01, body):
    url = f"/api/guests/{build01.pk}/interfaces/"
    for response in (
        api.post(url, body, format="json"),
        api.patch(f"{url}52:54:00:0c:00:41/", body, format="json"),
    ):
        assert response.status_code == 400, response.content


def test_a_viewer_gets_403_naming_the_role(build01):
    viewer = APIClient()
    viewer.force_authenticate(UserFactory(username="v", role="viewer"))
    response = viewer.post(f"/api/guests/{build01.pk}/interfaces/", {"source": "default"}, format="json")
    assert response.status_code == 403 and "operator" in response.json()["detail"]
    assert AuditEvent.objects.filter(action="guest.interface_add.denied", actor_name="v").count() == 1
    preview = viewer.post(f"/api/guests/{build01.pk}/interfaces/?dry_run=1", {"source": "default"}, format="json")
    assert preview.status_code == 403


def test_a_guest_of_a_host_outside_the_scope_does_not_exist(build01):
    HostFactory(name="other")
    user = UserFactory(username="scoped", role="viewer")
    role_set(user=user, role="operator", host_names=["other"], actor=None, source="system")
    scoped = APIClient()
    scoped.force_authenticate(user)
    assert scoped.get(f"/api/guests/{build01.pk}/interfaces/").status_code == 404
    assert scoped.post(f"/api/guests/{build01.pk}/interfaces/", {"source": "default"}, format="json").status_code == 404
    assert scoped.delete(f"/api/guests/{build01.pk}/interfaces/52:54:00:0c:00:41/").status_code == 404


@pytest.fixture
def fuzz_app(settings):
    """The app as tests/api/test_fuzz.py calls it (in this process, in the test's transaction)."""
    from tests.api.test_fuzz import InTransactionApp

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]
    return InTransactionApp()


@pytest.mark.fuzz
@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_generated_input_on_real_guests_and_macs_answers_within_the_schema(demo_host, client, fuzz_app, role):
    """schemathesis again (tests/api/test_fuzz.py), with paths naming real guests and their
    MACs, so generated bodies reach the interface checks rather than a 404."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.api.test_fuzz import (
        CHECKS,
        EXAMPLES,
        KEEP,
        MODES,
        OTHER_BODIES,
        WRITE_METHODS,
        _schema_from_app,
        _session,
    )

    cookies, headers = _session(client, UserFactory(username=f"fuzz-{role}", role=role))
    guests = {
        g.pk: [i.mac for i in g.interfaces.all()]
        for g in Guest.objects.filter(host=demo_host, name__in=["web01", "build01"])
    }
    targets = st.sampled_from([(pk, mac) for pk, macs in guests.items() for mac in macs])
    operations = [
        r.ok() for r in _schema_from_app(client, fuzz_app).get_all_operations() if "/interfaces/" in r.ok().path
    ]
    assert len(operations) == 5
    for operation in operations:
        strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in MODES))

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=strategy, target=targets, other_body=OTHER_BODIES)
        def run(case, target, other_body):
            case.path_parameters = {**(case.path_parameters or {}), "id": target[0]}
            if "mac" in case.path_parameters:
                case.path_parameters["mac"] = target[1]
            if other_body is not KEEP and case.method.upper() in WRITE_METHODS:
                case.body, case.media_type = other_body, "application/json"
            response = case.call(headers=headers, cookies=cookies)
            case.validate_response(response, checks=CHECKS, headers=headers)
            if role == "viewer" and case.method.upper() in WRITE_METHODS:
                assert not 200 <= response.status_code < 300, (
                    f"a viewer's {case.method} answered {response.status_code}"
                )

        run()
