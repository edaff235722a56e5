from django.shortcuts import render

from networks import selectors
from networks.services.permissions import visible_host_ids


def ipam(request):
    query = request.GET.get("q", "").strip()
    results = selectors.ipam_search(query, host_ids=visible_host_ids(request.user)) if len(query) >= 2 else None
    return render(request, "networks/ipam.html", {"q": query, "results": results})
