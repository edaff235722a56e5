from django.shortcuts import render

from networks import selectors
from networks.models import Host

from .access import visible, visible_object
from .common import paginate


def guest_list(request):
    host_id = request.GET.get("host") or None
    guests = visible(request, selectors.guest_list(host_id=host_id, search=request.GET.get("q") or None))
    hosts = visible(request, Host.objects, "pk")
    context = {"page": paginate(request, guests), "hosts": hosts, "q": request.GET.get("q", "")}
    return render(request, "networks/guest_list.html", context)


def guest_detail(request, pk):
    guest = visible_object(request, selectors.guest_detail_queryset(), pk)
    return render(request, "networks/guest_detail.html", {"guest": guest})


def device_list(request):
    host_id = request.GET.get("host") or None
    context = {
        "page": paginate(request, visible(request, selectors.node_device_list(host_id=host_id)), per_page=100),
        "hosts": visible(request, Host.objects, "pk"),
    }
    return render(request, "networks/device_list.html", context)
