"""Writing audit events. Every service that changes something calls `audit_record`."""

from __future__ import annotations

import contextvars

from networks.choices import AuditSource
from networks.models import AuditEvent, Host, Operation

# The client address of the request being served, set by networks.middleware for the
# duration of a request so that every event it records says where it came from.
client_address: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_address", default=None)


def actor_name(actor) -> str:
    return actor.get_username() if actor is not None and actor.is_authenticated else ""


def audit_record(
    *,
    action: str,
    source: str,
    object_type: str,
    object_name: str = "",
    actor=None,
    host: Host | None = None,
    message: str = "",
    operation: Operation | None = None,
    before_xml: str = "",
    after_xml: str = "",
    detail: str = "",
) -> AuditEvent:
    """Append one audit event."""
    if source not in AuditSource.values:
        raise ValueError(f"Unknown audit source {source!r}")
    return AuditEvent.objects.create(
        action=action,
        source=source,
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_name=actor_name(actor),
        host=host,
        host_name=host.name if host else "",
        object_type=object_type,
        object_name=object_name,
        message=message[:500],
        operation=operation,
        before_xml=before_xml,
        after_xml=after_xml,
        detail=detail,
        client_address=client_address.get(),
    )
