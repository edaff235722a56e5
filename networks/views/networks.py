from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from networks import selectors
from networks.forms import AutostartForm, ConfirmForm, NetworkFilterForm
from networks.models import Network
from networks.services import networks as network_services
from networks.services import restart as restart_services
from networks.services import xmledit
from networks.services.drift import xml_diff
from networks.services.operations import OperationRejected

from .common import WEB, paginate


def network_list(request):
    form = NetworkFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    host = filters.get("host")
    networks = selectors.network_list(
        host_id=host.pk if host else None,
        mode=filters.get("mode") or None,
        state=filters.get("state") or None,
        search=filters.get("q") or None,
    )
    return render(request, "networks/network_list.html", {"form": form, "page": paginate(request, networks)})


def network_detail(request, pk):
    network = get_object_or_404(selectors.network_detail_queryset(), pk=pk)
    context = {
        "network": network,
        "reservations": selectors.network_reservations(network),
        "leases": selectors.lease_rows(network),
        "drift_diff": xml_diff(network.inactive_xml, network.live_xml, "persistent", "running")
        if network.drifted
        else "",
        "active_operations": selectors.operation_list(network_id=network.pk).filter(status__in=["queued", "running"]),
        "recent_operations": selectors.operation_list(network_id=network.pk)[:10],
        "autostart_form": AutostartForm(initial={"enabled": not network.autostart}),
    }
    return render(request, "networks/network_detail.html", context)


@require_POST
def network_start(request, pk):
    network = get_object_or_404(Network, pk=pk)
    form = ConfirmForm(request.POST)
    form.is_valid()
    network_services.network_request_start(
        network=network, actor=request.user, source=WEB, message=form.cleaned_data.get("message", "")
    )
    messages.info(request, f"Start of {network.name} requested.")
    return redirect(network)


@require_POST
def network_autostart(request, pk):
    network = get_object_or_404(Network, pk=pk)
    form = AutostartForm(request.POST)
    form.is_valid()
    try:
        network_services.network_request_autostart(
            network=network,
            enabled=form.cleaned_data.get("enabled", False),
            actor=request.user,
            source=WEB,
            message=form.cleaned_data.get("message", ""),
        )
    except OperationRejected as error:
        messages.error(request, str(error))
    return redirect(network)


def _confirmed_action(request, pk, request_service, verb: str):
    """Stop and undefine cut running guests off: show them and ask before acting."""
    network = get_object_or_404(Network.objects.select_related("host"), pk=pk)
    form = ConfirmForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        request_service(network=network, actor=request.user, source=WEB, message=form.cleaned_data["message"])
        messages.info(request, f"{verb.capitalize()} of {network.name} requested.")
        if verb == "undefine":
            return redirect(network.host)
        return redirect(network)
    context = {
        "network": network,
        "form": form,
        "verb": verb,
        "affected_guests": network_services.network_affected_guests(network),
    }
    return render(request, "networks/network_confirm.html", context)


def network_stop(request, pk):
    return _confirmed_action(request, pk, network_services.network_request_stop, "stop")


def network_undefine(request, pk):
    return _confirmed_action(request, pk, network_services.network_request_undefine, "undefine")


def network_restart(request, pk):
    network = get_object_or_404(Network.objects.select_related("host"), pk=pk)
    form = ConfirmForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            restart_services.network_request_restart(
                network=network, actor=request.user, source=WEB, message=form.cleaned_data["message"]
            )
            messages.info(request, f"Restart of {network.name} requested.")
        except OperationRejected as error:
            messages.error(request, str(error))
        return redirect(network)
    preview = restart_services.network_restart_preview(network)
    context = {
        "network": network,
        "form": form,
        "verb": "restart",
        "affected_guests": preview.guests,
        "preview": preview,
    }
    return render(request, "networks/network_confirm.html", context)


def network_edit_xml(request, pk):
    """Edit the whole XML: a diff and what it takes (live, or a restart), then apply."""
    network = get_object_or_404(Network.objects.select_related("host"), pk=pk)
    new_xml = request.POST.get("xml") if request.method == "POST" else (network.inactive_xml or network.live_xml)
    context = {"network": network, "new_xml": new_xml, "message": request.POST.get("message", "")}
    if request.method == "POST":
        try:
            apply = request.POST.get("apply", "")
            if apply:
                operation = xmledit.network_request_xml_change(
                    network=network, new_xml=new_xml, apply=apply, actor=request.user, source=WEB,
                    message=context["message"],
                )  # fmt: skip
                messages.info(request, f"{operation.get_kind_display()} requested (operation #{operation.pk}).")
                return redirect(network)
            context["analysis"] = xmledit.network_xml_preview(network=network, new_xml=new_xml)
        except OperationRejected as error:
            context["error"] = str(error)
    return render(request, "networks/network_edit_xml.html", context)
