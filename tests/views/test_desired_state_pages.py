"""Desired-state pages: export download, plan upload, apply, copy a network to other hosts."""

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from networks.choices import AuditSource, OperationKind
from networks.models import Host, Network, Operation
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


def created() -> list[Operation]:
    return list(Operation.objects.exclude(kind=OperationKind.HOST_SYNC))


def test_the_host_page_offers_export_and_plan_and_export_downloads_yaml(logged_in, demo_host):
    page = logged_in.get(reverse("networks:host_detail", args=[demo_host.pk])).content.decode()
    assert 'id="export-networks"' in page and 'id="plan-networks"' in page
    response = logged_in.get(reverse("networks:host_networks_export", args=[demo_host.pk]))
    assert response["Content-Type"].startswith("application/yaml") and "attachment" in response["Content-Disposition"]
    assert {n["name"] for n in yaml.safe_load(response.content)["networks"]} >= {"default", "isolated", "routed"}


def test_an_uploaded_document_is_planned_then_applied(logged_in, demo_host, second_host):
    url = reverse("networks:host_network_plan", args=[second_host.pk])
    upload = SimpleUploadedFile("networks.yaml", DOCUMENT.encode(), content_type="application/yaml")
    page = logged_in.post(url, {"upload": upload, "hosts": ["second"]}).content.decode()
    assert 'id="desired-plan"' in page and "plan-create" in page and 'id="apply-plan"' in page
    assert not created()
    response = logged_in.post(reverse("networks:network_plan_apply"), {"document": DOCUMENT, "hosts": ["second"]})
    page = response.content.decode()
    [operation] = created()
    assert response.status_code == 200 and f'href="/operations/{operation.pk}/"' in page
    operation_run(operation.pk)
    page = logged_in.post(url, {"document": DOCUMENT, "hosts": ["second"]}).content.decode()
    assert "no changes: 1 network(s) unchanged" in page and 'id="apply-plan"' not in page


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"document": "a: &x 1\nb: *x\n", "hosts": ["second"]}, "anchors and aliases"),
        ({"document": DOCUMENT, "hosts": ["nowhere"]}, "not one of the available choices"),
        ({"document": "", "hosts": ["second"]}, "Paste or upload a document"),
        ({"upload": SimpleUploadedFile("x.yaml", b"\xff\xfe"), "hosts": ["second"]}, "not UTF-8"),
    ],
)
def test_bad_documents_are_a_message_on_the_page(logged_in, second_host, fields, message):
    page = logged_in.post(reverse("networks:host_network_plan", args=[second_host.pk]), fields).content.decode()
    assert message in page and 'id="desired-plan"' not in page
    if "upload" not in fields:  # Apply posts the planned document, never a file
        response = logged_in.post(reverse("networks:network_plan_apply"), fields)
        assert response.status_code == 400 and message in response.content.decode()
    assert not created()


def test_copy_a_network_to_another_host_with_the_conflict_check(logged_in, demo_host, second_host):
    isolated = Network.objects.get(host=demo_host, name="isolated")
    page = logged_in.get(reverse("networks:network_detail", args=[isolated.pk])).content.decode()
    assert 'id="copy-network"' in page
    url = reverse("networks:network_copy", args=[isolated.pk])
    form = logged_in.get(url).content.decode()
    assert 'value="second"' in form and 'value="demo"' not in form  # not onto itself
    page = logged_in.post(url, {"hosts": ["second"]}).content.decode()
    assert "plan-create" in page and 'id="apply-plan"' in page


def test_copy_onto_a_different_network_of_the_same_name_is_a_conflict_unless_replace_is_ticked(
    logged_in, demo_host, second_host
):
    default = Network.objects.get(host=demo_host, name="default")
    url = reverse("networks:network_copy", args=[default.pk])
    assert 'name="replace"' in logged_in.get(url).content.decode()
    page = logged_in.post(url, {"hosts": ["second"]}).content.decode()
    assert "plan-conflict" in page and "a different network named default exists on second" in page
    assert 'id="apply-plan"' not in page
    page = logged_in.post(url, {"hosts": ["second"], "replace": "on"}).content.decode()
    # replacing it is an update, which Edit XML's rules refuse (VLAN tags on a Linux bridge)
    assert "plan-refused" in page and "portgroup VLAN tags only on SR-IOV" in page and 'id="apply-plan"' not in page


def test_the_apply_of_a_copy_keeps_an_existing_network_of_the_same_name(logged_in, demo_host, second_host):
    """The Apply of a copy plans again as the copy did: what it showed as a conflict is not changed."""
    other_lab = DOCUMENT.replace("virbr70", "virbr71")
    logged_in.post(reverse("networks:network_plan_apply"), {"document": other_lab, "hosts": ["demo"]})
    [create] = created()
    operation_run(create.pk)
    fields = {"document": DOCUMENT, "hosts": ["second", "demo"]}
    page = logged_in.post(reverse("networks:network_plan_apply"), {**fields, "keep_existing": "on"}).content.decode()
    assert "a different network named lab exists on demo" in page
    assert [op.host.name for op in created() if op.pk != create.pk] == ["second"]


def test_copying_a_network_whose_xml_cannot_be_read_is_a_message_not_an_error(logged_in, demo_host, second_host):
    Network.objects.filter(host=demo_host, name="isolated").update(inactive_xml="<network><name>", live_xml="")
    isolated = Network.objects.get(host=demo_host, name="isolated")
    response = logged_in.post(reverse("networks:network_copy", args=[isolated.pk]), {"hosts": ["second"]})
    page = response.content.decode()
    assert response.status_code == 200 and 'id="plan-error"' in page and "cannot be read" in page
    assert 'id="desired-plan"' not in page and not created()


def test_copy_reports_a_bridge_conflict(logged_in, demo_host, second_host, demo_uri):
    routed = Network.objects.get(host=demo_host, name="routed")
    Network.objects.filter(host=second_host, name="default").update(bridge="virbr2")  # routed's bridge
    page = logged_in.post(reverse("networks:network_copy", args=[routed.pk]), {"hosts": ["second"]}).content.decode()
    assert "plan-conflict" in page and "the bridge virbr2 is used by default" in page


def test_viewers_see_the_plan_but_no_apply_and_cannot_apply(client, demo_host, second_host):
    client.force_login(UserFactory(username="vera", role="viewer"))
    page = client.post(
        reverse("networks:host_network_plan", args=[second_host.pk]), {"document": DOCUMENT, "hosts": ["second"]}
    ).content.decode()
    assert "plan-create" in page and 'id="apply-plan"' not in page
    response = client.post(reverse("networks:network_plan_apply"), {"document": DOCUMENT, "hosts": ["second"]})
    assert response.status_code == 403 and not created()


def test_hosts_out_of_scope_are_404_and_not_offered(client, demo_host, second_host):
    scoped = UserFactory(username="sam")
    scoped.kvmweb_role.all_hosts = False
    scoped.kvmweb_role.save()
    scoped.kvmweb_role.hosts.set([demo_host])
    client.force_login(scoped)
    assert client.get(reverse("networks:host_networks_export", args=[second_host.pk])).status_code == 404
    assert client.get(reverse("networks:host_network_plan", args=[second_host.pk])).status_code == 404
    isolated = Network.objects.get(host=demo_host, name="isolated")
    assert 'value="second"' not in client.get(reverse("networks:network_copy", args=[isolated.pk])).content.decode()
    response = client.post(reverse("networks:network_plan_apply"), {"document": DOCUMENT, "hosts": ["second"]})
    assert response.status_code == 400 and not created()
