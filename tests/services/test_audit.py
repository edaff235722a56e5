"""The audit log is an honest record: the database refuses to rewrite it, and every event
is chained by hash to the one before it, so what was changed or removed behind the
database's back is found by `manage.py verifyaudit`."""

import importlib
import threading
import time
from contextlib import contextmanager
from io import StringIO

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from networks import selectors
from networks.choices import AuditSource
from networks.models import AuditEvent, Host, Operation
from networks.services import hosts as host_services
from networks.services.audit import audit_record, client_address
from tests.factories import UserFactory

TABLE = "networks_auditevent"
SYSTEM = AuditSource.SYSTEM


def _raw(sql: str, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _events(count: int, **fields) -> list[AuditEvent]:
    return [
        audit_record(action="test.event", source=SYSTEM, object_type="test", object_name=f"event {n}", **fields)
        for n in range(count)
    ]


@contextmanager
def _without_triggers():
    """Lift the append-only triggers, as someone with write access to the database could.
    The test's transaction brings them back."""
    if connection.vendor == "postgresql":
        _raw(f"DROP TRIGGER {TABLE}_append_only ON {TABLE}")
    else:
        _raw(f"DROP TRIGGER {TABLE}_no_update")
        _raw(f"DROP TRIGGER {TABLE}_no_delete")
    yield


def _hash_unhashed_events():
    """What migration 0009 does to the events of an older database."""
    importlib.import_module("networks.migrations.0009_audit_append_only").hash_existing_events(apps, None)


def _verify() -> str:
    out = StringIO()
    call_command("verifyaudit", stdout=out)
    return out.getvalue()


# ---------------------------------------------------------------- append-only in the database


@pytest.mark.parametrize(
    "sql",
    [
        f"UPDATE {TABLE} SET message = 'rewritten' WHERE id = %s",
        f"UPDATE {TABLE} SET chain_hash = '' WHERE id = %s",
        f"UPDATE {TABLE} SET host_id = NULL WHERE id = %s",
        f"DELETE FROM {TABLE} WHERE id = %s",
    ],
    ids=["message", "chain_hash", "host_id", "delete"],
)
def test_the_database_refuses_to_change_or_delete_an_event(db, sql):
    event = _events(1, message="as written")[0]
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _raw(sql, [event.pk])
    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.message, stored.chain_hash) == ("as written", event.chain_hash)


def test_the_orm_cannot_rewrite_events_in_bulk_either(db):
    _events(2)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.update(message="rewritten")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.filter(message="rewritten").count() == 0 and AuditEvent.objects.count() == 2


def test_removing_a_host_and_its_operations_keeps_their_events_as_written(demo_host, admin):
    host_pk = demo_host.pk
    events = list(AuditEvent.objects.filter(host_id=host_pk).order_by("id").values())
    assert {e["action"] for e in events} >= {"host.create", "host.sync.requested"}
    assert all(e["operation_id"] for e in events if e["action"].startswith("host.sync"))
    host_services.host_delete(host=demo_host, actor=admin, source=AuditSource.WEB)
    Operation.objects.filter(pk__in=[e["operation_id"] for e in events if e["operation_id"]]).delete()
    assert not Host.objects.filter(pk=host_pk).exists()
    after = list(AuditEvent.objects.filter(pk__in=[e["id"] for e in events]).order_by("id").values())
    assert after == events  # host, operation, names: nothing nulled
    found = selectors.audit_list(host_name="demo").values_list("action", flat=True)
    assert {"host.create", "host.sync.requested", "host.delete"} <= set(found)
    assert "Audit chain intact" in _verify()


def test_removing_a_user_keeps_their_events_as_written(db):
    bob = UserFactory(username="bob")
    event = audit_record(action="test.event", source=AuditSource.WEB, object_type="test", actor=bob)
    get_user_model().objects.filter(pk=bob.pk).delete()
    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.actor_id, stored.actor_name) == (bob.pk, "bob")


def test_the_triggers_survive_every_migration(db):
    """On SQLite, a migration that rebuilds the audit table drops its triggers."""
    if connection.vendor == "postgresql":
        query = f"SELECT tgname FROM pg_trigger WHERE tgrelid = '{TABLE}'::regclass AND NOT tgisinternal"
    else:
        query = f"SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = '{TABLE}'"
    with connection.cursor() as cursor:
        cursor.execute(query)
        names = {row[0] for row in cursor.fetchall()}
    expected = (
        {f"{TABLE}_append_only"} if connection.vendor == "postgresql" else {f"{TABLE}_no_update", f"{TABLE}_no_delete"}
    )
    assert names == expected


# ---------------------------------------------------------------- the hash chain


def test_an_untouched_chain_verifies(db):
    _events(5)
    out = _verify()
    assert f"Audit chain intact: {AuditEvent.objects.count()} events checked." in out
    assert AuditEvent.objects.count() == 5


