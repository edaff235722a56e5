"""`/api/guests/{id}/hostdevs/`: the contract other tools rely on. Writes answer 202 with the
operation and the warnings; bad input of any JSON type answers 400 naming the field and
queues nothing; only admins may write.

The demo fleet runs on the test driver: assignments change a stopped guest's config by
redefinition, and no hardware path (IOMMU, vfio-pci, VF programming) is exercised.
"""

import pytest
from rest_framework.test import APIClient

from networks.hypervisor import client
from networks.models import AuditEvent, Guest, Network, Operation
from networks.services.permissions import role_set
from tests.conftest import run_to_end
from tests.factories import HostFactory, UserFactory

FREE_VF = "0000:01:10.2"
SPARE_PF = "0000:01:00.1"


@pytest.fixture
def no_pool(demo_host):
    """The demo host without its VF pool (sriov-pool gone from the mirror): ens1f0's VFs are
    then free to give a guest directly. While a pool uses them, they are refused."""
    Network.objects.filter(host=demo_host, name="sriov-pool").delete()


@pytest.fixture
def build01(demo_host):
    return Guest.objects.get(host=demo_host, name="build01")


@pytest.fixture
def gpu01(demo_host):
    return Guest.objects.get(host=demo_host, name="gpu01")


def _accepted(response):
    assert response.status_code == 202, response.json()
    body = response.json()
    assert set(body) == {"operation", "warnings"} and body["operation"]["status"] == "queued"
    return body, run_to_end(body["operation"]["id"])


def test_the_list_shows_the_guests_pci_devices(api, gpu01):
    response = api.get(f"/api/guests/{gpu01.pk}/hostdevs/")
    assert response.status_code == 200
    assert response.json() == [
        {"pci_address": "0000:01:10.0", "kind": "interface", "managed": True, "mac": "52:54:00:0e:00:51", "vlan": 42,
         "virtualport": "", "profileid": ""},
        {"pci_address": "0000:41:00.0", "kind": "hostdev", "managed": True, "mac": "", "vlan": None,
         "virtualport": "", "profileid": ""},
    ]  # fmt: skip


def test_a_vf_is_assigned_as_an_interface_and_returned(api, build01, no_pool, demo_uri):
    base = f"/api/guests/{build01.pk}/hostdevs/"
    body = {"pci_address": FREE_VF, "kind": "interface", "mac": "52:54:00:AB:00:02", "vlan": 7,
            "virtualport": "802.1Qbh", "profileid": "gold", "message": "a fast NIC"}  # fmt: skip
    _answer, added = _accepted(api.post(base, body, format="json"))
    assert added.status == "succeeded", added.error
    assert AuditEvent.objects.get(operation=added, action="guest.hostdev_attach.requested").message == "a fast NIC"
    config = client.connect(demo_uri).lookupByName("build01").XMLDesc(2)
    assert "<mac address='52:54:00:ab:00:02'/>" in config and "<parameters profileid='gold'/>" in config
    listed = api.get(base).json()
    assert [(d["pci_address"], d["kind"], d["vlan"]) for d in listed] == [(FREE_VF, "interface", 7)]
    _answer, removed = _accepted(api.delete(f"{base}{FREE_VF}/?scope=config"))
    assert removed.status == "succeeded", removed.error
    assert api.get(base).json() == []


def test_a_vf_as_a_bare_hostdev_answers_the_mac_warning(api, build01, no_pool):
    answer, _finished = _accepted(api.post(f"/api/guests/{build01.pk}/hostdevs/", {"pci_address": FREE_VF},
                                           format="json"))  # fmt: skip
    assert any("new random MAC after each host reboot" in warning for warning in answer["warnings"])


