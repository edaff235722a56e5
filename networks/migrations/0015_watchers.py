# The event watchers' marks on a host (networks.services.watch).
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("networks", "0014_search")]

    operations = [
        migrations.AddField(
            model_name="host",
            name="watched_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="host",
            name="last_event_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="host",
            name="event_lag_seconds",
            field=models.FloatField(blank=True, null=True),
        ),
    ]
