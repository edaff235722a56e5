"""Who may do what, on which host: the one rule every service checks before it acts.

Every write service calls `authorize(actor=…, action=…, host=…, source=…)` first. A refusal
is audited (`<action>.denied`) and raises `PermissionDenied`, which the API answers with
403 and the pages with a 403 page; nothing is queued. Pages and the API use `can()` to
hide what a user may not do, and `visible_hosts()` to show only the hosts in a user's scope.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import transaction
from django.db.models import QuerySet

from networks.choices import AuditSource, OperationKind, Role
from networks.models import Host, Operation, UserRole

from .audit import audit_record, note_denial_recorded

RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}

# The least role each action needs. An action missing here is refused to everyone, so a
# new write path cannot slip through without a rule.
REQUIRED_ROLE = {
    # operators: day-to-day changes that keep a network's shape
    "host.sync": Role.OPERATOR,
    "network.start": Role.OPERATOR,
    "network.restart": Role.OPERATOR,
    "network.update.ip-dhcp-host": Role.OPERATOR,
    "network.update.ip-dhcp-range": Role.OPERATOR,
    "network.update.dns-host": Role.OPERATOR,
    "network.update.dns-txt": Role.OPERATOR,
    "network.update.dns-srv": Role.OPERATOR,
    "network.update.portgroup": Role.OPERATOR,
    "network.bulk_import": Role.OPERATOR,
    "operation.cancel": Role.OPERATOR,
    "guest.interface_add": Role.OPERATOR,
    "guest.interface_update": Role.OPERATOR,
    "guest.interface_remove": Role.OPERATOR,
    "port_forward.create": Role.OPERATOR,
    "port_forward.update": Role.OPERATOR,
    "port_forward.delete": Role.OPERATOR,
    "port_forward.reapply": Role.OPERATOR,
    # undoing a change needs the role of the change that puts it back (networks/services/undo.py
    # also checks that action); operator is the floor
    "network.undo": Role.OPERATOR,
    # admins: what changes the fleet, a network's shape, or who may do what
    "host.create": Role.ADMIN,
    "host.delete": Role.ADMIN,
    "network.create": Role.ADMIN,
    "network.stop": Role.ADMIN,
    "network.autostart": Role.ADMIN,
    "network.undefine": Role.ADMIN,
    "network.rename": Role.ADMIN,
    "network.xml_edit": Role.ADMIN,
    # applying a desired-state document (or copying a network to other hosts) creates,
    # redefines and may delete networks
    "network.apply": Role.ADMIN,
    "network.update.forward-interface": Role.ADMIN,
    # a wrong assignment can take a NIC or the disk controller away from the host
    "guest.hostdev_attach": Role.ADMIN,
    "guest.hostdev_detach": Role.ADMIN,
    "user.manage": Role.ADMIN,
    "token.manage_others": Role.ADMIN,
}


# The action whose permission covers each kind of operation (to cancel it, for one).
KIND_ACTIONS = {
    OperationKind.HOST_SYNC: "host.sync",
    OperationKind.NETWORK_START: "network.start",
    OperationKind.NETWORK_STOP: "network.stop",
    OperationKind.NETWORK_AUTOSTART: "network.autostart",
    OperationKind.NETWORK_UNDEFINE: "network.undefine",
    OperationKind.NETWORK_CREATE: "network.create",
    OperationKind.NETWORK_BULK_IMPORT: "network.bulk_import",
    OperationKind.NETWORK_RESTART: "network.restart",
    OperationKind.NETWORK_DEFINE: "network.xml_edit",
    OperationKind.NETWORK_XML_LIVE: "network.xml_edit",
    OperationKind.NETWORK_RENAME: "network.rename",
    OperationKind.NETWORK_UNDO: "network.undo",
    OperationKind.GUEST_INTERFACE_ADD: "guest.interface_add",
    OperationKind.GUEST_INTERFACE_UPDATE: "guest.interface_update",
    OperationKind.GUEST_INTERFACE_REMOVE: "guest.interface_remove",
    OperationKind.GUEST_HOSTDEV_ATTACH: "guest.hostdev_attach",
    OperationKind.GUEST_HOSTDEV_DETACH: "guest.hostdev_detach",
    OperationKind.PORT_FORWARD_CREATE: "port_forward.create",
    OperationKind.PORT_FORWARD_UPDATE: "port_forward.update",
    OperationKind.PORT_FORWARD_DELETE: "port_forward.delete",
    OperationKind.PORT_FORWARD_REAPPLY: "port_forward.reapply",
}


def operation_action(operation: Operation) -> str:
    """The action someone must be allowed to request to act on this operation."""
    if operation.kind == OperationKind.NETWORK_UPDATE:
        return f"network.update.{operation.params.get('section', 'unknown')}"
    if operation.kind == OperationKind.NETWORK_RESTART and operation.params.get("new_xml"):
        return "network.xml_edit"
    return KIND_ACTIONS.get(operation.kind, "operation.unknown")


class PermissionDenied(DjangoPermissionDenied):
    """The actor's role or host scope does not allow this action; nothing was changed."""


