"""Adding, removing and syncing hosts."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from networks.choices import AuditSource
from networks.hypervisor.errors import InvalidUri
from networks.models import Host, Operation

from .audit import audit_record
from .connections import validate_host_uri
from .operations import host_sync_request
from .permissions import authorize


def clean_uri(uri: str) -> str:
    """The URI if kvmweb accepts it; a ValidationError on `uri` otherwise."""
    try:
        return validate_host_uri(uri)
    except InvalidUri as error:
        raise ValidationError({"uri": str(error)}) from None


def host_create(*, name: str, uri: str, actor, source: str, queue: str = "", sync: bool = True) -> Host:
    """Register a host and, by default, request its first sync."""
    authorize(actor=actor, action="host.create", source=source, object_name=str(name)[:100])
    host = Host(name=name, uri=clean_uri(uri), queue=queue)
    host.full_clean()
    with transaction.atomic():
        host.save()
        audit_record(action="host.create", source=source, actor=actor, host=host, object_type="host", object_name=name)
        if sync:
            host_request_sync(host=host, actor=actor, source=source)
    return host


def host_delete(*, host: Host, actor, source: str) -> None:
    """Forget a host and its mirror. Nothing on the hypervisor changes."""
    authorize(actor=actor, action="host.delete", host=host, source=source)
    with transaction.atomic():
        audit_record(
            action="host.delete", source=source, actor=actor, host=host, object_type="host", object_name=host.name
        )
        host.delete()


def host_request_sync(*, host: Host, actor, source: str, message: str = "") -> Operation:
    """Request a sync, or return the one already waiting or running for this host."""
    authorize(actor=actor, action="host.sync", host=host, source=source)
    return host_sync_request(host=host, actor=actor, source=source, message=message)


def hosts_sync_all() -> None:
    """Periodic: request a sync of every host as the system."""
    for host in Host.objects.all():
        host_request_sync(host=host, actor=None, source=AuditSource.SYSTEM)