# Every column the chain covers, with a raw SQL value different from what _events wrote.
TAMPERED_COLUMNS = [
    ("created_at", "'2001-01-01 00:00:00'"),
    ("actor_name", "'mallory'"),
    ("source", "'api'"),
    ("action", "'network.start.succeeded'"),
    ("host_name", "'elsewhere'"),
    ("object_type", "'network'"),
    ("object_name", "'another'"),
    ("message", "'another reason'"),
    ("operation_id", "4242"),
    ("before_xml", "'<network/>'"),
    ("after_xml", "'<network/>'"),
    ("detail", "'all fine'"),
    ("client_address", "'198.51.100.7'"),
    ("chain_hash", "'" + "0" * 64 + "'"),
]


@pytest.mark.parametrize(("column", "value"), TAMPERED_COLUMNS, ids=[c for c, _ in TAMPERED_COLUMNS])
def test_verifyaudit_names_the_event_whose_content_was_changed(db, column, value):
    first, middle, last = _events(3, message="why", detail="libvirt said no")
    with _without_triggers():
        _raw(f"UPDATE {TABLE} SET {column} = {value} WHERE id = %s", [middle.pk])
        with pytest.raises(CommandError, match=f"broken at event #{middle.pk}: it was altered"):
            _verify()


def test_verifyaudit_names_the_event_after_a_removed_one(db):
    first, middle, last = _events(3)
    with _without_triggers():
        _raw(f"DELETE FROM {TABLE} WHERE id = %s", [middle.pk])
    with pytest.raises(CommandError, match=f"broken at event #{last.pk}: .* between #{first.pk} and #{last.pk}"):
        _verify()


def test_verifyaudit_finds_a_rewritten_first_event(db):
    first, second = _events(2)
    with _without_triggers():
        _raw(f"UPDATE {TABLE} SET object_name = 'forged' WHERE id = %s", [first.pk])
    with pytest.raises(CommandError, match=f"broken at event #{first.pk}: .* the start of the log"):
        _verify()


def test_an_event_inserted_behind_the_apps_back_breaks_the_chain(db):
    _events(1)
    _raw(
        f"INSERT INTO {TABLE} (created_at, actor_name, source, action, host_name, object_type, object_name, message,"
        " before_xml, after_xml, detail, chain_hash) VALUES (%s, 'alice', 'web', 'host.delete', '', 'host', 'x', '',"
        " '', '', '', '')",
        ["2030-01-01 00:00:00"],
    )
    forged = AuditEvent.objects.order_by("-id").first()
    with pytest.raises(CommandError, match=f"broken at event #{forged.pk}"):
        _verify()


def test_addresses_and_unusual_text_verify_as_stored(db):
    """What the chain hashes is what the database gives back: IPv6 spelled in capitals, an
    IPv4-mapped address, non-ASCII text, a time on a whole second."""
    for address in ["2001:DB8::1", "::ffff:192.0.2.1", "192.0.2.1", None]:
        token = client_address.set(address)
        try:
            _events(1, message='réseau ✓ "quoted" \\ back', before_xml="<a>\n\t</a>")
        finally:
            client_address.reset(token)
    assert "Audit chain intact: 4 events checked." in _verify()


def test_events_written_before_hashes_existed_are_chained_by_the_migration(db):
    """A database from before migration 0009 holds events without a hash; the migration
    chains them in id order (its function is run here on rows written by raw SQL)."""
    with _without_triggers():
        for name in ("old one", "old two", "old three"):
            _raw(
                f"INSERT INTO {TABLE} (created_at, actor_name, source, action, host_name, object_type, object_name,"
                " message, before_xml, after_xml, detail, chain_hash) VALUES (%s, 'alice', 'web', 'host.create', 'h',"
                " 'host', %s, '', '', '', '', '')",
                ["2025-06-01 12:00:00", name],
            )
        with pytest.raises(CommandError, match="broken at event"):
            _verify()
        _hash_unhashed_events()
    assert "Audit chain intact: 3 events checked." in _verify()
    new = _events(1)[0]  # and the app's appends continue the chain
    assert "Audit chain intact: 4 events checked." in _verify() and new.pk == AuditEvent.objects.latest("id").pk


def test_a_few_thousand_events_verify_in_seconds(db):
    AuditEvent.objects.bulk_create(  # not via audit_record: speed; hashed by the migration's function
        AuditEvent(action="bulk", source=SYSTEM, object_type="test", object_name=str(n)) for n in range(5000)
    )
    with _without_triggers():
        _hash_unhashed_events()
    started = time.monotonic()
    assert "5000 events checked" in _verify()
    assert time.monotonic() - started < 5


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_do_not_fork_the_chain():
    """Eight threads, each with its own database connection, append at the same time."""
    errors = []
    start = threading.Barrier(8)

    def write():
        try:
            start.wait()
            _events(15)
        except Exception as error:  # reported below: a thread's exception is otherwise lost
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert "Audit chain intact: 120 events checked." in _verify()
