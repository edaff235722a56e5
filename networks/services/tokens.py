"""API tokens: created, rotated and revoked here, each audited; only a digest of a key is kept.

A key is shown once, to whoever created or rotated it, and never stored, logged or audited.
Anyone may manage their own tokens; another user's need `token.manage_others` (admins).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from networks.choices import AuditSource
from networks.models import ApiToken

from .audit import audit_record
from .permissions import authorize

KEY_BYTES = 32  # 256 bits from the OS's random source: a key cannot be guessed
PREFIX_LENGTH = 8
NAME_MAX = 100
# What secrets.token_urlsafe(KEY_BYTES) produces: anything else cannot be a key, so it is
# refused before it reaches the database.
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
# A token used in a burst of requests is written once, not once per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def _new_key() -> tuple[str, str, str]:
    """A fresh key, its prefix and its digest."""
    key = secrets.token_urlsafe(KEY_BYTES)
    return key, key[:PREFIX_LENGTH], key_digest(key)


def clean_name(name) -> str:
    """A token name: printable text of 1 to 100 characters; a ValidationError on `name` otherwise."""
    if not isinstance(name, str):
        raise ValidationError({"name": "A token name must be text."})
    if not name.strip():
        raise ValidationError({"name": "Give the token a name (what it is for)."})
    if name != name.strip():
        raise ValidationError({"name": "A token name cannot start or end with spaces."})
    if len(name) > NAME_MAX:
        raise ValidationError({"name": f"A token name has at most {NAME_MAX} characters."})
    if not name.isprintable():
        raise ValidationError({"name": "A token name cannot contain control characters."})
    return name


def _label(user, name: str) -> str:
    return f"{user.get_username()}/{name}"


def authorize_tokens_of(*, actor, user, source: str) -> None:
    """Anyone acts on their own tokens; on another user's only with `token.manage_others`."""
    if actor is not None and actor.is_authenticated and actor.pk == user.pk:
        return
    authorize(actor=actor, action="token.manage_others", source=source, object_name=user.get_username())


def token_create(*, user, name, actor, source: str) -> tuple[ApiToken, str]:
    """A new token for `user`, and its key (the only time it exists outside the caller)."""
    authorize_tokens_of(actor=actor, user=user, source=source)
    name = clean_name(name)
    key, prefix, digest = _new_key()
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(user=user, name=name, prefix=prefix, digest=digest)
            audit_record(
                action="token.created",
                source=source,
                actor=actor,
                object_type="token",
                object_name=_label(user, name),
                detail=f"prefix {prefix}",
            )
    except IntegrityError:
        raise ValidationError({"name": f"{user.get_username()} already has a token named {name!r}."}) from None
    return token, key


def token_rotate(*, token: ApiToken, actor, source: str) -> tuple[ApiToken, str]:
    """A new key for the same token (name kept); the old key stops working at once."""
    authorize_tokens_of(actor=actor, user=token.user, source=source)
    key, prefix, digest = _new_key()
    old_prefix = token.prefix
    with transaction.atomic():
        token.prefix, token.digest = prefix, digest
        token.created_at, token.last_used_at = timezone.now(), None
        token.save(update_fields=["prefix", "digest", "created_at", "last_used_at"])
        audit_record(
            action="token.rotated",
            source=source,
            actor=actor,
            object_type="token",
            object_name=_label(token.user, token.name),
            detail=f"prefix {old_prefix} -> {prefix}",
        )
    return token, key


def token_revoke(*, token: ApiToken, actor, source: str) -> None:
    """Delete the token: its key stops working at once."""
    authorize_tokens_of(actor=actor, user=token.user, source=source)
    with transaction.atomic():
        audit_record(
            action="token.revoked",
            source=source,
            actor=actor,
            object_type="token",
            object_name=_label(token.user, token.name),
            detail=f"prefix {token.prefix}",
        )
        token.delete()


def token_for_key(key: str) -> ApiToken | None:
    """The token of an active user that `key` opens, or None; notes when it was last used."""
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        return None
    token = ApiToken.objects.select_related("user").filter(digest=key_digest(key)).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def cli_token_key(user) -> str:
    """`manage.py apitoken`: a key for `user`'s `cli` token, rotating it if it exists."""
    token = ApiToken.objects.filter(user=user, name="cli").first()
    if token is None:
        return token_create(user=user, name="cli", actor=None, source=AuditSource.SYSTEM)[1]
    return token_rotate(token=token, actor=None, source=AuditSource.SYSTEM)[1]
