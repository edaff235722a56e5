from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from networks import selectors
from networks.filtersets import HostFilterSet
from networks.forms import HostForm
from networks.models import Guest, Host, Network
from networks.services import forwards as forward_services
from networks.services import hosts as host_services
from networks.tables import HostGuestTable, HostNetworkTable, HostTable

from .access import may, require, visible, visible_object
from .common import WEB
from .lists import filtered, table_page


def host_list(request):
    hosts = visible(request, Host.objects.order_by("name"), "pk")
    filterset = filtered(request, HostFilterSet, hosts)
    table = table_page(request, HostTable(filterset.qs))
    return render(request, "networks/host_list.html", {"table": table, "form": filterset.form})


def _host_networks(host):
    return Network.objects.filter(host=host).defer("live_xml", "inactive_xml").order_by("name")


def _host_guests(host):
    return Guest.objects.filter(host=host).defer("xml").order_by("name")


def host_detail(request, pk):
    host = visible_object(request, Host.objects, pk, "pk")
    context = {
        "host": host,
        "may": may(request, host),
        "networks": table_page(request, HostNetworkTable(_host_networks(host))),
        "guests": table_page(request, HostGuestTable(_host_guests(host))),
        "device_count": host.node_devices.count(),
        "active_operations": selectors.operation_list(host_id=host.pk).filter(status__in=["queued", "running"]),
        "recent_operations": selectors.operation_list(host_id=host.pk)[:10],
        "host_forwards": forward_services.host_forwards_overview(host),
    }
    return render(request, "networks/host_detail.html", context)


def host_add(request):
    require(request, "host.create")
    form = HostForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            host = host_services.host_create(actor=request.user, source=WEB, **form.cleaned_data)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(request, f"Host {host.name} added; its first sync is queued.")
            return redirect(host)
    return render(request, "networks/host_form.html", {"form": form})


@require_POST
def host_sync(request, pk):
    host = visible_object(request, Host.objects, pk, "pk")
    operation = host_services.host_request_sync(host=host, actor=request.user, source=WEB)
    messages.info(request, f"Sync requested (operation #{operation.pk}).")
    return redirect(host)


def host_delete(request, pk):
    host = visible_object(request, Host.objects, pk, "pk")
    require(request, "host.delete", host)
    if request.method == "POST":
        host_services.host_delete(host=host, actor=request.user, source=WEB)
        messages.success(request, f"Host {host.name} removed from kvmweb (nothing changed on the host).")
        return redirect("networks:host_list")
    return render(request, "networks/host_confirm_delete.html", {"host": host})
