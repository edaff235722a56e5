"""Indexes of the list pages: the audit log and operations are paged by (created_at, id)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("networks", "0012_passthrough")]

    operations = [
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["created_at", "id"], name="audit_created_id"),
        ),
        migrations.AddIndex(
            model_name="operation",
            index=models.Index(fields=["created_at", "id"], name="operation_created_id"),
        ),
    ]
