from django.shortcuts import render

from networks import selectors
from networks.models import Guest, Network


def dashboard(request):
    context = {
        "hosts": selectors.host_list(),
        "network_count": Network.objects.count(),
        "active_network_count": Network.objects.filter(active=True).count(),
        "guest_count": Guest.objects.count(),
        "recent_operations": selectors.operation_list()[:10],
        "drifted_networks": selectors.network_list().filter(drifted=True)[:10],
    }
    return render(request, "networks/dashboard.html", context)
