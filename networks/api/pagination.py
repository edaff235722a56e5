"""List pages of the API, with bounds on what a query string can ask for."""

from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination, LimitOffsetPagination

MAX_LIMIT = 1000
MAX_OFFSET = 2**31 - 1  # far past any row count; keeps OFFSET within every database's integer


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """`?limit=` is capped at MAX_LIMIT (junk or a negative value means the default, as in DRF);
    an `?offset=` past MAX_OFFSET is a 400, not a database overflow."""

    max_limit = MAX_LIMIT

    def get_offset(self, request):
        raw = request.query_params.get(self.offset_query_param, "")
        if raw.isascii() and raw.isdigit() and int(raw) > MAX_OFFSET:
            raise ValidationError({self.offset_query_param: [f"At most {MAX_OFFSET}."]})
        return super().get_offset(request)


class NewestFirstCursorPagination(CursorPagination):
    """The audit log and operations: newest first by (created_at, id), a cursor per page (`next`,
    `previous`), no COUNT over the table and no deep OFFSET (DRF skips at most the rows that share
    the cursor's created_at). `?limit=` sets the page size
    (at most MAX_LIMIT); a cursor that cannot be read is a 400."""

    ordering = ("-created_at", "-id")
    page_size_query_param = "limit"
    max_page_size = MAX_LIMIT

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
            # DRF only decodes the position: a forged one would reach the query (a 500)
            if cursor is not None and cursor.position is not None and parse_datetime(cursor.position) is None:
                raise ValueError(cursor.position)
        except (NotFound, ValueError):
            raise ValidationError({self.cursor_query_param: ["Invalid cursor: use the next/previous links."]}) from None
        return cursor
