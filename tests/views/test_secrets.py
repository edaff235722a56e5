"""No secret reaches a page, the API, the audit log, an operation's log or the log output.

The secrets planted: an API token key, the admin password `bootstrap` generates, and the user
name in a host URI's user information. Every URL pattern that can be filled in from the demo
fleet is fetched with GET.
"""

from __future__ import annotations

import io
import logging
import re

import pytest
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.exceptions import NoReverseMatch
from django.urls.resolvers import RoutePattern

from networks.api.netupdate import COLLECTIONS
from networks.choices import AuditSource
from networks.forms import SECTION_FIELDS
from networks.models import ApiToken, AuditEvent, Guest, Host, Network, Operation
from networks.services import hosts as host_services
from networks.services.tokens import token_create

URI_USER = "planteduserinfo"


def _patterns(resolver, prefix=""):
    for entry in resolver.url_patterns:
        name = f"{prefix}{entry.namespace}:" if isinstance(entry, URLResolver) and entry.namespace else prefix
        if isinstance(entry, URLResolver):
            if entry.namespace == "admin":
                continue  # Django's own; its models are checked by test_admin_lists_no_key_column
            yield from _patterns(entry, name)
        elif isinstance(entry, URLPattern) and entry.name:
            yield f"{prefix}{entry.name}", entry


def _parameter_names(pattern: URLPattern) -> list[str]:
    if isinstance(pattern.pattern, RoutePattern):
        return list(pattern.pattern.converters)
    return list(pattern.pattern.regex.groupindex)


def _candidates(world: dict, url_name: str, parameter: str) -> list:
    """Values for one URL parameter, chosen from the URL's name."""
    if parameter == "pk":
        for prefix, key in (("host", "host"), ("network", "network"), ("guest", "guest"), ("operation", "operation"),
                            ("audit", "audit"), ("device", "device"), ("token", "token")):  # fmt: skip
            if prefix in url_name:
                return world[key]
        return []
    return {
        "host_pk": world["host"],
        "section": list(SECTION_FIELDS),
        "collection": list(COLLECTIONS),
        "export_format": ["csv", "jsonl"],
        "format": ["json"],
    }.get(parameter, [])


def _urls(world: dict) -> list[str]:
    urls = []
    for url_name, pattern in _patterns(get_resolver()):
        names = _parameter_names(pattern)
        if not names:
            candidates = [{}]
        elif len(names) == 1:
            candidates = [{names[0]: value} for value in _candidates(world, url_name, names[0])]
        else:
            first, second = names[:2]
            candidates = [
                {first: a, second: b}
                for a in _candidates(world, url_name, first)
                for b in _candidates(world, url_name, second)
            ]
        for kwargs in candidates:
            try:
                urls.append(reverse(url_name, kwargs=kwargs))
            except NoReverseMatch:
                continue
    return sorted(set(urls))


@pytest.fixture
def planted(demo_host, admin, monkeypatch, capsys):
    """Every secret kvmweb handles, planted through the ordinary paths."""
    monkeypatch.delenv("KVMWEB_ADMIN_PASSWORD", raising=False)
    call_command("bootstrap", "--no-demo", "--admin", "root-admin")
    printed = capsys.readouterr().out
    password = re.search(r"password: (\S+)", printed).group(1)
    token, key = token_create(user=admin, name="ci", actor=admin, source=AuditSource.WEB)
    call_command("apitoken", admin.username)
    cli_key = capsys.readouterr().out.strip()
    host_services.host_create(
        name="remote",
        uri=f"qemu+ssh://{URI_USER}@kvm9.example.com/system",
        actor=admin,
        source=AuditSource.WEB,
        sync=False,  # never connect: the test reaches no machine but this one
    )
    return {"token key": key, "cli token key": cli_key, "generated password": password, "URI user": URI_USER}


def _world(demo_host) -> dict:
    network = Network.objects.get(host=demo_host, name="default")
    return {
        "host": list(Host.objects.values_list("pk", flat=True)),
        "network": [network.pk],
        "guest": [Guest.objects.filter(host=demo_host).first().pk],
        "operation": list(Operation.objects.values_list("pk", flat=True)),
        "audit": list(AuditEvent.objects.values_list("pk", flat=True)),
        "device": [demo_host.node_devices.first().pk],
        "token": list(ApiToken.objects.values_list("pk", flat=True)),
    }


def _leaks(text: str, secrets: dict) -> list[str]:
    return [what for what, secret in secrets.items() if secret in text]


def test_no_secret_in_any_page_api_answer_audit_row_operation_log_or_log_output(
    planted, demo_host, admin, client, caplog
):
    caplog.set_level(logging.DEBUG)
    client.force_login(admin)
    urls = _urls(_world(demo_host))
    assert len(urls) >= 40, urls  # every page and API list, not a handful
    fetched = 0
    for url in urls:
        response = client.get(url, {"format": "json"} if url.startswith("/api/") else {})
        assert response.status_code < 500, url
        body = (b"".join(response) if response.streaming else response.content).decode("utf-8", "replace")
        # The API answers a host's URI as it was registered (scripts' contract): passwords are
        # refused in URIs, so its user information is a login name, kept off the pages only.
        secrets = {k: v for k, v in planted.items() if k != "URI user"} if url.startswith("/api/") else planted
        assert not _leaks(body, secrets), (url, _leaks(body, secrets))
        fetched += response.status_code == 200
    assert fetched >= 35

    for event in AuditEvent.objects.all():
        row = " ".join(str(value) for value in event.__dict__.values())
        assert not _leaks(row, planted), (event.action, _leaks(row, planted))
    for operation in Operation.objects.all():
        row = f"{operation.log} {operation.error} {operation.params} {operation.result}"
        assert not _leaks(row, planted), (operation.kind, _leaks(row, planted))
    assert not _leaks(caplog.text, planted), _leaks(caplog.text, planted)


def test_the_secret_check_finds_a_planted_secret(planted):
    """The grep itself works: a page that did show a key would be caught."""
    assert _leaks(f"<code>{planted['token key']}</code>", planted) == ["token key"]


def test_admin_lists_no_key_column(planted, admin, client):
    admin.is_staff = admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    index = client.get("/admin/").content.decode()
    assert "Api token" not in index and "authtoken" not in index
    assert not _leaks(index, planted)


def test_bootstrap_in_a_container_prints_no_password(db, monkeypatch):
    monkeypatch.delenv("KVMWEB_ADMIN_PASSWORD", raising=False)
    out = io.StringIO()
    call_command("bootstrap", "--no-demo", "--no-generated-password", "--admin", "boxed", stdout=out)
    assert "password:" not in out.getvalue()
    assert "not created" in out.getvalue() and "KVMWEB_ADMIN_PASSWORD" in out.getvalue()
    from django.contrib.auth import get_user_model

    assert not get_user_model().objects.filter(username="boxed").exists()

    monkeypatch.setenv("KVMWEB_ADMIN_PASSWORD", "from-the-env-file")
    out = io.StringIO()
    call_command("bootstrap", "--no-demo", "--no-generated-password", "--admin", "boxed", stdout=out)
    assert "from-the-env-file" not in out.getvalue()
    assert get_user_model().objects.get(username="boxed").check_password("from-the-env-file")


def test_docker_compose_runs_bootstrap_without_generating_a_password():
    from pathlib import Path

    compose = (Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text()
    assert re.search(r"manage\.py bootstrap [^&]*--no-generated-password", compose)
