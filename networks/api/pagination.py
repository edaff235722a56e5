"""List pages of the API, with bounds on what a query string can ask for."""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

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
