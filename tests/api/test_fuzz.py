"""Every API operation, fed what its OpenAPI schema allows and what it does not (schemathesis).

Each operation runs as an operator and as a viewer, logged in with a session (cookie and CSRF
token, as a browser's script would send them): no answer is a 500, every answer matches the
schema the app serves at /api/schema/, and no write of a viewer succeeds. Writes only queue
Operations (no worker runs here), so nothing reaches a hypervisor beyond the demo host's mirror.

`make test` runs a few examples of each operation; `make fuzz` runs many more
(KVMWEB_FUZZ_EXAMPLES, default 300 there).
"""

import os

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.urls import Resolver404, resolve
from django.utils.crypto import get_random_string
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from networks.models import Guest, Network, Operation
from tests.factories import UserFactory

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("KVMWEB_FUZZ_EXAMPLES", "8"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
OWN_ACCOUNT = "/api/tokens/"  # every user manages their own API tokens: not a change to the fleet
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
# Every write takes a JSON object; schemathesis' negative bodies are mostly objects too, so a
# share of writes sends a JSON value of another type instead.
KEEP = object()
OTHER_BODIES = st.one_of(
    st.just(KEEP),
    st.just(KEEP),
    st.sampled_from([[], "x", 5, 1.5, True, None, [{"mac": "52:54:00:00:00:01"}]]),
    st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
)


class InTransactionApp:
    """The app as gunicorn runs it, but answering inside the test's transaction: as Django's
    test client does, a request must not close the database connection that holds it."""

    def __init__(self):
        self.handler = WSGIHandler()

    def __call__(self, environ, start_response):
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            response = self.handler(environ, start_response)
            try:
                return [b"".join(response)]
            finally:
                response.close()
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)


@pytest.fixture
def wsgi_app(settings):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]  # the host schemathesis' WSGI client names
    return InTransactionApp()


def _session(client, user) -> tuple[dict, dict]:
    """What a logged-in browser's script sends: the session cookie, and a CSRF token in a cookie
    and a header. (Sessions, not API tokens: the token model is not what this test is about.)"""
    client.force_login(user)
    csrf = get_random_string(32)
    cookies = {
        django_settings.SESSION_COOKIE_NAME: client.cookies[django_settings.SESSION_COOKIE_NAME].value,
        django_settings.CSRF_COOKIE_NAME: csrf,
    }
    return cookies, {"X-CSRFToken": csrf}


def _schema_from_app(client, wsgi_app):
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = schemathesis.openapi.from_dict(response.json())
    schema.app = wsgi_app  # calls go to the app in this process, not over a socket
    return schema


def _object_ids(demo_host) -> list[int]:
    """Ids that name real rows, so that generated paths reach more than 404s."""
    network = Network.objects.get(host=demo_host, name="default")
    return sorted(
        {demo_host.pk, network.pk, Guest.objects.filter(host=demo_host).first().pk, Operation.objects.first().pk}
    )


def _routed(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


def _fuzz(operation, cookies: dict, headers: dict, ids: list[int], *, viewer: bool) -> None:
    strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in MODES))

    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize="KVMWEB_FUZZ_EXAMPLES" not in os.environ,  # `make test` is reproducible
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, real_id=st.one_of(st.none(), st.sampled_from(ids)), other_body=OTHER_BODIES)
    def run(case, real_id, other_body):
        if real_id is not None and "id" in (case.path_parameters or {}):
            case.path_parameters["id"] = real_id
        if other_body is not KEEP and case.method.upper() in WRITE_METHODS:
            case.body, case.media_type = other_body, "application/json"
        response = case.call(headers=headers, cookies=cookies)
        if _routed(case.formatted_path):
            case.validate_response(response, checks=CHECKS, headers=headers)
        else:  # a path parameter that no URL takes (id "null"): Django's own 404 page, not an API answer
            assert response.status_code == 404, f"{case.formatted_path} answered {response.status_code}"
        if viewer and case.method.upper() in WRITE_METHODS and not case.operation.path.startswith(OWN_ACCOUNT):
            assert not 200 <= response.status_code < 300, (
                f"a viewer's {case.method} {case.formatted_path} answered {response.status_code}"
            )

    run()


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_every_operation_answers_within_its_schema(demo_host, client, wsgi_app, role):
    cookies, headers = _session(client, UserFactory(username=f"fuzz-{role}", role=role))
    schema = _schema_from_app(client, wsgi_app)
    ids = _object_ids(demo_host)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25  # the whole API, not an empty schema
    failures = []
    for operation in operations:
        try:
            _fuzz(operation, cookies, headers, ids, viewer=role == "viewer")
        except (Exception, BaseExceptionGroup) as error:  # collect every failing operation, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {error}")
    assert not failures, "\n\n".join(failures)