def test_dry_run_answers_the_preview_and_changes_nothing(api, build01):
    before = Operation.objects.count()
    response = api.post(f"/api/guests/{build01.pk}/hostdevs/?dry_run=1", {"pci_address": SPARE_PF}, format="json")
    assert response.status_code == 200
    preview = response.json()
    assert preview["scope"] == "config" and preview["kind"] == "hostdev"
    assert '<hostdev mode="subsystem" type="pci" managed="yes">' in preview["device_xml"]
    assert Operation.objects.count() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pci_address": "0000:41:00.0"}, "pci_address"),  # held by gpu01
        ({"pci_address": "0000:0b:00.0"}, "pci_address"),  # not a device of the host
        ({"pci_address": ["x"]}, "pci_address"),
        ({"pci_address": None}, "pci_address"),
        ({"pci_address": SPARE_PF, "kind": "interface"}, "kind"),  # not a VF
        ({"pci_address": FREE_VF, "kind": "interface", "virtualport": "802.1Qbg"}, "virtualport"),
        ({"pci_address": FREE_VF, "kind": "interface", "vlan": "ten"}, "vlan"),
        ({"pci_address": FREE_VF, "managed": [True]}, "managed"),
        ({"pci_address": FREE_VF, "scope": "live"}, "scope"),  # build01 is stopped
        ({"pci_address": FREE_VF, "message": {"a": 1}}, "message"),
    ],
)
def test_bad_input_answers_400_naming_the_field_and_queues_nothing(api, build01, no_pool, body, field):
    response = api.post(f"/api/guests/{build01.pk}/hostdevs/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Operation.objects.filter(kind__startswith="guest.").exists()


def test_a_vf_of_a_pool_answers_400_naming_the_pool(api, build01):
    response = api.post(f"/api/guests/{build01.pk}/hostdevs/", {"pci_address": FREE_VF, "kind": "interface"},
                        format="json")  # fmt: skip
    assert response.status_code == 400
    assert response.json() == {"pci_address": [
        "0000:01:10.2 is a VF of the pool sriov-pool: the pool hands it to the next guest that starts on it, which "
        "would then fail to start. Give the guest an interface on the network sriov-pool instead, or a VF of a PF "
        "no pool uses."
    ]}  # fmt: skip
    assert not Operation.objects.filter(kind__startswith="guest.").exists()


@pytest.mark.parametrize("body", [[], "x", 5, [{"pci_address": FREE_VF}]])
def test_a_body_that_is_not_an_object_answers_400(api, build01, body):
    response = api.post(f"/api/guests/{build01.pk}/hostdevs/", body, format="json")
    assert response.status_code == 400 and "non_field_errors" in response.json()


def test_returning_a_device_the_guest_does_not_hold_answers_400(api, build01):
    response = api.delete(f"/api/guests/{build01.pk}/hostdevs/{FREE_VF}/")
    assert response.status_code == 400 and "pci_address" in response.json()
    bad = api.delete(f"/api/guests/{build01.pk}/hostdevs/not-an-address/")
    assert bad.status_code == 400 and "pci_address" in bad.json()


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_a_non_admin_gets_403_naming_the_role(gpu01, role):
    user = APIClient()
    user.force_authenticate(UserFactory(username="u", role=role))
    response = user.post(f"/api/guests/{gpu01.pk}/hostdevs/", {"pci_address": FREE_VF}, format="json")
    assert response.status_code == 403 and "admin" in response.json()["detail"]
    assert user.delete(f"/api/guests/{gpu01.pk}/hostdevs/0000:41:00.0/").status_code == 403
    assert user.get(f"/api/guests/{gpu01.pk}/hostdevs/").status_code == 200  # reading is for everyone
    denied = sorted(AuditEvent.objects.filter(actor_name="u").values_list("action", flat=True))
    assert denied == ["guest.hostdev_attach.denied", "guest.hostdev_detach.denied"]


def test_a_guest_of_a_host_outside_the_scope_does_not_exist(build01):
    HostFactory(name="other")
    user = UserFactory(username="scoped", role="viewer")
    role_set(user=user, role="admin", host_names=["other"], actor=None, source="system")
    scoped = APIClient()
    scoped.force_authenticate(user)
    assert scoped.get(f"/api/guests/{build01.pk}/hostdevs/").status_code == 404
    assert (
        scoped.post(f"/api/guests/{build01.pk}/hostdevs/", {"pci_address": FREE_VF}, format="json").status_code == 404
    )
    assert scoped.delete(f"/api/guests/{build01.pk}/hostdevs/{FREE_VF}/").status_code == 404


@pytest.fixture
def fuzz_app(settings):
    """The app as tests/api/test_fuzz.py calls it (in this process, in the test's transaction)."""
    from tests.api.test_fuzz import InTransactionApp

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]
    return InTransactionApp()


@pytest.mark.fuzz
@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_generated_input_on_real_guests_and_devices_answers_within_the_schema(demo_host, client, fuzz_app, role):
    """schemathesis again (tests/api/test_fuzz.py), as an admin (who passes the role check, so
    generated bodies reach the device checks) and a viewer, with paths naming real guests and
    the PCI addresses they hold."""
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
    guests = Guest.objects.filter(host=demo_host, name__in=["gpu01", "build01"])
    targets = st.sampled_from([(g.pk, address) for g in guests for address in ("0000:41:00.0", FREE_VF, "x")])
    operations = [
        r.ok() for r in _schema_from_app(client, fuzz_app).get_all_operations() if "/hostdevs/" in r.ok().path
    ]
    assert len(operations) == 3  # list, attach, detach
    for operation in operations:
        strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in MODES))

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=strategy, target=targets, other_body=OTHER_BODIES)
        def run(case, target, other_body):
            case.path_parameters = {**(case.path_parameters or {}), "id": target[0]}
            if "pci" in case.path_parameters:
                case.path_parameters["pci"] = target[1]
            if other_body is not KEEP and case.method.upper() in WRITE_METHODS:
                case.body, case.media_type = other_body, "application/json"
            response = case.call(headers=headers, cookies=cookies)
            case.validate_response(response, checks=CHECKS, headers=headers)
            if role == "viewer" and case.method.upper() in WRITE_METHODS:
                assert not 200 <= response.status_code < 300, (
                    f"a viewer's {case.method} answered {response.status_code}"
                )

        run()
