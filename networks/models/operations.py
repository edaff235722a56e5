from django.conf import settings
from django.db import models
from django.urls import reverse

from networks.choices import ACTIVE_STATUSES, TERMINAL_STATUSES, AuditSource, OperationKind, OperationStatus


class Operation(models.Model):
    """A change to a hypervisor, requested by someone and run by a worker.

    Status moves queued -> running -> succeeded | failed, or queued -> cancelled.
    A worker claims the row with a conditional UPDATE, so no two workers run it, and
    operations sharing a `lock_key` (one network) never run at the same time.
    """

    kind = models.CharField(max_length=50, choices=OperationKind.choices)
    status = models.CharField(
        max_length=20, choices=OperationStatus.choices, default=OperationStatus.QUEUED, db_index=True
    )
    host = models.ForeignKey("networks.Host", null=True, on_delete=models.SET_NULL, related_name="operations")
    host_name = models.CharField(max_length=100, help_text="Copy of the host's name, kept if it is removed")
    network = models.ForeignKey(
        "networks.Network", null=True, blank=True, on_delete=models.SET_NULL, related_name="operations"
    )
    target_name = models.CharField(max_length=255, blank=True, help_text="Name of the network acted on")
    lock_key = models.CharField(max_length=400, db_index=True)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    step = models.CharField(max_length=255, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    requested_by_name = models.CharField(max_length=150, blank=True)
    source = models.CharField(max_length=10, choices=AuditSource.choices, default=AuditSource.WEB)
    message = models.CharField(max_length=500, blank=True, help_text="Why, as given by the requester")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Runs started, retries included")
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life of the worker running it; stale means the worker died"
    )
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="When its task message was last sent to the broker"
    )
    checkpoint = models.JSONField(
        default=dict, blank=True, help_text="What a recovery needs, recorded before each destructive step"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["lock_key", "status"], name="operation_lock_status"),
            # The list's keyset pagination walks this index newest first
            models.Index(fields=["created_at", "id"], name="operation_created_id"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_kind_display()} on {self.target_name or self.host_name}"

    def get_absolute_url(self) -> str:
        return reverse("networks:operation_detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None
