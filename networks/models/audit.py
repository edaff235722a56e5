from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from networks.choices import AuditSource


class AppendOnlyError(Exception):
    """Raised when code tries to change or delete an audit event."""


class AuditEvent(models.Model):
    """Who asked for what change, when, why, and how it ended. Append-only.

    `action` is a dotted code such as `network.start.succeeded`. The names of the actor
    and the host are copied, and the foreign keys are plain columns without a database
    constraint (DO_NOTHING): removing a user, host or operation leaves its events exactly
    as written (the database rejects any UPDATE or DELETE of this table, migration 0009).
    An id whose row is gone stays in the event; read the name copies.
    """

    # Set by audit_record before the insert (not auto_now_add): the chain hash covers it.
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False
    )
    actor_name = models.CharField(max_length=150, blank=True)
    source = models.CharField(max_length=10, choices=AuditSource.choices)
    action = models.CharField(max_length=100, db_index=True)
    host = models.ForeignKey("networks.Host", null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False)
    host_name = models.CharField(max_length=100, blank=True, db_index=True)
    object_type = models.CharField(max_length=50)
    object_name = models.CharField(max_length=255, blank=True)
    message = models.CharField(max_length=500, blank=True)
    operation = models.ForeignKey(
        "networks.Operation",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="audit_events",
    )
    before_xml = models.TextField(blank=True)
    after_xml = models.TextField(blank=True)
    detail = models.TextField(blank=True, help_text="Outcome details, e.g. libvirt's error")
    client_address = models.GenericIPAddressField(null=True, blank=True, help_text="Where the request came from")
    chain_hash = models.CharField(
        max_length=64, blank=True, help_text="Hash of this event's content chained to the previous event's"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        # The list's keyset pagination walks this index newest first
        indexes = [models.Index(fields=["created_at", "id"], name="audit_created_id")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name or '-'} {self.action} {self.object_name}"

    # Append-only is an invariant of the record itself, so it is enforced here and not
    # only in the services: nothing in the app may rewrite history.
    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Audit events cannot be changed.")
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("networks:audit_detail", args=[self.pk])

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit events cannot be deleted.")
