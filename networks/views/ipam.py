from django.shortcuts import render

from networks import selectors


def ipam(request):
    query = request.GET.get("q", "").strip()
    results = selectors.ipam_search(query) if len(query) >= 2 else None
    return render(request, "networks/ipam.html", {"q": query, "results": results})
