from django.shortcuts import render

from networks import selectors
from networks.filtersets import GuestFilterSet, NodeDeviceFilterSet
from networks.models import Guest, NodeDevice
from networks.services import pools
from networks.tables import DeviceTable, GuestTable

from .access import may, visible, visible_object
from .lists import filtered, table_page


def guest_list(request):
    guests = visible(request, Guest.objects.select_related("host").defer("xml").order_by("host__name", "name"))
    filterset = filtered(request, GuestFilterSet, guests)
    table = table_page(request, GuestTable(filterset.qs))
    return render(request, "networks/guest_list.html", {"table": table, "form": filterset.form})


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
    devices = visible(
        request,
        NodeDevice.objects.select_related("host", "physical_function")
        .defer("xml", "physical_function__xml")
        .order_by("host__name", "capability", "pci_address", "name"),
    )
    filterset = filtered(request, NodeDeviceFilterSet, devices)
    table = table_page(request, DeviceTable(filterset.qs))
    return render(request, "networks/device_list.html", {"table": table, "form": filterset.form})
