import contextlib
import html
import logging
import re

from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver
from django.http import HttpResponseBadRequest, JsonResponse

from networks.choices import AuditSource
from networks.services.audit import RequestAudit, audit_record, client_address, request_audit

logger = logging.getLogger(__name__)


class PagesLoginRequiredMiddleware(LoginRequiredMiddleware):
    """Pages redirect anonymous users to the login page; the API answers 401 itself."""

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.path_info.startswith("/api/"):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)


class RequestContextMiddleware:
    """Tells the audit log where the request being served came from."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = client_address.set(request.META.get("REMOTE_ADDR") or None)
        try:
            return self.get_response(request)
        finally:
            client_address.reset(token)


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REFUSAL_ACTIONS = {400: "request.rejected", 403: "request.denied"}
REASON_MAX = 200
PATH_MAX = 255  # AuditEvent.object_name
VALUES_MAX = 1000  # submitted values compared with a reason, at most
ERRORLIST = re.compile(r'<(?:ul|p) class="errorlist[^"]*"[^>]*>\s*(?:<li>)?(.*?)</(?:li|p)>', re.DOTALL)


def printable(text: str) -> str:
    """`text` on one line, without control characters (NUL cannot even be stored)."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def request_source(request) -> str:
    return AuditSource.API if request.path_info.startswith("/api/") else AuditSource.WEB


def _first_message(data, depth: int = 0) -> str:
    """The first error message of a DRF error body, with the field it is about."""
    if depth > 10:
        return ""
    if isinstance(data, dict):
        for key, value in data.items():
            message = _first_message(value, depth + 1)
            if message:
                return message if key in ("detail", "non_field_errors") else f"{key}: {message}"
        return ""
    if isinstance(data, list | tuple):
        return next((m for m in (_first_message(v, depth + 1) for v in data) if m), "")
    return str(data)


def _first_html_error(body: str) -> str:
    match = ERRORLIST.search(body)
    return html.unescape(re.sub(r"<[^>]+>", " ", match.group(1))) if match else ""


def _raw_reason(response, state: RequestAudit) -> str:
    if state.exception_reason:
        return state.exception_reason
    if getattr(response, "data", None) is not None:
        return _first_message(response.data)
    if response.streaming:
        return ""
    body = response.content[:200_000].decode("utf-8", "replace")
    if "html" in response.get("Content-Type", ""):
        return _first_html_error(body)
    return body.strip().split("\n", 1)[0]


def _flatten(data, into: list[str], depth: int = 0) -> None:
    if len(into) >= VALUES_MAX or depth > 10:
        return
    if hasattr(data, "lists"):  # QueryDict: every value of every key
        for _, values in data.lists():
            _flatten(values, into, depth + 1)
    elif isinstance(data, dict):
        for value in data.values():
            _flatten(value, into, depth + 1)
    elif isinstance(data, list | tuple):
        for value in data:
            _flatten(value, into, depth + 1)
    elif data is not None and not hasattr(data, "read"):  # not an uploaded file
        into.append(str(data))


def submitted_values(request, response) -> list[str]:
    """What the client sent (body and query string), as parsed by the view."""
    values: list[str] = []
    drf_request = (getattr(response, "renderer_context", None) or {}).get("request")
    with contextlib.suppress(Exception):  # a body the view could not parse reached no message
        _flatten(drf_request.data if drf_request is not None else request.POST, values)
    _flatten(request.GET, values)
    return values


def without_values(reason: str, values: list[str]) -> str:
    """`reason` with every submitted value (that a message may quote) replaced by "…"."""
    for value in sorted({v for v in values if 2 <= len(v) <= len(reason) and v in reason}, key=len, reverse=True):
        reason = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", "…", reason)
    return reason


def refusal_reason(request, response, state: RequestAudit) -> str:
    """The first error message of a refused request, never the values it carried."""
    reason = printable(_raw_reason(response, state)[:2000])
    return without_values(reason, submitted_values(request, response))[:REASON_MAX]


class RefusalAuditMiddleware:
    """Audits every write kvmweb refuses (400, 403), on pages and the API: who, from where,
    which request and why. A refusal that authorize() already audited is not recorded twice."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        state = RequestAudit()
        token = request_audit.set(state)
        # The session's user: DRF replaces request.user with AnonymousUser when it refuses
        # the request's authentication (a missing CSRF token), yet whose session it was matters.
        session_user = getattr(request, "user", None)
        try:
            response = self.get_response(request)
        finally:
            request_audit.reset(token)
        action = REFUSAL_ACTIONS.get(response.status_code)
        if action and request.method in WRITE_METHODS and not state.denial_recorded:
            user = getattr(request, "user", None)
            actor = user if user is not None and user.is_authenticated else session_user
            self.record(request, response, action, state, actor)
        return response

    def process_exception(self, request, exception):
        state = request_audit.get()
        if state is not None:
            state.exception_reason = str(exception)

    def record(self, request, response, action: str, state: RequestAudit, actor) -> None:
        path = printable(request.path)[:PATH_MAX]
        reason = refusal_reason(request, response, state)
        detail = f"{request.method} {path} answered {response.status_code}"
        try:
            audit_record(
                action=action,
                source=request_source(request),
                actor=actor,
                object_type="request",
                object_name=path,
                detail=f"{detail}: {reason}" if reason else detail,
            )
        except Exception:  # the refusal stands either way; say loudly that it went unrecorded
            logger.exception("Could not audit the refusal of %s %s", request.method, path)


# Connected here, next to the refusals of requests: every process that serves requests
# imports this module (it is in MIDDLEWARE).
@receiver(user_login_failed, dispatch_uid="kvmweb-audit-login-failed")
def audit_failed_login(sender, credentials, request=None, **kwargs):
    """A failed login: the username tried (never the password) and where from."""
    username = printable(str(credentials.get("username", "")))[:150]
    audit_record(
        action="user.login_failed",
        source=request_source(request) if request is not None else AuditSource.WEB,
        object_type="user",
        object_name=username,
        detail=f"Failed login as {username!r}." if username else "Failed login without a username.",
    )


NUL_REFUSED = "A NUL character is not allowed in a URL or a query parameter."


class RejectNulMiddleware:
    """Refuses, with a 400, a request whose path or query parameters carry a NUL.

    PostgreSQL can neither store nor compare a string with NUL (a lookup with one is a 500),
    and no name, address or filter kvmweb takes can contain one. Form fields and JSON bodies
    are refused field by field, with their own message, by the forms, serializers and services.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or _has_nul(request.GET):
            if request.path_info.startswith("/api/"):  # the API answers in JSON, as its schema says
                return JsonResponse({"detail": NUL_REFUSED}, status=400)
            return HttpResponseBadRequest(NUL_REFUSED)
        return self.get_response(request)


def _has_nul(query_dict) -> bool:
    return any("\x00" in key or any("\x00" in value for value in values) for key, values in query_dict.lists())