IMPORT_ROW = "52:54:00:00:77:02,192.168.122.78,f2"
VALID_WRITES = [
    ("POST", "/api/networks/{id}/{collection}/", {"collection": "dhcp-hosts"},
     {"mac": "52:54:00:00:77:01", "ip": "192.168.122.77", "name": "fuzz"}),
    ("POST", "/api/networks/{id}/{collection}/", {"collection": "dns-txt"}, {"name": "fuzz", "value": "v"}),
    ("PATCH", "/api/networks/{id}/{collection}/{key}/", {"collection": "portgroups", "key": "tenant-b"},
     {"name": "tenant-b", "inbound_average": 1000}),
    ("DELETE", "/api/networks/{id}/{collection}/{key}/", {"collection": "dns-txt", "key": "fleet"}, None),
    ("POST", "/api/networks/{id}/dhcp-hosts/import/", {}, {"csv": IMPORT_ROW}),
    ("POST", "/api/networks/{id}/dhcp-hosts/import/", {}, {"csv": IMPORT_ROW, "dry_run": True}),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "parameters", "body"), VALID_WRITES)
def test_a_valid_section_write_answers_as_documented(demo_host, client, wsgi_app, method, path, parameters, body):
    """The generated input above rarely makes a valid entry; these do, and their answer is checked too."""
    cookies, headers = _session(client, UserFactory(username="fuzz-operator", role="operator"))
    operation = _schema_from_app(client, wsgi_app)[path][method]
    network = Network.objects.get(host=demo_host, name="sriov-pool" if "portgroups" in str(parameters) else "default")
    media = {"body": body, "media_type": "application/json"} if body is not None else {}
    case = operation.Case(path_parameters={"id": network.pk, **parameters}, **media)
    response = case.call(headers=headers, cookies=cookies)
    assert response.status_code in (200, 202), response.text
    case.validate_response(response, checks=CHECKS, headers=headers)


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_port_forward_operations_answer_within_their_schema(demo_host, client, wsgi_app, role):
    """The port forward endpoints again, on a host with a host worker queue and a forward whose id
    the generated paths use, so generated input reaches the checks and not only a 400 or a 404."""
    from networks.models import Host, PortForward

    Host.objects.filter(pk=demo_host.pk).update(queue="demo-host")
    web01 = Guest.objects.get(host=demo_host, name="web01")
    forward = PortForward.objects.create(host=demo_host, guest=web01, guest_name="web01", guest_mac="52:54:00:0a:00:11",
                                         host_port_start=8080, host_port_end=8080, guest_port_start=80,
                                         guest_port_end=80)  # fmt: skip
    cookies, headers = _session(client, UserFactory(username=f"fuzz-{role}", role=role))
    schema = _schema_from_app(client, wsgi_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [operation for operation in operations if operation.path.startswith("/api/port-forwards/")]
    assert len(operations) == 7  # list, create, read, patch, delete, reapply one, reapply a host
    failures = []
    for operation in operations:
        try:
            _fuzz(operation, cookies, headers, [forward.pk, demo_host.pk, web01.pk], viewer=role == "viewer")
        except (Exception, BaseExceptionGroup) as error:
            failures.append(f"{operation.method.upper()} {operation.path}: {error}")
    assert not failures, "\n\n".join(failures)
