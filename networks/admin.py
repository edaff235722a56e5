"""Read-only admin views: every change goes through the services (and the audit log)."""

from django.contrib import admin

from networks.models import AuditEvent, Host, Network, Operation


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_name", "source", "action", "object_name", "host_name"]
    list_filter = ["source"]
    search_fields = ["action", "object_name", "actor_name", "message"]


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "status", "host_name", "target_name", "created_at"]
    list_filter = ["status", "kind"]


@admin.register(Host)
class HostAdmin(ReadOnlyAdmin):
    list_display = ["name", "status", "last_sync_at"]


@admin.register(Network)
class NetworkAdmin(ReadOnlyAdmin):
    list_display = ["name", "host", "forward_mode", "active"]
