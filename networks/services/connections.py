"""Opening a host's libvirt connection under the directories the deployer allows.

The hypervisor layer has no settings of its own: every URI check and every connection
made by the services goes through here, so KVMWEB_TEST_DRIVER_DIRS and
KVMWEB_URI_PATHS_ALLOWED apply everywhere alike.
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


def host_connection(host: Host):
    """The worker's connection to `host`. A stored URI that the rules no longer accept
    raises InvalidUri (a permanent HypervisorError), which fails the operation."""
    return client.connect(host.uri, **uri_rules(), call_timeout=settings.KVMWEB_HOST_CALL_TIMEOUT)
