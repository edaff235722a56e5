"""The API tokens page, login throttling and the security headers, as a browser meets them."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.signals import user_login_failed
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from networks.models import ApiToken
from networks.services.tokens import token_create, token_for_key
from tests.factories import UserFactory

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the tokens page


def test_the_key_is_shown_once_on_the_answer_to_create(logged_in, admin):
    assert 'href="/account/tokens/"' in logged_in.get("/").content.decode()  # the nav links to the page
    response = logged_in.post("/account/tokens/create/", {"name": "backup"})
    assert response.status_code == 200
    token = ApiToken.objects.get(user=admin, name="backup")
    page = response.content.decode()
    key = page.split('id="token-key">')[1].split("<")[0]
    assert token_for_key(key).pk == token.pk
    assert "no-store" in response["Cache-Control"]
    listing = logged_in.get("/account/tokens/").content.decode()
    assert "backup" in listing and token.prefix in listing and key not in listing


def test_changes_are_post_only_and_csrf_protected(admin):
    token, key = token_create(user=admin, name="ci", actor=admin, source="web")
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    assert client.get(f"/account/tokens/{token.pk}/revoke/").status_code == 405
    assert client.get("/account/tokens/create/").status_code == 405
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 403  # no CSRF token
    assert client.post("/account/tokens/create/", {"name": "x"}).status_code == 403
    assert token_for_key(key) is not None and ApiToken.objects.count() == 1


def test_rotate_and_revoke_own_tokens(logged_in, admin):
    token, old = token_create(user=admin, name="ci", actor=admin, source="web")
    page = logged_in.post(f"/account/tokens/{token.pk}/rotate/").content.decode()
    new = page.split('id="token-key">')[1].split("<")[0]
    assert token_for_key(old) is None and token_for_key(new).pk == token.pk
    assert logged_in.post(f"/account/tokens/{token.pk}/revoke/").status_code == 302
    assert token_for_key(new) is None


def test_a_bad_name_is_a_message_and_creates_nothing(logged_in):
    response = logged_in.post("/account/tokens/create/", {"name": "\x00"}, follow=True)
    assert "control characters" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_others_tokens_admin_sees_and_revokes_a_viewer_cannot(client, admin):
    vera = UserFactory(username="vera", role="viewer")
    otto = UserFactory(username="otto", role="operator")
    token, key = token_create(user=otto, name="otto-ci", actor=otto, source="web")

    client.force_login(vera)
    assert "otto-ci" not in client.get("/account/tokens/").content.decode()
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 403
    assert client.post(f"/account/tokens/{token.pk}/rotate/").status_code == 404
    assert token_for_key(key) is not None

    client.force_login(admin)
    page = client.get("/account/tokens/", {"user": "otto"}).content.decode()
    assert "otto-ci" in page and token.prefix in page
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 302
    assert token_for_key(key) is None


# ---------------------------------------------------------------- login throttling


def _login(client, username, password, address="192.0.2.10"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.fixture
def alice(db):
    return UserFactory(username="alice", password="right-password")


def test_ten_failures_for_a_username_lock_it_out_with_a_clear_page(client, alice):
    for attempt in range(9):
        assert _login(client, "alice", f"wrong{attempt}", address=f"198.51.100.{attempt}").status_code == 200
    assert _login(client, "alice", "wrong9", address="198.51.100.9").status_code == 429  # the tenth
    refused = _login(client, "alice", "right-password", address="203.0.113.9")  # even the right one
    assert refused.status_code == 429
    page = refused.content.decode()
    assert "Too many failed logins" in page and "15 minutes" in page and "<html" in page
    assert "_auth_user_id" not in client.session


def test_nine_failures_do_not(client, alice):
    for attempt in range(9):
        _login(client, "alice", f"wrong{attempt}")
    assert _login(client, "alice", "right-password").status_code == 302


def test_ten_failures_from_one_address_lock_it_out_for_every_username(client, alice):
    for attempt in range(10):
        _login(client, f"guess{attempt}", "wrong", address="192.0.2.66")
    assert _login(client, "alice", "right-password", address="192.0.2.66").status_code == 429
    assert _login(client, "alice", "right-password", address="192.0.2.67").status_code == 302


def test_the_lockout_ends_after_fifteen_quiet_minutes(client, alice):
    for attempt in range(10):
        _login(client, "alice", f"wrong{attempt}")
    assert _login(client, "alice", "right-password").status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert _login(client, "alice", "right-password").status_code == 302


def test_every_failed_login_still_sends_user_login_failed(client, alice):
    received = []

    def receiver(sender, credentials, request=None, **kwargs):
        received.append(credentials.get("username"))

    user_login_failed.connect(receiver)
    try:
        for attempt in range(12):
            _login(client, "alice", f"wrong{attempt}")
    finally:
        user_login_failed.disconnect(receiver)
    assert received == ["alice"] * 12  # including the two refused during the lockout


def test_api_tokens_keep_working_during_a_lockout(client, alice):
    _, key = token_create(user=alice, name="ci", actor=alice, source="web")
    for attempt in range(11):
        _login(client, "alice", f"wrong{attempt}")
    assert _login(client, "alice", "right-password").status_code == 429
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/hosts/", REMOTE_ADDR="192.0.2.10").status_code == 200


def test_behind_a_proxy_the_address_is_the_one_the_proxy_appended(client, alice, settings):
    settings.KVMWEB_BEHIND_PROXY = True
    for attempt in range(10):
        client.post(
            "/accounts/login/",
            {"username": f"guess{attempt}", "password": "wrong"},
            REMOTE_ADDR="10.0.0.1",
            HTTP_X_FORWARDED_FOR=f"198.51.100.{attempt}, 192.0.2.66",  # the first part is the client's own
        )
    other_client = _login(client, "alice", "right-password", address="10.0.0.1")  # same proxy, no header
    assert other_client.status_code == 302
    same = client.post(
        "/accounts/login/",
        {"username": "alice", "password": "right-password"},
        REMOTE_ADDR="10.0.0.1",
        HTTP_X_FORWARDED_FOR="192.0.2.66",
    )
    assert same.status_code == 429


# ---------------------------------------------------------------- security headers


def test_every_page_carries_the_security_headers(logged_in):
    response = logged_in.get("/")
    policy = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["form-action"] == "'self'"
    assert policy["base-uri"] == "'none'"
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in response  # KVMWEB_HTTPS is off in the tests


def test_the_session_cookie_is_httponly_and_samesite_lax(client, alice):
    response = _login(client, "alice", "right-password")
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]


def test_templates_have_no_inline_script_style_or_handler():
    """What the CSP would block: inline <script>, <style>, style= and on*= attributes."""
    import re

    offending = []
    for template in (REPO / "templates").rglob("*.html"):
        text = template.read_text()
        for pattern in (r"<script(?![^>]*\bsrc=)", r"<style", r"\sstyle=", r"\son[a-z]+=", r"hx-on", r"javascript:"):
            if re.search(pattern, text):
                offending.append(f"{template.relative_to(REPO)}: {pattern}")
    assert not offending, offending


HTTPS_PROBE = """
import django
django.setup()
from django.test import Client
c = Client()
plain = c.get('/accounts/login/')
print('redirect', plain.status_code, plain.get('Location'))
secure = c.get('/accounts/login/', secure=True)
print('hsts', secure.get('Strict-Transport-Security'))
print('csrf-secure', bool(secure.cookies['csrftoken']['secure']))
proxied = c.get('/accounts/login/', HTTP_X_FORWARDED_PROTO='https')
print('proxied', proxied.status_code)
from django.conf import settings
print('session-secure', settings.SESSION_COOKIE_SECURE)
"""


def _probe(tmp_path, **env) -> dict:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "kvmweb.settings",
        "KVMWEB_DATA_DIR": str(tmp_path),
        "KVMWEB_SECRET_KEY": "probe",
        "KVMWEB_ALLOWED_HOSTS": "testserver",
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", HTTPS_PROBE], cwd=REPO, env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in result.stdout.splitlines()}


def test_kvmweb_https_turns_on_secure_cookies_hsts_and_the_redirect(tmp_path):
    on = _probe(tmp_path, KVMWEB_HTTPS="true")
    assert on["redirect"] == "301 https://testserver/accounts/login/"
    assert on["hsts"] == "max-age=31536000; includeSubDomains"
    assert on["csrf-secure"] == "True" and on["session-secure"] == "True"
    assert on["proxied"].startswith("301")  # X-Forwarded-Proto is not trusted unless told

    proxied = _probe(tmp_path, KVMWEB_HTTPS="true", KVMWEB_BEHIND_PROXY="true")
    assert proxied["proxied"] == "200"

    off = _probe(tmp_path)
    assert off["redirect"].startswith("200") and off["hsts"] == "None" and off["session-secure"] == "False"


def test_a_bad_kvmweb_https_value_stops_kvmweb(tmp_path):
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "kvmweb.settings", "KVMWEB_DATA_DIR": str(tmp_path),
                   "KVMWEB_HTTPS": "maybe"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "KVMWEB_HTTPS must be a boolean" in result.stderr
