"""API tokens: only a digest is kept, every change is audited, another user's tokens need an admin."""

import hashlib
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from networks.models import ApiToken, AuditEvent
from networks.services.permissions import PermissionDenied
from networks.services.tokens import token_create, token_for_key, token_revoke, token_rotate
from tests.factories import UserFactory

WEB = "web"


@pytest.fixture
def viewer(db):
    return UserFactory(username="vera", role="viewer")


def test_only_a_sha256_digest_of_the_key_is_stored(viewer):
    token, key = token_create(user=viewer, name="backup script", actor=viewer, source=WEB)
    row = ApiToken.objects.get(pk=token.pk)
    assert row.digest == hashlib.sha256(key.encode()).hexdigest()
    assert row.prefix == key[:8] and len(key) >= 43
    assert not any(key in str(value) for value in row.__dict__.values())
    assert token_for_key(key).user == viewer


def test_keys_are_fresh_random_values(viewer):
    keys = {token_create(user=viewer, name=f"t{i}", actor=viewer, source=WEB)[1] for i in range(20)}
    assert len(keys) == 20


def test_every_change_is_audited_without_the_key(viewer):
    token, first = token_create(user=viewer, name="ci", actor=viewer, source=WEB)
    token, second = token_rotate(token=token, actor=viewer, source=WEB)
    token_revoke(token=token, actor=viewer, source=WEB)
    events = list(AuditEvent.objects.filter(object_type="token").order_by("pk"))
    assert [e.action for e in events] == ["token.created", "token.rotated", "token.revoked"]
    assert all(e.object_name == "vera/ci" and e.actor_name == "vera" for e in events)
    for event in events:
        row = " ".join(str(value) for value in event.__dict__.values())
        assert first not in row and second not in row


def test_rotating_keeps_the_name_and_retires_the_old_key(viewer):
    token, old = token_create(user=viewer, name="ci", actor=viewer, source=WEB)
    rotated, new = token_rotate(token=token, actor=viewer, source=WEB)
    assert (rotated.pk, rotated.name) == (token.pk, "ci") and new != old
    assert token_for_key(old) is None
    assert token_for_key(new).pk == token.pk


def test_a_revoked_key_stops_working(viewer):
    token, key = token_create(user=viewer, name="ci", actor=viewer, source=WEB)
    token_revoke(token=token, actor=viewer, source=WEB)
    assert token_for_key(key) is None and not ApiToken.objects.exists()


def test_a_deactivated_users_key_stops_working(viewer):
    _, key = token_create(user=viewer, name="ci", actor=viewer, source=WEB)
    viewer.is_active = False
    viewer.save()
    assert token_for_key(key) is None


@pytest.mark.parametrize("action", ["revoke", "rotate"])
def test_another_users_tokens_need_an_admin(viewer, action):
    operator = UserFactory(username="otto", role="operator")
    token, key = token_create(user=viewer, name="ci", actor=viewer, source=WEB)
    with pytest.raises(PermissionDenied, match="admin"):
        if action == "revoke":
            token_revoke(token=token, actor=operator, source=WEB)
        else:
            token_rotate(token=token, actor=operator, source=WEB)
    assert token_for_key(key).pk == token.pk
    assert AuditEvent.objects.filter(action="token.manage_others.denied", actor_name="otto").exists()


def test_nobody_creates_a_token_for_another_user_without_being_admin(viewer):
    operator = UserFactory(username="otto", role="operator")
    with pytest.raises(PermissionDenied):
        token_create(user=viewer, name="sneaky", actor=operator, source=WEB)
    assert not ApiToken.objects.exists()


def test_an_admin_revokes_another_users_token(viewer, admin):
    token, key = token_create(user=viewer, name="ci", actor=viewer, source=WEB)
    token_revoke(token=token, actor=admin, source=WEB)
    assert token_for_key(key) is None
    assert AuditEvent.objects.get(action="token.revoked").actor_name == admin.username


@pytest.mark.parametrize(
    "name, message",
    [
        ("", "Give the token a name"),
        ("   ", "Give the token a name"),
        (" padded", "start or end with spaces"),
        ("x" * 101, "at most 100"),
        ("tab\there", "control characters"),
        ("nul\x00", "control characters"),
        (5, "must be text"),
        (None, "must be text"),
        (["ci"], "must be text"),
    ],
)
def test_bad_names_are_refused_and_create_nothing(viewer, name, message):
    with pytest.raises(ValidationError, match=message):
        token_create(user=viewer, name=name, actor=viewer, source=WEB)
    assert not ApiToken.objects.exists() and not AuditEvent.objects.filter(action="token.created").exists()


def test_a_name_is_unique_per_user(viewer, admin):
    token_create(user=viewer, name="ci", actor=viewer, source=WEB)
    with pytest.raises(ValidationError, match="already has a token named 'ci'"):
        token_create(user=viewer, name="ci", actor=viewer, source=WEB)
    token_create(user=admin, name="ci", actor=admin, source=WEB)  # another user's "ci" is fine
    assert ApiToken.objects.count() == 2


@pytest.mark.parametrize(
    "key",
    [
        "",
        "short",
        "x" * 43 + "y",
        "ä" * 43,
        "a b" + "c" * 40,
        "\x00" * 43,
        None,
        42,
        "0123456789abcdef" * 2 + "01234567",
    ],
)
def test_anything_but_a_real_key_opens_nothing(viewer, key):
    token_create(user=viewer, name="ci", actor=viewer, source=WEB)
    assert token_for_key(key) is None


def test_last_used_is_written_at_most_once_a_minute(viewer):
    token, key = token_create(user=viewer, name="ci", actor=viewer, source=WEB)
    token_for_key(key)
    first = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first is not None
    token_for_key(key)
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first  # a burst writes once

    a_while_ago = timezone.now() - timedelta(seconds=61)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=a_while_ago)
    token_for_key(key)
    assert ApiToken.objects.get(pk=token.pk).last_used_at > a_while_ago
