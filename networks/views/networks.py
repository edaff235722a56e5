from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from networks import selectors
from networks.filtersets import NetworkFilterSet
from networks.forms import AutostartForm, ConfirmForm
from networks.models import Host, Network
from networks.services import create as create_services
from networks.services import networks as network_services
from networks.services import pools, xmledit
from networks.services import restart as restart_services
from networks.services.drift import xml_diff
from networks.services.operations import OperationRejected
from networks.tables import AttachedGuestTable, NetworkTable, ReservationTable

from .access import may, require, visible, visible_object
from .common import WEB
from .lists import filtered, table_page


def network_list(request):
    networks = visible(
        request,
        Network.objects.select_related("host").defer("live_xml", "inactive_xml").order_by("host__name", "name"),
    )
    filterset = filtered(request, NetworkFilterSet, networks)
    table = table_page(request, NetworkTable(filterset.qs))
    return render(request, "networks/network_list.html", {"table": table, "form": filterset.form})


def _attached_interfaces(network):
    return network.guest_interfaces.select_related("guest").defer("guest__xml").order_by("guest__name", "position")


def network_detail(request, pk):
    network = visible_object(request, selectors.network_detail_queryset(), pk)
    allowed = may(request, network.host)
    edit_url = reverse("networks:network_edit", args=[network.pk, "ip-dhcp-host"])
    reservations = ReservationTable(
        selectors.network_reservations(network), edit_url=edit_url if "network.update.ip-dhcp-host" in allowed else ""
    )
    context = {
        "network": network,
        "may": allowed,
        "reservations": table_page(request, reservations),
        "attached_guests": table_page(request, AttachedGuestTable(_attached_interfaces(network))),
        "config_warnings": selectors.network_config_warnings(network),
        "leases": selectors.lease_rows(network),
        "drift_diff": xml_diff(network.inactive_xml, network.live_xml, "persistent", "running")
        if network.drifted
        else "",
        "active_operations": selectors.operation_list(network_id=network.pk).filter(status__in=["queued", "running"]),
        "recent_operations": selectors.operation_list(network_id=network.pk)[:10],
        "autostart_form": AutostartForm(initial={"enabled": not network.autostart}),
        "pool": pools.pool_state(network) if pools.is_pool(network) else None,
    }
    return render(request, "networks/network_detail.html", context)


@require_POST
def network_start(request, pk):
    network = visible_object(request, Network.objects.select_related("host"), pk)
    form = ConfirmForm(request.POST)
    form.is_valid()
    network_services.network_request_start(
        network=network, actor=request.user, source=WEB, message=form.cleaned_data.get("message", "")
    )
    messages.info(request, f"Start of {network.name} requested.")
    return redirect(network)


@require_POST
def network_autostart(request, pk):
    network = visible_object(request, Network.objects.select_related("host"), pk)
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
    network = visible_object(request, Network.objects.select_related("host"), pk)
    require(request, f"network.{verb}", network.host, network.name)
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
        "affected_guests": selectors.running_guests_on_network(network),
    }
    return render(request, "networks/network_confirm.html", context)


def network_stop(request, pk):
    return _confirmed_action(request, pk, network_services.network_request_stop, "stop")


def network_undefine(request, pk):
    return _confirmed_action(request, pk, network_services.network_request_undefine, "undefine")


def network_restart(request, pk):
    network = visible_object(request, Network.objects.select_related("host"), pk)
    require(request, "network.restart", network.host, network.name)
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
    network = visible_object(request, Network.objects.select_related("host"), pk)
    require(request, "network.xml_edit", network.host, network.name)
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


CREATE_FIELDS = [
    ("name", "Name"),
    ("bridge", "Bridge (libvirt's for NAT/routed/open/isolated, empty: generated; the host bridge for bridge mode)"),
    ("ipv4", "IPv4 gateway/prefix, e.g. 192.168.100.1/24"),
    ("ipv4_dhcp_start", "IPv4 DHCP first address (empty: after the gateway)"),
    ("ipv4_dhcp_end", "IPv4 DHCP last address (empty: end of the subnet)"),
    ("ipv6", "IPv6 gateway/prefix, e.g. fd00:100::1/64"),
    ("ipv6_dhcp_start", "IPv6 DHCP first address"),
    ("ipv6_dhcp_end", "IPv6 DHCP last address"),
    ("domain_name", "DNS domain"),
    ("mtu", "MTU"),
    ("forward_dev", "Forward only through this host interface (NAT/routed)"),
    ("interfaces", "macvtap: host interfaces, e.g. eth1 eth2"),
]
CREATE_FLAGS = [
    ("dhcp", "Serve DHCP"),
    ("stp", "STP on the bridge"),
    ("start", "Start now"),
    ("autostart", "Autostart"),
]


def network_create(request, host_pk):
    """A form for every mode, a preview of the XML and warnings, then the Operation."""
    host = visible_object(request, Host.objects, host_pk, "pk")
    require(request, "network.create", host)
    posted = request.method == "POST"
    values = {name: request.POST.get(name, "") for name, _label in CREATE_FIELDS} if posted else {}
    values["mode"] = request.POST.get("mode", "nat") if posted else "nat"
    values["pf"] = request.POST.get("pf", "") if posted else ""
    flags = (
        {name: name in request.POST for name, _ in CREATE_FLAGS} if posted else dict.fromkeys(("dhcp", "start"), True)
    )
    context = {"host": host, "values": values, "flags": flags, "fields": CREATE_FIELDS, "flag_fields": CREATE_FLAGS}
    context["modes"] = sorted(create_services.MODES)
    context["pfs"] = pools.pf_choices(host)
    if posted:
        try:
            if request.POST.get("confirm") == "1":
                operation = create_services.network_request_create(
                    host=host, actor=request.user, source=WEB, message=request.POST.get("message", ""),
                    start=flags["start"], autostart=flags["autostart"], **values,
                    dhcp=flags["dhcp"], stp=flags["stp"],
                )  # fmt: skip
                messages.info(request, f"Creation of {operation.target_name} requested (operation #{operation.pk}).")
                return redirect(operation)
            context["plan"] = create_services.network_create_plan(
                host=host, values={**values, "dhcp": flags["dhcp"], "stp": flags["stp"]}
            )
        except ValidationError as error:
            context["errors"] = error.message_dict
    return render(request, "networks/network_create.html", context)


@require_POST
def network_create_default(request, host_pk):
    host = visible_object(request, Host.objects, host_pk, "pk")
    try:
        operation = create_services.network_request_create_default(host=host, actor=request.user, source=WEB)
        messages.info(request, f"Creation of the default network requested (operation #{operation.pk}).")
    except ValidationError as error:
        messages.error(request, " ".join(m for msgs in error.message_dict.values() for m in msgs))
    return redirect(host)


def network_rename(request, pk):
    network = visible_object(request, Network.objects.select_related("host"), pk)
    require(request, "network.rename", network.host, network.name)
    context = {"network": network, "affected_guests": selectors.running_guests_on_network(network)}
    if request.method == "POST":
        try:
            operation = restart_services.network_request_rename(
                network=network, new_name=request.POST.get("new_name", ""),
                move_guests="move_guests" in request.POST, actor=request.user, source=WEB,
                message=request.POST.get("message", ""),
            )  # fmt: skip
            messages.info(request, f"Rename of {network.name} requested (operation #{operation.pk}).")
            return redirect(operation)
        except OperationRejected as error:
            context["error"] = str(error)
    return render(request, "networks/network_rename.html", context)
