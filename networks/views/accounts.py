"""The user's own account: API tokens, and the client address login throttling counts by."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlencode

from axes.helpers import get_client_username
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST, require_safe

from networks.models import ApiToken
from networks.services.permissions import can
from networks.services.tokens import token_create, token_revoke, token_rotate

from .common import WEB, search_param


def login_client_address(request) -> str | None:
    """Where a login attempt came from, for the per-address lockout.

    Behind a proxy (KVMWEB_BEHIND_PROXY) every request comes from the proxy, so the address
    is the last one in X-Forwarded-For: the one the proxy itself appended. Earlier entries
    are whatever the client sent and cannot be trusted.
    """
    remote = request.META.get("REMOTE_ADDR") or None
    if not settings.KVMWEB_BEHIND_PROXY:
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(forwarded))
    except ValueError:
        return remote


def lockout_response(request, original_response=None, credentials=None):
    """The page a locked-out login gets (429), saying for how long."""
    context = {
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "username": get_client_username(request, credentials) or "",
        "lockout_minutes": int(settings.AXES_COOLOFF_TIME.total_seconds() // 60),
    }
    return render(request, "registration/lockout.html", context, status=429)


def _others_tokens(request):
    """Every other user's tokens for an admin (narrowed by ?user=), else None."""
    if not can(request.user, "token.manage_others"):
        return None
    tokens = ApiToken.objects.exclude(user=request.user).select_related("user").order_by("user__username", "name")
    username = search_param(request, "user")
    return tokens.filter(user__username=username) if username else tokens


@require_safe
def token_list(request):
    context = {
        "tokens": ApiToken.objects.filter(user=request.user).order_by("name"),
        "others": _others_tokens(request),
        "user_filter": search_param(request, "user"),
        "name_max": ApiToken._meta.get_field("name").max_length,
    }
    return render(request, "networks/token_list.html", context)


def _show_key_once(request, token: ApiToken, key: str, verb: str):
    """The answer to the POST itself shows the key; nothing keeps it (no session, no cache)."""
    response = render(request, "networks/token_created.html", {"token": token, "key": key, "verb": verb})
    add_never_cache_headers(response)
    return response


@require_POST
def token_create_view(request):
    try:
        token, key = token_create(
            user=request.user, name=request.POST.get("name", "").strip(), actor=request.user, source=WEB
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return redirect("networks:token_list")
    return _show_key_once(request, token, key, "created")


@require_POST
def token_rotate_view(request, pk: int):
    # Only one's own tokens: a new key for someone else's token would let an admin act as them.
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    token, key = token_rotate(token=token, actor=request.user, source=WEB)
    return _show_key_once(request, token, key, "rotated")


@require_POST
def token_revoke_view(request, pk: int):
    token = get_object_or_404(ApiToken.objects.select_related("user"), pk=pk)
    token_revoke(token=token, actor=request.user, source=WEB)
    messages.success(request, f"Token {token.name} ({token.prefix}…) of {token.user.get_username()} revoked.")
    if token.user != request.user:
        return redirect(f"{reverse('networks:token_list')}?{urlencode({'user': token.user.get_username()})}")
    return redirect("networks:token_list")
