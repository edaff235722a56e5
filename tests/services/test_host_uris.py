"""Host URIs cannot be turned against the machine kvmweb runs on: files, sockets and ports."""

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.urls import reverse
from rest_framework.test import APIClient

from kvmweb.settings import env_dirs
from networks.choices import AuditSource, HostStatus, OperationStatus
from networks.hypervisor.errors import HypervisorError
from networks.models import AuditEvent, Host, Network, Operation
from networks.services import create as create_services
from networks.services import hosts as host_services
from networks.services import netupdate, restart, sync, xmledit
from networks.services import networks as network_services
from networks.services.operations import operation_run
from tests.conftest import run_to_end

SECRET = "root:x:0:0:SECRET-FIRST-LINE"

# What an attacker with a plain account tried; each must be refused before anything is stored.
HOSTILE_URIS = [
    "test:///etc/passwd%00.xml",
    "test:///etc/passwd",
    "test:///etc/hosts.xml",
    "qemu+unix:///system?socket=/var/lib/redis/redis.sock",
    "qemu:///system?socket=/run/libvirt/../../var/lib/redis/redis.sock",
    "qemu+tcp://127.0.0.1:6379/system",
    "qemu+ssh://kvm1.example/system?keyfile=/etc/shadow",
    "qemu+ssh://kvm1.example/system?key%66ile=/etc/shadow",
    "qemu+tls://kvm1.example/system?pkipath=/root",
    "qemu+ssh:///system",
    "qemu+ssh://kvm1.example:99999/system",
]


@pytest.fixture
def api(admin):
    client = APIClient()
    client.force_authenticate(admin)
    return client


@pytest.fixture
def logged_in(client, admin):
    client.force_login(admin)
    return client


@pytest.fixture
def leaky_xml(settings, tmp_path):
    """A test-driver file in an allowed directory that is not XML and starts with a secret."""
    settings.KVMWEB_TEST_DRIVER_DIRS = [str(tmp_path)]
    path = tmp_path / "leaky.xml"
    path.write_text(f"{SECRET}\nsecond secret line\n")
    return path


