from django.shortcuts import render

from networks import selectors
from networks.models import Guest, Network

from .access import visible


def dashboard(request):
    networks = visible(request, Network.objects)
    context = {
        "hosts": visible(request, selectors.host_list(), "pk"),
        "network_count": networks.count(),
        "active_network_count": networks.filter(active=True).count(),
        "guest_count": visible(request, Guest.objects).count(),
        "recent_operations": visible(request, selectors.operation_list())[:10],
        "drifted_networks": visible(request, selectors.network_list()).filter(drifted=True)[:10],
    }
    return render(request, "networks/dashboard.html", context)
