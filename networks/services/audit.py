"""Writing audit events. Every service that changes something calls `audit_record`.

The log is a hash chain: each event's `chain_hash` is SHA-256 over the previous event's
`chain_hash` and a canonical serialisation of the event itself, so altering or removing a
past event breaks every hash after it (`manage.py verifyaudit` says where). Appends are
serialised (one writer at a time across every process) so the chain never forks, and the
database refuses any UPDATE or DELETE of the table (migration 0009).
"""

from __future__ import annotations

import contextvars
import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

from networks.choices import AuditSource
from networks.models import AuditEvent, Host, Operation

# The client address of the request being served, set by networks.middleware for the
# duration of a request so that every event it records says where it came from.
client_address: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_address", default=None)


@dataclass
class RequestAudit:
    """What the audit log already knows about the request being served."""

    denial_recorded: bool = False  # an `<action>.denied` event already says why it was refused
    exception_reason: str = ""  # the text of the exception the view raised, if any


# Set per request by networks.middleware; a mutable holder, so that a flag set while the
# view runs (even in a copied context) is seen by the middleware afterwards.
request_audit: contextvars.ContextVar[RequestAudit | None] = contextvars.ContextVar("request_audit", default=None)


def note_denial_recorded() -> None:
    """The refusal of this request has its own `<action>.denied` event: record no other."""
    state = request_audit.get()
    if state is not None:
        state.denial_recorded = True


# The fields the chain covers, in the order `event_digest` reads them. Every field that
# says what happened is here; `chain_hash` itself is not, and the foreign keys appear only
# through their name copies (and the operation's id), which survive the rows' removal.
# The chain format; migration 0009 keeps a frozen copy to hash events older than it.
CHAIN_FIELDS = (
    "id",
    "created_at",
    "actor_name",
    "source",
    "action",
    "host_name",
    "object_type",
    "object_name",
    "message",
    "operation_id",
    "before_xml",
    "after_xml",
    "detail",
    "client_address",
)

# pg_advisory_xact_lock key that serialises appends to the chain ("kvmweb" + 1).
CHAIN_LOCK_KEY = 0x6B766D776562_0001


def _canonical(value: Any) -> Any:
    if hasattr(value, "astimezone"):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


def event_digest(previous_hash: str, fields: dict[str, Any]) -> str:
    """The chain hash of an event with these `CHAIN_FIELDS` values after `previous_hash`."""
    canonical = {name: _canonical(fields[name]) for name in CHAIN_FIELDS}
    payload = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{previous_hash}\n{payload}".encode()).hexdigest()


def actor_name(actor) -> str:
    return actor.get_username() if actor is not None and actor.is_authenticated else ""


def _lock_chain() -> None:
    """Make this transaction the only one appending until it ends (commit or rollback)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])
    elif connection.vendor == "sqlite":
        # BEGIN IMMEDIATE takes the database's write lock at the start of the transaction,
        # so the last hash read below cannot change before this transaction commits.
        if connection.settings_dict.get("OPTIONS", {}).get("transaction_mode") != "IMMEDIATE":
            raise ImproperlyConfigured("The audit chain needs SQLite's transaction_mode IMMEDIATE.")
    else:
        raise ImproperlyConfigured(f"The audit chain does not know how to lock on {connection.vendor}.")


def _next_id() -> int:
    """The id the next event gets; called under the chain lock."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id'))", [AuditEvent._meta.db_table])
            return cursor.fetchone()[0]
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {connection.ops.quote_name(AuditEvent._meta.db_table)}")
        return cursor.fetchone()[0]


def _last_hash() -> str:
    last = AuditEvent.objects.order_by("-id").values_list("chain_hash", flat=True).first()
    return last or ""


def _append(event: AuditEvent) -> AuditEvent:
    """Give `event` its id, time and chain hash and insert it, all under the chain lock.

    The row is complete when it is inserted, so the database can refuse every UPDATE.
    """
    with transaction.atomic():
        _lock_chain()
        event.id = _next_id()
        event.created_at = timezone.now()
        # Hash what the database will hold: the address as the field stores it.
        event.client_address = AuditEvent._meta.get_field("client_address").get_prep_value(event.client_address)
        event.chain_hash = event_digest(_last_hash(), {name: getattr(event, name) for name in CHAIN_FIELDS})
        event.save(force_insert=True)
    return event


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
    event = AuditEvent(
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
        client_address=client_address.get() or None,
    )
    return _append(event)


@dataclass(frozen=True)
class ChainReport:
    checked: int
    broken_at: int | None = None  # id of the first event whose hash does not hold
    after: int | None = None  # id of the intact event before it
    head: str = ""  # the last event's hash, to keep elsewhere

    @property
    def intact(self) -> bool:
        return self.broken_at is None


def audit_verify() -> ChainReport:
    """Recompute the chain from the first event; stop at the first one that does not hold."""
    previous_hash, previous_id, checked = "", None, 0
    rows = AuditEvent.objects.order_by("id").values(*CHAIN_FIELDS, "chain_hash").iterator(chunk_size=2000)
    for row in rows:
        if row["chain_hash"] != event_digest(previous_hash, row):
            return ChainReport(checked=checked, broken_at=row["id"], after=previous_id, head=previous_hash)
        previous_hash, previous_id, checked = row["chain_hash"], row["id"], checked + 1
    return ChainReport(checked=checked, head=previous_hash)


# ---------------------------------------------------------------- export

EXPORT_FIELDS = (*CHAIN_FIELDS, "chain_hash")
EXPORT_FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}
# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...)).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class _Line:
    """A file-like sink that hands back what csv.writer writes, one row at a time."""

    def write(self, text: str) -> str:
        return text


def _csv_cell(value: Any) -> Any:
    value = _canonical(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def _rows(events):
    return events.order_by("id").values_list(*EXPORT_FIELDS).iterator(chunk_size=2000)


def audit_export_csv(events) -> Iterator[str]:
    """`events` as CSV, oldest first, one row at a time; cells are made inert for spreadsheets."""
    writer = csv.writer(_Line())
    yield writer.writerow(EXPORT_FIELDS)
    for row in _rows(events):
        yield writer.writerow([_csv_cell(value) for value in row])


def audit_export_jsonl(events) -> Iterator[str]:
    """`events` as JSON lines, oldest first: the exact values, with the chain hash to check them."""
    for row in _rows(events):
        record = {name: _canonical(value) for name, value in zip(EXPORT_FIELDS, row, strict=True)}
        yield json.dumps(record, ensure_ascii=False) + "\n"


def audit_export(events, export_format: str) -> Iterator[str]:
    if export_format == "csv":
        return audit_export_csv(events)
    if export_format == "jsonl":
        return audit_export_jsonl(events)
    raise ValueError(f"Unknown export format {export_format!r}: choose csv or jsonl.")
