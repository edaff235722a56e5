"""`Authorization: Token <key>` with hashed tokens, `manage.py apitoken`, and /api/tokens/."""

import io
import re

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from networks.models import ApiToken, AuditEvent
from networks.services.tokens import token_create
from tests.factories import UserFactory

KEY = re.compile(r"^[A-Za-z0-9_-]{43}$")


def _client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def _apitoken(username: str) -> str:
    out = io.StringIO()
    call_command("apitoken", username, stdout=out)
    return out.getvalue()


def test_apitoken_prints_only_a_working_key(admin):
    printed = _apitoken(admin.username)
    key = printed.strip()
    assert printed == f"{key}\n" and KEY.match(key)
    assert _client(key).get("/api/hosts/").status_code == 200


def test_apitoken_again_rotates_the_cli_token(admin):
    first = _apitoken(admin.username).strip()
    second = _apitoken(admin.username).strip()
    assert first != second
    assert _client(first).get("/api/hosts/").status_code == 401
    assert _client(second).get("/api/hosts/").status_code == 200
    assert list(ApiToken.objects.values_list("name", flat=True)) == ["cli"]


def test_apitoken_leaves_other_tokens_alone(admin):
    _, script_key = token_create(user=admin, name="backup", actor=admin, source="web")
    _apitoken(admin.username)
    assert _client(script_key).get("/api/hosts/").status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        "Token",
        "Token a b",
        "Token " + "A" * 43,
        "Token " + "0123456789abcdef0123456789abcdef01234567",  # a key of the old, unhashed kind
        "Token ' OR 1=1 --",
        "Token \x00",
        "token " + "A" * 2000,
    ],
)
def test_a_wrong_token_is_401(db, header):
    response = APIClient().get("/api/hosts/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_a_non_ascii_token_is_401_not_500(db):
    response = Client().get("/api/hosts/", HTTP_AUTHORIZATION="Token ключ".encode().decode("latin-1"))
    assert response.status_code == 401


def test_the_token_acts_with_its_users_role(db):
    viewer = UserFactory(username="vera", role="viewer")
    _, key = token_create(user=viewer, name="ci", actor=viewer, source="web")
    response = _client(key).post("/api/hosts/", {"name": "kvm9", "uri": "test:///default"}, format="json")
    assert response.status_code == 403


def test_create_list_rotate_revoke(db):
    viewer = UserFactory(username="vera", role="viewer")
    client = APIClient()
    client.force_authenticate(viewer)
    created = client.post("/api/tokens/", {"name": "ci"}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert body["name"] == "ci" and body["user"] == "vera" and body["key"].startswith(body["prefix"])
    assert _client(body["key"]).get("/api/tokens/").status_code == 200

    listed = client.get("/api/tokens/").json()["results"]
    assert [t["name"] for t in listed] == ["ci"] and "key" not in listed[0]
    assert listed[0]["last_used_at"] is not None  # the call above used it

    rotated = client.post(f"/api/tokens/{body['id']}/rotate/")
    assert rotated.status_code == 200 and rotated.json()["key"] != body["key"]
    assert _client(body["key"]).get("/api/tokens/").status_code == 401
    assert _client(rotated.json()["key"]).get("/api/tokens/").status_code == 200

    assert client.delete(f"/api/tokens/{body['id']}/").status_code == 204
    assert _client(rotated.json()["key"]).get("/api/tokens/").status_code == 401


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": 7}, "name"),
        ({"name": None}, "name"),
        ({"name": {"x": 1}}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "line\nbreak"}, "name"),
        ([], "non_field_errors"),
        ("ci", "non_field_errors"),
        (7, "non_field_errors"),
    ],
)
def test_bad_create_bodies_are_400_and_create_nothing(admin, body, field):
    client = APIClient()
    client.force_authenticate(admin)
    response = client.post("/api/tokens/", body, format="json")
    assert response.status_code == 400 and field in response.json()
    assert not ApiToken.objects.exists()


def test_a_non_admin_cannot_reach_another_users_tokens(db):
    vera = UserFactory(username="vera", role="viewer")
    otto = UserFactory(username="otto", role="operator")
    token, key = token_create(user=vera, name="ci", actor=vera, source="web")
    client = APIClient()
    client.force_authenticate(otto)
    assert client.get("/api/tokens/", {"user": "vera"}).status_code == 403
    assert AuditEvent.objects.filter(action="token.manage_others.denied", actor_name="otto").exists()
    assert client.delete(f"/api/tokens/{token.pk}/").status_code == 404
    assert client.post(f"/api/tokens/{token.pk}/rotate/").status_code == 404
    assert _client(key).get("/api/tokens/").status_code == 200


def test_an_admin_lists_and_revokes_another_users_tokens_but_cannot_take_their_key(admin):
    vera = UserFactory(username="vera", role="viewer")
    token, key = token_create(user=vera, name="ci", actor=vera, source="web")
    client = APIClient()
    client.force_authenticate(admin)
    listed = client.get("/api/tokens/", {"user": "vera"}).json()["results"]
    assert [(t["user"], t["name"]) for t in listed] == [("vera", "ci")]
    assert client.post(f"/api/tokens/{token.pk}/rotate/").status_code == 404  # a new key would be vera's
    assert client.delete(f"/api/tokens/{token.pk}/").status_code == 204
    assert _client(key).get("/api/tokens/").status_code == 401


@pytest.mark.parametrize("user", ["x" * 151, "nul\x00", "a\nb"])
def test_a_bad_user_filter_is_400(admin, user):
    client = APIClient()
    client.force_authenticate(admin)
    assert client.get("/api/tokens/", {"user": user}).status_code == 400
