"""Read-only admin views: every change goes through the services (and the audit log)."""

from django.contrib import admin

from networks.choices import AuditSource
from networks.models import AuditEvent, Host, Network, Operation, UserRole
from networks.services.permissions import role_set


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


@admin.register(UserRole)
class UserRoleAdmin(admin.ModelAdmin):
    """Roles are set through the same service as `setrole` and the Users page, so they are audited."""

    list_display = ["user", "role", "all_hosts"]
    list_filter = ["role", "all_hosts"]
    filter_horizontal = ["hosts"]

    def save_model(self, request, obj, form, change):
        pass  # saved with its hosts in save_related, by the service

    def save_related(self, request, form, formsets, change):
        data = form.cleaned_data
        host_names = None if data["all_hosts"] else [host.name for host in data["hosts"]]
        form.instance = role_set(
            user=data["user"], role=data["role"], host_names=host_names, actor=request.user, source=AuditSource.WEB
        )

    def has_delete_permission(self, request, obj=None):
        return False  # a user without a row is a viewer: set the role to viewer instead


def _superusers_only(request) -> bool:
    # kvmweb's roles live in the services; the Django admin sees every host and can make
    # superusers, so it is for superusers alone (is_staff alone grants nothing here).
    return request.user.is_active and request.user.is_superuser


admin.site.has_permission = _superusers_only
