from django.shortcuts import get_object_or_404, render

from networks import selectors
from networks.models import Host

from .common import paginate


def guest_list(request):
    host_id = request.GET.get("host") or None
    guests = selectors.guest_list(host_id=host_id, search=request.GET.get("q") or None)
    context = {"page": paginate(request, guests), "hosts": Host.objects.all(), "q": request.GET.get("q", "")}
    return render(request, "networks/guest_list.html", context)


def guest_detail(request, pk):
    guest = get_object_or_404(selectors.guest_detail_queryset(), pk=pk)
    return render(request, "networks/guest_detail.html", {"guest": guest})


def device_list(request):
    host_id = request.GET.get("host") or None
    context = {
        "page": paginate(request, selectors.node_device_list(host_id=host_id), per_page=100),
        "hosts": Host.objects.all(),
    }
    return render(request, "networks/device_list.html", context)
