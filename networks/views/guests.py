from django.shortcuts import render

from networks import selectors
from networks.models import Host
from networks.services import pools

from .access import may, visible, visible_object
from .common import id_param, paginate, search_param


def guest_list(request):
    search = search_param(request)
    guests = visible(request, selectors.guest_list(host_id=id_param(request, "host"), search=search or None))
    hosts = visible(request, Host.objects, "pk")
    context = {"page": paginate(request, guests), "hosts": hosts, "q": search}
    return render(request, "networks/guest_list.html", context)


def guest_detail(request, pk):
    guest = visible_object(request, selectors.guest_detail_queryset(), pk)
    context = {
        "guest": guest,
        "interface_rows": selectors.guest_interface_rows(guest),
        "may": may(request, guest.host),
        "pool_start_warnings": pools.start_warnings(guest),
    }
    return render(request, "networks/guest_detail.html", context)


def device_list(request):
    devices = visible(request, selectors.node_device_list(host_id=id_param(request, "host")))
    context = {"page": paginate(request, devices, per_page=100), "hosts": visible(request, Host.objects, "pk")}
    return render(request, "networks/device_list.html", context)
