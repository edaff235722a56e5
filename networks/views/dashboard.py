"""The fleet overview: a fixed number of queries whatever the fleet's size (networks/overview.py)."""

import re

from django.http import HttpResponseBadRequest
from django.shortcuts import render

from networks import overview
from networks.models import AuditEvent, Guest
from networks.services.permissions import visible_host_ids

from .access import visible


def dashboard(request):
    page_number = request.GET.get("hosts_page", "1")
    # ASCII digits only: "²".isdigit() is true, and int() refuses it
    if not re.fullmatch(r"[0-9]{1,9}", page_number):
        return HttpResponseBadRequest("hosts_page must be a page number.", content_type="text/plain; charset=utf-8")
    host_ids = visible_host_ids(request.user)
    failed_count, failed = overview.failed_operations(host_ids)
    context = {
        "host_states": overview.host_state_counts(host_ids),
        "hosts_page": overview.hosts_page(host_ids, int(page_number)),
        "networks": overview.network_counts(host_ids),
        "guest_count": visible(request, Guest.objects).count(),
        "pools": overview.fullest_pools(host_ids),
        "pool_warn_percent": round(100 * overview.POOL_WARN),
        "failed_count": failed_count,
        "failed_operations": failed,
        "vf_pools": overview.vf_pools(host_ids),
        "recent_events": overview.recent_audit(visible(request, AuditEvent.objects)),
        "drifted_networks": overview.drifted_networks(host_ids),
    }
    return render(request, "networks/dashboard.html", context)
