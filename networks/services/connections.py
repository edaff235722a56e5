"""Opening a host's libvirt connection under the directories the deployer allows.

The hypervisor layer has no settings of its own: every URI check and every connection
made by the services goes through here, so KVMWEB_TEST_DRIVER_DIRS and
KVMWEB_URI_PATHS_ALLOWED apply everywhere alike.

A host's own host worker (scripts/host-worker.sh, on the hypervisor) does not use the
host's stored URI, which is how the central workers and the web pages reach the host from
afar (qemu+ssh://, qemu+tls://): it opens the hypervisor's local daemon,
KVMWEB_HOST_WORKER_URI (default qemu:///system), so the firewall it changes and the libvirt
it reads are the same machine's. That URI is checked by the same rules as a host's.
"""

from __future__ import annotations

from django.conf import settings

from networks.hypervisor import client
from networks.models import Host


def uri_rules() -> dict:
    """The keyword arguments of client.validate_uri / client.connect, from the settings."""
    return {
        "test_driver_dirs": tuple(settings.KVMWEB_TEST_DRIVER_DIRS),
        "uri_paths_allowed": tuple(settings.KVMWEB_URI_PATHS_ALLOWED),
    }


def validate_host_uri(uri: str) -> str:
    """The URI if kvmweb accepts it under the settings; InvalidUri otherwise."""
    return client.validate_uri(uri, **uri_rules())


def in_host_worker(host: Host) -> bool:
    """Whether this process is the host's own worker (started by scripts/host-worker.sh)."""
    return bool(settings.KVMWEB_HOST_WORKER) and host.name == settings.KVMWEB_HOST_WORKER


def connection_uri(host: Host) -> str:
    """The URI this process reaches `host` by: the local daemon in the host's own host
    worker, the host's stored URI everywhere else."""
    return settings.KVMWEB_HOST_WORKER_URI if in_host_worker(host) else host.uri


def host_connection(host: Host):
    """The worker's connection to `host` (see connection_uri). A URI that the rules no longer
    accept raises InvalidUri (a permanent HypervisorError), which fails the operation."""
    return client.connect(connection_uri(host), **uri_rules(), call_timeout=settings.KVMWEB_HOST_CALL_TIMEOUT)
