"""kvmweb against a real libvirtd in a private network namespace (and a real guest)."""

import subprocess

import pytest
from django.urls import reverse

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client, xml
from networks.hypervisor import networks as hv
from networks.hypervisor.errors import HypervisorError
from networks.models import Guest, Network
from networks.services import create as create_services
from networks.services import hosts as host_services
from networks.services import networks as network_services
from networks.services.operations import operation_run

from .guests import boot_guest
from .kvmweb_setup import registered_host

pytestmark = pytest.mark.realvirt


@pytest.fixture
def real_host(db, private_libvirtd, private_conn):
    """The private daemon registered in kvmweb and synced."""
    with registered_host(private_libvirtd, "kvm-test", "root-admin") as host_and_admin:
        yield host_and_admin


def _run(operation):
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    return finished


def _link_exists_on_the_machine(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def test_a_nat_network_is_created_synced_shown_and_stopped_on_a_real_daemon(real_host, private_libvirtd, client):
    host, admin = real_host
    assert host.status == "reachable" and host.hypervisor_type == "QEMU" and host.libvirt_version.startswith("9.")

    _run(
        create_services.network_request_create(
            host=host, name="kvsmoke", bridge="kvbr77", ipv4="10.77.0.1/24", actor=admin, source=AuditSource.WEB
        )
    )
    addresses = private_libvirtd.exec_in_ns(["ip", "-br", "addr", "show", "kvbr77"])
    assert "10.77.0.1/24" in addresses
    assert not _link_exists_on_the_machine("kvbr77")  # inside the namespace only

    _run(host_services.host_request_sync(host=host, actor=admin, source=AuditSource.WEB))
    network = Network.objects.get(host=host, name="kvsmoke")
    assert network.active and network.bridge == "kvbr77" and not network.drifted
    assert network.ips.get().dhcp_ranges.get().start == "10.77.0.2"

    client.force_login(admin)
    page = client.get(reverse("networks:network_detail", args=[network.pk])).content.decode()
    assert "10.77.0.1/24" in page and "kvbr77" in page

    _run(network_services.network_request_stop(network=network, actor=admin, source=AuditSource.WEB))
    assert "kvbr77" not in private_libvirtd.exec_in_ns(["ip", "-br", "link"])
    network.refresh_from_db()
    assert not network.active

    _run(network_services.network_request_undefine(network=network, actor=admin, source=AuditSource.WEB))
    conn = private_libvirtd.connect()
    try:
        assert "kvsmoke" not in conn.listNetworks() + conn.listDefinedNetworks()
    finally:
        conn.close()


def test_a_real_guest_on_a_kvmweb_network_is_mirrored_and_named_before_a_stop(
    real_host, private_libvirtd, private_conn, guest_image, guest_log_dir, client
):
    host, admin = real_host
    _run(
        create_services.network_request_create(
            host=host, name="kvguests", bridge="kvbr78", ipv4="10.78.0.1/24", actor=admin, source=AuditSource.WEB
        )
    )
    guest = boot_guest(private_conn, "kvmweb-g1", guest_image, guest_log_dir, network="kvguests")
    ip = guest.wait_for_lease(timeout=90)
    assert ip.startswith("10.78.0.")

    _run(host_services.host_request_sync(host=host, actor=admin, source=AuditSource.WEB))
    mirrored = Guest.objects.get(host=host, name="kvmweb-g1")
    iface = mirrored.interfaces.get()
    assert mirrored.state == "running"
    assert iface.mac == guest.mac and iface.network.name == "kvguests" and iface.target_dev.startswith("vnet")
    network = Network.objects.get(host=host, name="kvguests")
    assert network.leases_known
    assert [(lease.mac, lease.address) for lease in network.dhcp_leases.all()] == [(guest.mac, ip)]

    client.force_login(admin)
    page = client.get(reverse("networks:network_stop", args=[network.pk])).content.decode()
    assert "will lose connectivity" in page and "kvmweb-g1" in page and guest.mac in page


def test_a_network_that_fails_to_start_leaves_no_definition_behind(private_libvirtd, private_conn):
    # A hostdev pool on a PF that has no VFs defines fine but cannot start (measured here).
    pool = xml.parse(
        "<network><name>vfpool</name><forward mode='hostdev' managed='yes'><pf dev='lo'/></forward></network>"
    )
    conn = client.connect(private_libvirtd.uri, uri_paths_allowed=[str(private_libvirtd.socket_dir)])
    try:
        before = sorted(conn.listNetworks() + conn.listDefinedNetworks())
        with pytest.raises(HypervisorError):
            hv.define_network(conn, xml.to_string(pool), start=True, autostart=False)
        assert sorted(conn.listNetworks() + conn.listDefinedNetworks()) == before
    finally:
        client.disconnect(private_libvirtd.uri)