@pytest.mark.parametrize("uri", HOSTILE_URIS)
def test_the_api_refuses_each_hostile_uri_with_a_field_error_and_stores_nothing(api, uri):
    response = api.post("/api/hosts/", {"name": "evil", "uri": uri}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["uri"][0]
    assert not Host.objects.exists() and not Operation.objects.exists()


def test_the_host_form_refuses_a_hostile_uri_on_the_page(logged_in):
    response = logged_in.post(reverse("networks:host_add"), {"name": "evil", "uri": "test:///etc/passwd%00.xml"})
    assert response.status_code == 200
    assert "encoded control" in response.content.decode()
    assert not Host.objects.exists()


def test_sockets_and_keys_are_accepted_only_under_the_configured_directories(settings, tmp_path, admin):
    settings.KVMWEB_URI_PATHS_ALLOWED = [str(tmp_path / "sockets")]
    inside = f"qemu:///system?socket={tmp_path}/sockets/libvirt-sock"
    assert host_services.clean_uri(inside) == inside
    for outside in (f"qemu:///system?socket={tmp_path}/elsewhere/sock", "qemu:///system?socket=/run/libvirt/sock"):
        with pytest.raises(ValidationError, match="KVMWEB_URI_PATHS_ALLOWED"):
            host_services.host_create(name="x", uri=outside, actor=admin, source=AuditSource.WEB)
    assert not Host.objects.exists()


def test_test_driver_files_are_accepted_only_under_the_configured_directories(settings, tmp_path, demo_uri):
    settings.KVMWEB_TEST_DRIVER_DIRS = [str(tmp_path)]
    assert host_services.clean_uri(f"test://{tmp_path}/fleet.xml")
    assert host_services.clean_uri("test:///default") == "test:///default"
    with pytest.raises(ValidationError, match="KVMWEB_TEST_DRIVER_DIRS"):
        host_services.clean_uri(demo_uri)  # the demo is allowed only by the default setting


def test_a_symlink_in_an_allowed_directory_does_not_let_a_test_file_escape(settings, tmp_path):
    settings.KVMWEB_TEST_DRIVER_DIRS = [str(tmp_path)]
    (tmp_path / "fleet.xml").symlink_to("/etc/passwd")
    with pytest.raises(ValidationError, match="KVMWEB_TEST_DRIVER_DIRS"):
        host_services.clean_uri(f"test://{tmp_path}/fleet.xml")


def test_a_file_that_is_not_xml_never_shows_its_content_anywhere(leaky_xml, api, admin, client):
    created = api.post("/api/hosts/", {"name": "leaky", "uri": f"test://{leaky_xml}"}, format="json")
    assert created.status_code == 201
    operation = operation_run(created.json()["operation"]["id"])
    host = Host.objects.get(pk=created.json()["id"])

    assert operation.status == OperationStatus.FAILED and host.status == HostStatus.UNREACHABLE
    assert "Start tag expected" in operation.error and "Start tag expected" in host.last_error  # libvirt's message
    client.force_login(admin)
    shown = {
        "operation.error": operation.error,
        "last_error": host.last_error,
        "audit": " ".join(AuditEvent.objects.values_list("detail", flat=True)),
        "api host": api.get(f"/api/hosts/{host.pk}/").content.decode(),
        "api operation": api.get(f"/api/operations/{operation.pk}/").content.decode(),
        "host page": client.get(reverse("networks:host_detail", args=[host.pk])).content.decode(),
        "hosts page": client.get(reverse("networks:host_list")).content.decode(),
        "operation page": client.get(reverse("networks:operation_detail", args=[operation.pk])).content.decode(),
    }
    for where, text in shown.items():
        assert "SECRET-FIRST-LINE" not in text and "second secret line" not in text, where


def test_an_error_quoting_lines_after_its_first_is_cut_before_it_is_stored(demo_host, admin, monkeypatch):
    # Any step's error may carry what libvirt quoted; stand in for one at the connection step.
    quoted = "fleet.xml:1: Start tag expected\n" + SECRET + "\n^" + "x" * 900

    def failing_connection(host):
        raise HypervisorError(quoted)  # a parser error is permanent: no retry

    monkeypatch.setattr(sync, "host_connection", failing_connection)
    operation = operation_run(host_services.host_request_sync(host=demo_host, actor=admin, source=AuditSource.WEB).pk)
    demo_host.refresh_from_db()
    assert operation.error == demo_host.last_error == "fleet.xml:1: Start tag expected"
    assert "SECRET" not in AuditEvent.objects.get(operation=operation, action="host.sync.failed").detail


def test_a_stored_uri_that_no_longer_validates_fails_its_sync_with_the_reason(db, admin):
    host = Host.objects.create(name="old", uri="qemu+unix:///system?socket=/var/lib/redis/redis.sock")
    operation = operation_run(host_services.host_request_sync(host=host, actor=admin, source=AuditSource.WEB).pk)
    host.refresh_from_db()
    assert operation.status == OperationStatus.FAILED
    assert "KVMWEB_URI_PATHS_ALLOWED" in operation.error and "Internal error" not in operation.error
    assert "KVMWEB_URI_PATHS_ALLOWED" in host.last_error and host.status == HostStatus.UNREACHABLE


NETWORK_OPERATIONS = {
    "stop": lambda network, admin: network_services.network_request_stop(network=network, actor=admin, source="web"),
    "create": lambda network, admin: create_services.network_request_create(
        host=network.host, name="lab", ipv4="10.9.0.1/24", actor=admin, source="web"
    ),
    "update": lambda network, admin: netupdate.network_request_update(
        network=network,
        section="ip-dhcp-host",
        command="add-last",
        actor=admin,
        source="web",
        values={"mac": "52:54:00:77:00:01", "ip": "192.168.122.77", "name": "late"},
    ),
    "bulk import": lambda network, admin: netupdate.network_request_bulk_import(
        network=network,
        csv_text="52:54:00:77:00:02,192.168.122.78,bulk\n",
        strategy="config",
        actor=admin,
        source="web",
    ),
    "restart": lambda network, admin: restart.network_request_restart(network=network, actor=admin, source="web"),
    "rename": lambda network, admin: restart.network_request_rename(
        network=network, new_name="renamed", move_guests=True, actor=admin, source="web"
    ),
    "xml define": lambda network, admin: xmledit.network_request_xml_change(
        network=network,
        new_xml=network.inactive_xml.replace("</network>", "<mtu size='1400'/></network>"),
        apply="define",
        actor=admin,
        source="web",
    ),
    "xml live": lambda network, admin: xmledit.network_request_xml_change(
        network=network,
        new_xml=network.inactive_xml.replace("</dhcp>", "<host mac='52:54:00:77:00:03' ip='192.168.122.79'/></dhcp>"),
        apply="live",
        actor=admin,
        source="web",
    ),
}


@pytest.mark.parametrize("kind", NETWORK_OPERATIONS)
def test_a_network_operation_on_a_host_whose_uri_the_settings_no_longer_allow_fails_with_the_reason(
    demo_host, admin, settings, tmp_path, kind
):
    network = Network.objects.get(host=demo_host, name="default")
    operation = NETWORK_OPERATIONS[kind](network, admin)
    settings.KVMWEB_TEST_DRIVER_DIRS = [str(tmp_path)]  # the deployer narrowed the directories
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.FAILED
    assert "KVMWEB_TEST_DRIVER_DIRS" in finished.error and "Internal error" not in finished.error


def test_a_long_connection_error_is_cut_before_it_is_stored(settings, tmp_path, admin):
    settings.KVMWEB_URI_PATHS_ALLOWED = [str(tmp_path)]
    deep = tmp_path / ("d" * 150) / ("e" * 150)
    host = host_services.host_create(
        name="far", uri=f"qemu:///system?socket={deep}/sock", actor=admin, source=AuditSource.WEB
    )
    operation = run_to_end(host.operations.get().pk)
    host.refresh_from_db()
    assert "Cannot connect" in operation.error and len(operation.error) <= 500
    assert "Cannot connect" in host.last_error and len(host.last_error) <= 500


def test_the_settings_list_absolute_directories_only(monkeypatch):
    monkeypatch.setenv("KVMWEB_URI_PATHS_ALLOWED", "/run/libvirt, /etc/kvmweb")
    assert env_dirs("KVMWEB_URI_PATHS_ALLOWED", "/x") == ["/run/libvirt", "/etc/kvmweb"]
    monkeypatch.setenv("KVMWEB_URI_PATHS_ALLOWED", "/run/libvirt,run/kvmweb")
    with pytest.raises(ImproperlyConfigured, match="run/kvmweb"):
        env_dirs("KVMWEB_URI_PATHS_ALLOWED", "/x")
    monkeypatch.delenv("KVMWEB_URI_PATHS_ALLOWED")
    assert env_dirs("KVMWEB_URI_PATHS_ALLOWED", "/run/libvirt,/var/run/libvirt") == ["/run/libvirt", "/var/run/libvirt"]
