"""`flush` that can empty the append-only audit table too.

Django's flush empties every table. On PostgreSQL it uses TRUNCATE, which row triggers do
not see; on SQLite it runs DELETE, which the audit table's triggers refuse. Whoever runs
flush means to erase everything, audit log included (the test suite flushes between
transactional tests), so on SQLite the triggers are lifted for the flush and restored in
the same transaction.
"""

from django.core.management.commands import flush
from django.db import DEFAULT_DB_ALIAS, connections, transaction

AUDIT_TABLE = "networks_auditevent"


class Command(flush.Command):
    help = flush.Command.help + " The audit log is erased as well."

    def handle(self, **options):
        database = options.get("database") or DEFAULT_DB_ALIAS
        connection = connections[database]
        if connection.vendor != "sqlite":
            return super().handle(**options)
        with transaction.atomic(using=database):
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [AUDIT_TABLE]
                )
                triggers = cursor.fetchall()
                for name, _ in triggers:
                    cursor.execute(f"DROP TRIGGER {connection.ops.quote_name(name)}")
            super().handle(**options)
            with connection.cursor() as cursor:
                for _, sql in triggers:
                    cursor.execute(sql)
