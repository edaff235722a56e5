"""Error pages that are also audit events."""

from django.shortcuts import render

from networks.middleware import PATH_MAX, REASON_MAX, printable, request_source
from networks.services.audit import audit_record, note_denial_recorded


def csrf_failure(request, reason: str = ""):
    """CSRF_FAILURE_VIEW: a refused form post (stale page, missing cookie, another site's
    form) is audited with who and from where, and answered with a page that says what to do."""
    path = printable(request.path)[:PATH_MAX]
    reason = printable(reason)[:REASON_MAX]
    audit_record(
        action="request.csrf_failed",
        source=request_source(request),
        actor=getattr(request, "user", None),
        object_type="request",
        object_name=path,
        detail=f"{request.method} {path} refused (CSRF): {reason}",
    )
    note_denial_recorded()
    return render(request, "networks/csrf_failure.html", {"reason": reason}, status=403)
