"""How the list pages read their query string: filters (one FilterSet per list), sorting,
page and rows per page, and the keyset cursor of the audit log and operations.

Every value is validated: a sort by an unknown column is ignored, a page or rows-per-page value
that is not one of the choices means the default, and a cursor that cannot be read is a 400."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.core.exceptions import BadRequest
from django.core.paginator import EmptyPage, PageNotAnInteger
from django.db.models import Q

from networks.filtersets import page_form

PER_PAGE_CHOICES = (25, 50, 100, 250)
PER_PAGE_DEFAULT = 50
SORT_MAX = 5  # columns a sort may name
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR_RE = re.compile(r"(\d{1,17})\.(\d{1,10})")
_PAGE_RE = re.compile(r"[0-9]{1,9}")
ID_MAX = 2**31 - 1


def per_page_param(request, table) -> int:
    raw = request.GET.get(table.prefixed_per_page_field, "")
    return int(raw) if raw in {str(n) for n in PER_PAGE_CHOICES} else PER_PAGE_DEFAULT


def _page_param(request, table) -> int:
    raw = request.GET.get(table.prefixed_page_field, "")
    return int(raw) if raw.isascii() and _PAGE_RE.fullmatch(raw) and int(raw) > 0 else 1


def _remember_query(request, table, *dropped) -> None:
    """What the rows-per-page form carries along (the filters and the sort), minus `dropped`."""
    drop = {table.prefixed_per_page_field, table.prefixed_page_field, *dropped}
    table.kept_query = [(key, request.GET.getlist(key)) for key in request.GET if key not in drop]
    table.per_page_choices = PER_PAGE_CHOICES


def filtered(request, filterset_class, queryset):
    """The FilterSet the page shares with the API, bound to the query string; its form shows only
    the page's fields, and a value it cannot read narrows nothing."""
    filterset = filterset_class(request.GET or None, queryset=queryset, request=request)
    page_form(filterset)
    return filterset


def table_page(request, table):
    """Sort (by the table's columns only), then paginate in the database; counts for the page's rows."""
    sort = [alias for alias in request.GET.getlist(table.prefixed_order_by_field)[:SORT_MAX] if len(alias) <= 64]
    if sort:
        table.order_by = sort  # django-tables2 drops names that are not sortable columns
    per_page = per_page_param(request, table)
    try:
        table.paginate(per_page=per_page, page=_page_param(request, table))
    except (EmptyPage, PageNotAnInteger):
        table.page = table.paginator.page(table.paginator.num_pages)
    table.per_page_value = per_page
    _remember_query(request, table)
    if table.page_counts:
        records = list(table.page.object_list.data)  # runs the page's query once; the template reuses it
        table.fill_page_counts(records)
    return table


@dataclass(frozen=True)
class Keyset:
    """Cursors of the neighbouring pages, "" where there is none."""

    newer: str
    older: str


def encode_cursor(row) -> str:
    return f"{(row.created_at - _EPOCH) // timedelta(microseconds=1)}.{row.pk}"


def decode_cursor(raw: str) -> tuple[datetime, int]:
    match = _CURSOR_RE.fullmatch(raw) if raw.isascii() else None
    if not match or not 0 < int(match[2]) <= ID_MAX:
        raise BadRequest("Invalid cursor: use the newer/older links of the list.")
    try:
        return _EPOCH + timedelta(microseconds=int(match[1])), int(match[2])
    except OverflowError:
        raise BadRequest("Invalid cursor: use the newer/older links of the list.") from None


def keyset_rows(request, queryset, per_page: int) -> tuple[list, Keyset]:
    """A page of `queryset` (newest first by (created_at, id)) after `?older=` or before `?newer=`:
    one query of per_page + 1 rows through the (created_at, id) index; no COUNT, no OFFSET."""
    older, newer = request.GET.get("older", ""), request.GET.get("newer", "")
    if older and newer:
        raise BadRequest("Give either older or newer, not both.")
    if newer:
        at, pk = decode_cursor(newer)
        after = Q(created_at__gt=at) | Q(created_at=at, id__gt=pk)
        rows = list(queryset.filter(created_at__gte=at).filter(after).order_by("created_at", "id")[: per_page + 1])
        if rows:  # past the newest row: the first page
            more = len(rows) > per_page
            rows = rows[:per_page][::-1]
            return rows, Keyset(newer=encode_cursor(rows[0]) if more else "", older=encode_cursor(rows[-1]))
    rows = queryset.order_by("-created_at", "-id")
    if older:
        at, pk = decode_cursor(older)
        rows = rows.filter(created_at__lte=at).filter(Q(created_at__lt=at) | Q(created_at=at, id__lt=pk))
    rows = list(rows[: per_page + 1])
    more = len(rows) > per_page
    rows = rows[:per_page]
    newer_cursor = encode_cursor(rows[0]) if older and rows else ""
    return rows, Keyset(newer=newer_cursor, older=encode_cursor(rows[-1]) if more else "")


def keyset_table(request, table_class, queryset):
    """A table of one keyset page; the template shows newer/older links and the rows-per-page choice."""
    probe = table_class([])
    per_page = per_page_param(request, probe)
    rows, keyset = keyset_rows(request, queryset, per_page)
    table = table_class(rows)
    table.keyset, table.per_page_value = keyset, per_page
    _remember_query(request, table, "older", "newer")
    return table
