"""Networks on a host bridge (<forward mode='bridge'>) and guests with <interface type='bridge'>."""

import subprocess

import pytest

from networks.choices import AuditSource, OperationStatus
from networks.models import Guest, Network
from networks.services import create as create_services
from networks.services import hosts as host_services
from networks.services.operations import operation_run
from networks.services.restart import network_request_restart

from .connectivity import Pinger
from .guests import boot_guest
from .kvmweb_setup import registered_host

pytestmark = pytest.mark.realvirt
BRIDGE = "kvhostbr0"


@pytest.fixture
def host_bridge(private_libvirtd, tmp_path):
    """A Linux bridge in the namespace with its own DHCP server, as an admin's br0 with a LAN behind it."""
    for argv in (
        ["ip", "link", "add", BRIDGE, "type", "bridge", "stp_state", "0"],
        ["ip", "addr", "add", "10.85.0.1/24", "dev", BRIDGE],
        ["ip", "link", "set", BRIDGE, "up"],
    ):
        private_libvirtd.exec_in_ns(argv)
    dhcp = subprocess.Popen(
        ["ip", "netns", "exec", private_libvirtd.netns, "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
         f"--interface={BRIDGE}", "--bind-interfaces", "--dhcp-range=10.85.0.100,10.85.0.150,1h",
         f"--dhcp-leasefile={tmp_path / 'leases'}", f"--pid-file={tmp_path / 'pid'}", "--port=0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield BRIDGE
    finally:
        dhcp.terminate()
        dhcp.wait(timeout=10)
        private_libvirtd.run_in_netns(["ip", "link", "del", BRIDGE])


def test_guests_on_a_host_bridge_network_and_a_bridge_interface_stay_connected_across_a_restart(
    db, private_libvirtd, private_conn, guest_image, guest_log_dir, host_bridge
):
    with registered_host(private_libvirtd, "kvm-br", "lanadmin") as (host, admin):
        _check_bridge_networks(host, admin, private_libvirtd, private_conn, guest_image, guest_log_dir)


def _check_bridge_networks(host, admin, private_libvirtd, private_conn, guest_image, guest_log_dir):
    create = create_services.network_request_create(
        host=host, name="lan", mode="bridge", bridge=BRIDGE, actor=admin, source=AuditSource.WEB
    )
    assert operation_run(create.pk).status == OperationStatus.SUCCEEDED

    on_network = boot_guest(private_conn, "br-net", guest_image, guest_log_dir, network="lan")
    on_bridge = boot_guest(private_conn, "br-dev", guest_image, guest_log_dir, bridge=BRIDGE)
    for guest in (on_network, on_bridge):
        assert guest.wait_for_lease(timeout=90).startswith("10.85.0.")

    operation_run(host_services.host_request_sync(host=host, actor=admin, source=AuditSource.WEB).pk)
    network = Network.objects.get(host=host, name="lan")
    assert network.forward_mode == "bridge" and network.bridge == BRIDGE
    bridged = Guest.objects.get(host=host, name="br-dev").interfaces.get()
    assert (bridged.type, bridged.source, bridged.network) == ("bridge", BRIDGE, None)
    assert Guest.objects.get(host=host, name="br-net").interfaces.get().network == network

    pingers = [Pinger(private_libvirtd.netns, g.ip) for g in (on_network, on_bridge)]
    try:
        assert all(p.wait_for_reply(10) for p in pingers)
        finished = operation_run(network_request_restart(network=network, actor=admin, source=AuditSource.WEB).pk)
        assert finished.status == OperationStatus.SUCCEEDED, finished.error
        assert all(p.wait_for_reply(5) for p in pingers)
    finally:
        for p in pingers:
            p.stop()
    assert [i["domain"] for i in finished.result["interfaces"]] == ["br-net"]
