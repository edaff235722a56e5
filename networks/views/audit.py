from django.shortcuts import get_object_or_404, render

from networks import selectors
from networks.forms import AuditFilterForm
from networks.models import AuditEvent
from networks.services.drift import xml_diff

from .common import paginate


def audit_list(request):
    form = AuditFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    host = filters.get("host")
    events = selectors.audit_list(
        action=filters.get("action") or None,
        actor=filters.get("actor") or None,
        host_id=host.pk if host else None,
        source=filters.get("source") or None,
        search=filters.get("q") or None,
    )
    return render(request, "networks/audit_list.html", {"form": form, "page": paginate(request, events)})


def audit_detail(request, pk):
    event = get_object_or_404(AuditEvent.objects.select_related("operation", "actor"), pk=pk)
    diff = xml_diff(event.before_xml, event.after_xml) if event.before_xml and event.after_xml else ""
    return render(request, "networks/audit_detail.html", {"event": event, "diff": diff})
