"""Setting up kvmweb against the private daemon: shared by the real-daemon tests (Django needed)."""

from __future__ import annotations

import contextlib

from django.test import override_settings

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client, xml
from networks.hypervisor.types import DhcpRange, IpConfig
from networks.models import Host
from networks.services import hosts as host_services
from networks.services.operations import operation_run
from tests.factories import UserFactory

from .guests import boot_guest


def nat_network_xml(name: str, bridge: str, subnet: str) -> str:
    """A NAT network on `subnet`.0/24 (e.g. "10.82.0"), gateway .1, DHCP .100-.150, STP off."""
    return xml.build_network_xml(
        name=name,
        bridge=bridge,
        ips=(IpConfig(f"{subnet}.1", 24, "ipv4", (DhcpRange(f"{subnet}.100", f"{subnet}.150"),)),),
    )


@contextlib.contextmanager
def guests_on_new_network(daemon, image, network_xml: str, names: list[str]):
    """Define and start the network, boot the guests on it and wait for their leases;
    afterwards leave the daemon empty."""
    conn = daemon.connect()
    network = conn.networkDefineXML(network_xml)
    network.create()
    log_dir = daemon.scratch / "guests" / network.name()
    booted = [boot_guest(conn, name, image, log_dir, network=network.name()) for name in names]
    try:
        for guest in booted:
            guest.wait_for_lease(timeout=90)
        yield booted
    finally:
        conn.close()
        daemon.reset()


@contextlib.contextmanager
def registered_host(daemon, name: str, admin_name: str = "netops"):
    """The daemon registered in kvmweb and synced: yields (host, admin). Inside, kvmweb may
    open the daemon's socket (and nothing else of its scratch directory)."""
    with override_settings(KVMWEB_URI_PATHS_ALLOWED=[str(daemon.socket_dir)]):
        admin = UserFactory(username=admin_name)
        host = host_services.host_create(name=name, uri=daemon.uri, actor=admin, source=AuditSource.WEB)
        assert operation_run(host.operations.get().pk).status == OperationStatus.SUCCEEDED
        try:
            yield Host.objects.get(pk=host.pk), admin
        finally:
            client.disconnect(daemon.uri)


def run_ok(operation):
    """Run an operation as the worker would; it must succeed."""
    finished = operation_run(operation.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    return finished
