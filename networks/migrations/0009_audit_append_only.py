"""Audit events become append-only in the database and chained by hash.

1. The actor, host and operation keys stop being database foreign keys (DO_NOTHING, no
   constraint): with SET_NULL, removing a user, host or operation made Django UPDATE its
   events, which the trigger below refuses, and the events lost who and where.
2. `created_at` is set by audit_record before the insert, since the chain hash covers it;
   `host_name` is indexed, the audit log's host filter (it finds removed hosts too).
3. Events written before this migration get their chain hashes, in id order.
4. Triggers refuse every UPDATE and DELETE of the table (PostgreSQL: a plpgsql function
   and a BEFORE UPDATE OR DELETE row trigger; SQLite: BEFORE UPDATE / BEFORE DELETE
   triggers with RAISE(ABORT)).

On SQLite any later migration that rebuilds this table drops its triggers: such a
migration must create them again (tests/services/test_audit.py checks they are there).
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

import hashlib
import json
from datetime import UTC

TABLE = "networks_auditevent"

POSTGRESQL_CREATE = [
    f"""
    CREATE FUNCTION {TABLE}_append_only() RETURNS trigger LANGUAGE plpgsql AS $body$
    BEGIN
        RAISE EXCEPTION USING
            MESSAGE = 'audit events are append-only: ' || TG_OP || ' refused',
            ERRCODE = 'integrity_constraint_violation';
    END;
    $body$
    """,
    f"""
    CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION {TABLE}_append_only()
    """,
]
POSTGRESQL_DROP = [
    f"DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}",
    f"DROP FUNCTION IF EXISTS {TABLE}_append_only()",
]
SQLITE_CREATE = [
    f"""
    CREATE TRIGGER {TABLE}_no_update BEFORE UPDATE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only: UPDATE refused'); END
    """,
    f"""
    CREATE TRIGGER {TABLE}_no_delete BEFORE DELETE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only: DELETE refused'); END
    """,
]
SQLITE_DROP = [f"DROP TRIGGER IF EXISTS {TABLE}_no_update", f"DROP TRIGGER IF EXISTS {TABLE}_no_delete"]

STATEMENTS = {"postgresql": (POSTGRESQL_CREATE, POSTGRESQL_DROP), "sqlite": (SQLITE_CREATE, SQLITE_DROP)}


def _statements(schema_editor, which: int) -> list[str]:
    vendor = schema_editor.connection.vendor
    if vendor not in STATEMENTS:
        raise RuntimeError(f"kvmweb's audit log has no append-only trigger for {vendor}")
    return STATEMENTS[vendor][which]


def create_triggers(apps, schema_editor):
    for sql in _statements(schema_editor, 0):
        schema_editor.execute(sql, params=None)


def drop_triggers(apps, schema_editor):
    for sql in _statements(schema_editor, 1):
        schema_editor.execute(sql, params=None)


# The chain format as this migration wrote it, frozen here (a migration must not change when the
# app's code does). networks/services/audit.py holds the same format; the tests verify that the
# hashes written here pass `verifyaudit`.
CHAIN_FIELDS = ("id", "created_at", "actor_name", "source", "action", "host_name", "object_type", "object_name",
                "message", "operation_id", "before_xml", "after_xml", "detail", "client_address")  # fmt: skip


def event_digest(previous_hash: str, fields: dict) -> str:
    def canonical(value):
        return value.astimezone(UTC).isoformat(timespec="microseconds") if hasattr(value, "astimezone") else value

    payload = json.dumps({name: canonical(fields[name]) for name in CHAIN_FIELDS}, sort_keys=True,
                         separators=(",", ":"), ensure_ascii=False)  # fmt: skip
    return hashlib.sha256(f"{previous_hash}\n{payload}".encode()).hexdigest()


def hash_existing_events(apps, schema_editor):
    """Chain the events written before hashes existed, oldest first (before the triggers)."""
    AuditEvent = apps.get_model("networks", "AuditEvent")
    previous = ""
    rows = AuditEvent.objects.order_by("id").values(*CHAIN_FIELDS).iterator(chunk_size=2000)
    for row in rows:
        previous = event_digest(previous, row)
        AuditEvent.objects.filter(pk=row["id"]).update(chain_hash=previous)


class Migration(migrations.Migration):
    dependencies = [
        ("networks", "0008_roles_tokens_audit_fields"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="actor",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="host",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                to="networks.host",
            ),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="operation",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="audit_events",
                to="networks.operation",
            ),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="created_at",
            field=models.DateTimeField(db_index=True, default=django.utils.timezone.now, editable=False),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="host_name",
            field=models.CharField(blank=True, db_index=True, max_length=100),
        ),
        migrations.RunPython(hash_existing_events, migrations.RunPython.noop),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
