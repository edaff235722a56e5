"""Small helpers shared by the page views."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.shortcuts import render

from networks.choices import AuditSource

PAGE_SIZE = 50


def paginate(request, queryset, per_page: int = PAGE_SIZE):
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


def render_page(request, template: str, partial: str | None = None, context: dict | None = None, **kwargs):
    """One decision for htmx: a partial for htmx requests that target it, the full page otherwise."""
    if partial and getattr(request, "htmx", False) and not request.htmx.boosted:
        return render(request, partial, context, **kwargs)
    return render(request, template, context, **kwargs)


WEB = AuditSource.WEB