def role_of(actor) -> UserRole | None:
    """The actor's role row (superusers get an unsaved admin row); None for anonymous."""
    if actor is None or not actor.is_authenticated:
        return None
    if actor.is_superuser:
        return UserRole(user=actor, role=Role.ADMIN, all_hosts=True)
    cached = getattr(actor, "_kvmweb_role", None)
    if cached is None:
        cached = UserRole.objects.filter(user=actor).first() or UserRole(user=actor, role=Role.VIEWER)
        actor._kvmweb_role = cached
    return cached


def _host_ids(role: UserRole) -> set[int] | None:
    """The host ids a scoped role covers (None: every host), cached on the row."""
    if role.all_hosts:
        return None
    if not hasattr(role, "_host_ids"):
        role._host_ids = set(role.hosts.values_list("pk", flat=True)) if role.pk else set()
    return role._host_ids


def _in_scope(role: UserRole, host: Host | None) -> bool:
    ids = _host_ids(role)
    if ids is None:
        return True
    return host is not None and host.pk in ids


def can(actor, action: str, host: Host | None = None) -> bool:
    """Whether `actor` may do `action` on `host` (None: an action that names no host)."""
    role = role_of(actor)
    required = REQUIRED_ROLE.get(action)
    if role is None or required is None:
        return False
    if RANK[role.role] < RANK[required]:
        return False
    if host is None:
        # Actions on the fleet itself (adding a host, managing users) need a fleet-wide role.
        return role.all_hosts
    return _in_scope(role, host)


def can_view(actor, host: Host | None) -> bool:
    role = role_of(actor)
    return role is not None and (host is None or _in_scope(role, host))


def authorize(*, actor, action: str, host: Host | None = None, source: str, object_name: str = "") -> None:
    """Raise PermissionDenied (audited) unless `actor` may do `action` on `host`.

    kvmweb itself (no actor, source system or task: beat, bootstrap, management commands
    run by whoever has a shell on the server) may do anything.
    """
    if actor is None and source in {AuditSource.SYSTEM, AuditSource.TASK}:
        return
    if can(actor, action, host):
        return
    role = role_of(actor)
    if role is None:
        reason = "You are not logged in."
    elif action not in REQUIRED_ROLE:
        reason = f"No role may do {action}."
    elif RANK[role.role] < RANK[REQUIRED_ROLE[action]]:
        reason = f"{action} needs the {REQUIRED_ROLE[action]} role; you are {role.role}."
    else:
        reason = f"Your {role.role} role does not cover {'this host' if host else 'the whole fleet'}."
    audit_record(
        action=f"{action}.denied",
        source=source,
        actor=actor,
        host=host,
        object_type=action.split(".")[0],
        object_name=object_name or (host.name if host else ""),
        detail=reason,
    )
    note_denial_recorded()  # the request's refusal needs no second event
    raise PermissionDenied(reason)


def visible_hosts(actor) -> QuerySet[Host]:
    """The hosts `actor` may see: every host, those of its scope, or none."""
    role = role_of(actor)
    if role is None:
        return Host.objects.none()
    ids = _host_ids(role)
    return Host.objects.all() if ids is None else Host.objects.filter(pk__in=ids)


def visible_host_ids(actor) -> set[int] | None:
    """None when `actor` sees every host, else the ids it may see."""
    role = role_of(actor)
    if role is None:
        return set()
    return _host_ids(role)


def role_set(*, user, role: str, host_names: list[str] | None, actor, source: str) -> UserRole:
    """Give `user` a role, on every host (host_names None) or only on the named ones."""
    authorize(actor=actor, action="user.manage", source=source, object_name=user.get_username())
    if role not in RANK:
        raise ValueError(f"Unknown role {role!r}: choose viewer, operator or admin.")
    hosts = []
    if host_names is not None:
        hosts = list(Host.objects.filter(name__in=host_names))
        missing = sorted(set(host_names) - {h.name for h in hosts})
        if missing:
            raise ValueError(f"No host named {', '.join(missing)}.")
    row, _ = UserRole.objects.update_or_create(user=user, defaults={"role": role, "all_hosts": host_names is None})
    row.hosts.set(hosts)
    scope = "all hosts" if host_names is None else ", ".join(sorted(host_names)) or "no host"
    audit_record(
        action="user.role_set",
        source=source,
        actor=actor,
        object_type="user",
        object_name=user.get_username(),
        detail=f"{role} on {scope}",
    )
    return row


def user_role_grant(*, username: str, role: str, host_names: list[str] | None, actor, source: str) -> UserRole:
    """`role_set` for a user named `username`, created first (without a usable password: it
    logs in once an admin sets one, or uses an API token) if there is none. An unknown host
    name creates no user."""
    authorize(actor=actor, action="user.manage", source=source, object_name=username)
    with transaction.atomic():
        user, created = get_user_model().objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        return role_set(user=user, role=role, host_names=host_names, actor=actor, source=source)


def allowed_actions(actor, host: Host | None = None) -> frozenset[str]:
    """Every action `actor` may do on `host` (None: on the fleet), for pages to hide the rest."""
    return frozenset(action for action in REQUIRED_ROLE if can(actor, action, host))


def scoped(queryset, actor, host_field: str = "host"):
    """`queryset` narrowed to the rows on hosts `actor` may see."""
    ids = visible_host_ids(actor)
    queryset = queryset.all()  # a manager becomes a queryset
    return queryset if ids is None else queryset.filter(**{f"{host_field}__in": ids})
