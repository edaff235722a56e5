"""The Addresses page (where a MAC, IP or name is used) and the global search of the header."""

from django.shortcuts import render

from networks import search
from networks.services.permissions import visible_host_ids


def _query(request):
    """The search text, "" when there is none, or the reason it cannot be searched for."""
    raw = request.GET.get("q", "")
    if not raw.strip():
        return "", ""
    try:
        return search.clean_query(raw), ""
    except search.BadQuery as error:
        return raw.strip() if raw.strip().isprintable() else "", str(error)


def ipam(request):
    query, error = _query(request)
    results = search.ipam_search(query, host_ids=visible_host_ids(request.user)) if query and not error else None
    context = {"q": query, "error": error, "results": results}
    return render(request, "networks/ipam.html", context, status=400 if error else 200)


def global_search(request):
    query, error = _query(request)
    results = search.global_search(query, host_ids=visible_host_ids(request.user)) if query and not error else None
    context = {"q": query, "error": error, "results": results}
    return render(request, "networks/search.html", context, status=400 if error else 200)
