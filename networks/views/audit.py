from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_safe

from networks import selectors
from networks.forms import AuditFilterForm
from networks.middleware import printable
from networks.models import AuditEvent
from networks.services.audit import EXPORT_FORMATS, audit_export
from networks.services.drift import xml_diff

from .access import visible
from .common import paginate


def _host_names(request) -> list[str]:
    """Every host name the user's events mention, removed hosts included."""
    names = visible(request, AuditEvent.objects.exclude(host_name="")).values_list("host_name", flat=True)
    return list(names.order_by().distinct())


def _filtered(request, filters: dict):
    events = selectors.audit_list(
        action=filters.get("action") or None,
        actor=filters.get("actor") or None,
        host_name=filters.get("host") or None,
        source=filters.get("source") or None,
        search=filters.get("q") or None,
    )
    return visible(request, events)


def audit_list(request):
    form = AuditFilterForm(request.GET or None, host_names=_host_names(request))
    # The list shows the form's errors and every event; the export refuses instead.
    events = _filtered(request, form.cleaned_data if form.is_valid() else {})
    export_query = request.GET.copy()
    export_query.pop("page", None)
    context = {"form": form, "page": paginate(request, events), "export_query": export_query.urlencode()}
    return render(request, "networks/audit_list.html", context)


@require_safe
def audit_export_view(request, export_format: str):
    """The list's events (same filters) as a download, streamed: any number of events."""
    form = AuditFilterForm(request.GET or None, host_names=_host_names(request))
    if form.is_bound and not form.is_valid():
        # An export must hold exactly what was asked for: a filter it cannot read is an error.
        errors = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in form.errors.items())
        return HttpResponse(
            f"Invalid filter: {printable(errors)}", status=400, content_type="text/plain; charset=utf-8"
        )
    response = StreamingHttpResponse(
        audit_export(_filtered(request, form.cleaned_data if form.is_bound else {}), export_format),
        content_type=EXPORT_FORMATS[export_format],
    )
    response["Content-Disposition"] = f'attachment; filename="kvmweb-audit.{export_format}"'
    return response


def audit_detail(request, pk):
    event = get_object_or_404(visible(request, AuditEvent.objects), pk=pk)
    diff = xml_diff(event.before_xml, event.after_xml) if event.before_xml and event.after_xml else ""
    return render(request, "networks/audit_detail.html", {"event": event, "diff": diff})
