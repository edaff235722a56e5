"""Small helpers shared by the page views."""

from __future__ import annotations

from django.core.paginator import Paginator

from networks.choices import AuditSource

PAGE_SIZE = 50


def paginate(request, queryset, per_page: int = PAGE_SIZE):
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


WEB = AuditSource.WEB
