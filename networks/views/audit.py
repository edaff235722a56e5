from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_safe

from networks.filtersets import AuditEventFilterSet
from networks.middleware import printable
from networks.models import AuditEvent, Host
from networks.services.audit import EXPORT_FORMATS, audit_export
from networks.services.drift import xml_diff
from networks.tables import AuditTable

from .access import visible
from .lists import filtered, keyset_table
from .undo import undo_context

LIST_DEFERRED = ("before_xml", "after_xml", "detail", "chain_hash")


def _host_names(request) -> list[str]:
    """The names the host filter proposes: the user's hosts (a removed host's name can be typed)."""
    return list(visible(request, Host.objects.order_by("name"), "pk").values_list("name", flat=True))


def audit_list(request):
    """Newest first, a keyset page at a time (no COUNT over the table, no OFFSET)."""
    filterset = filtered(request, AuditEventFilterSet, visible(request, AuditEvent.objects.defer(*LIST_DEFERRED)))
    table = keyset_table(request, AuditTable, filterset.qs)
    export_query = request.GET.copy()
    for name in ("older", "newer", "per_page"):
        export_query.pop(name, None)
    context = {
        "form": filterset.form,
        "table": table,
        "host_names": _host_names(request),
        "export_query": export_query.urlencode(),
    }
    return render(request, "networks/audit_list.html", context)


@require_safe
def audit_export_view(request, export_format: str):
    """The list's events (same filters) as a download, streamed: any number of events."""
    # Every filter of the API's list (host by id, operation too), so a link from the page works
    filterset = AuditEventFilterSet(request.GET or None, queryset=visible(request, AuditEvent.objects), request=request)
    if filterset.is_bound and not filterset.form.is_valid():
        # An export must hold exactly what was asked for: a filter it cannot read is an error.
        errors = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in filterset.form.errors.items())
        return HttpResponse(
            f"Invalid filter: {printable(errors)}", status=400, content_type="text/plain; charset=utf-8"
        )
    response = StreamingHttpResponse(
        audit_export(filterset.qs, export_format), content_type=EXPORT_FORMATS[export_format]
    )
    response["Content-Disposition"] = f'attachment; filename="kvmweb-audit.{export_format}"'
    return response


def audit_detail(request, pk):
    event = get_object_or_404(visible(request, AuditEvent.objects), pk=pk)
    diff = xml_diff(event.before_xml, event.after_xml) if event.before_xml and event.after_xml else ""
    context = {"event": event, "diff": diff, **undo_context(request, event)}  # undo: the offer and its links
    return render(request, "networks/audit_detail.html", context)
