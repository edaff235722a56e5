"""The role rule as pages apply it: objects outside a user's host scope do not exist for
them (404), and a form a user may not submit is refused before it is shown (403, audited)."""

from django.shortcuts import get_object_or_404

from networks.services.permissions import allowed_actions, authorize, scoped

from .common import WEB


def require(request, action: str, host=None, object_name: str = "") -> None:
    authorize(actor=request.user, action=action, host=host, source=WEB, object_name=object_name)


def visible(request, queryset, host_field: str = "host"):
    return scoped(queryset, request.user, host_field)


def visible_object(request, queryset, pk, host_field: str = "host"):
    return get_object_or_404(visible(request, queryset, host_field), pk=pk)


def may(request, host=None) -> frozenset[str]:
    """The actions the page may offer on `host`."""
    return allowed_actions(request.user, host)
