"""Small helpers shared by the page views."""

from __future__ import annotations

from networks.choices import AuditSource

ID_MAX = 2**31 - 1  # past every row id, and within every database's integer
SEARCH_MAX = 200


def id_param(request, name: str) -> int | None:
    """A row id from the query string; anything else (abc, -1, 1e9, a huge number) is no filter.

    List pages ignore a filter they cannot read, as the filter forms do, rather than fail.
    """
    raw = request.GET.get(name, "")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10):
        return None
    value = int(raw)
    return value if 0 < value <= ID_MAX else None


def search_param(request, name: str = "q") -> str:
    """Search text from the query string, or "" if it is too long or not printable (a NUL
    is an error on PostgreSQL)."""
    value = request.GET.get(name, "").strip()
    return value if len(value) <= SEARCH_MAX and value.isprintable() else ""


WEB = AuditSource.WEB
