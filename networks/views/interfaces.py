"""Adding, changing and removing a guest's interfaces: the form, a preview of the XML and of
what the running guest notices, then the Operation (confirm)."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render

from networks import selectors
from networks.hypervisor import guests as hv_guests
from networks.interface_forms import InterfaceForm, initial_values
from networks.models import NodeDevice
from networks.services.interfaces import ACTIONS, ADD, REMOVE, UPDATE, guest_interface_request, interface_plan
from networks.services.macs import normalise_mac

from .access import require, visible_object
from .common import WEB


def _guest(request, pk, action: str):
    guest = visible_object(request, selectors.guest_detail_queryset(), pk)
    require(request, ACTIONS[action], guest.host, guest.name)
    return guest


def _errors(error: ValidationError) -> dict:
    return error.message_dict if hasattr(error, "error_dict") else {"__all__": error.messages}


def _sources(guest) -> list[str]:
    """What the source field suggests: the host's networks, bridges and NICs."""
    host = guest.host
    nics = NodeDevice.objects.filter(host=host, capability="net").values_list("net_interface", flat=True)
    return sorted({*host.networks.values_list("name", flat=True), *host.host_bridges, *nics} - {""})


def guest_interface_add(request, pk):
    guest = _guest(request, pk, ADD)
    return _form_page(request, guest, ADD, current=None)


def guest_interface_edit(request, pk, mac):
    guest = _guest(request, pk, UPDATE)
    return _form_page(request, guest, UPDATE, current=_current(guest, mac))


def _current(guest, mac: str):
    try:
        mac = normalise_mac(mac)
    except ValidationError:
        raise Http404("No such interface") from None
    element = hv_guests.find_interface(guest.xml, mac)
    if element is None:
        raise Http404("No such interface")
    return hv_guests.interface_settings(element)


def _form_page(request, guest, action: str, current):
    adding = current is None
    initial = {"source_type": "network", "model": "virtio", "link": "up"} if adding else initial_values(current)
    form = InterfaceForm(
        request.POST if request.method == "POST" else None, initial=initial, running=guest.is_running, adding=adding
    )
    context = {"guest": guest, "form": form, "action": action, "current": current, "sources": _sources(guest)}
    if request.method != "POST":
        return render(request, "networks/guest_interface_form.html", context)
    if not form.is_valid():
        context["errors"] = form.errors
        return render(request, "networks/guest_interface_form.html", context)
    values = form.service_values(current)
    message = form.cleaned_data.get("message", "")
    return _preview_or_apply(request, guest, action, values, message, context, mac=current.mac if current else "")


def _preview_or_apply(request, guest, action: str, values: dict, message: str, context: dict, mac: str = ""):
    template = "networks/guest_interface_form.html" if action != REMOVE else "networks/guest_interface_confirm.html"
    try:
        if request.POST.get("confirm") == "1":
            if action == ADD and request.POST.get("previewed_mac"):
                values["mac"] = request.POST["previewed_mac"]  # the MAC the preview showed
            operation = guest_interface_request(
                action=action, guest=guest, values=values, mac=mac, actor=request.user, source=WEB, message=message
            )
            messages.info(request, f"{operation.params['summary']}: requested (operation #{operation.pk}).")
            return redirect(operation)
        plan = interface_plan(action=action, guest=guest, values=values, mac=mac, actor=request.user)
    except ValidationError as error:
        context["errors"] = _errors(error)
        return render(request, template, context)
    context.update(plan=plan, message=message)
    return render(request, "networks/guest_interface_confirm.html", context)


def guest_interface_remove(request, pk, mac):
    guest = _guest(request, pk, REMOVE)
    current = _current(guest, mac)
    context = {"guest": guest, "action": REMOVE, "current": current, "scopes": _remove_scopes(guest)}
    values = {"scope": request.POST.get("scope", "")} if request.method == "POST" else {}
    return _preview_or_apply(request, guest, REMOVE, values, request.POST.get("message", ""), context, current.mac)


def _remove_scopes(guest) -> list[tuple[str, str]]:
    if not guest.is_running:
        return [("config", "the persistent config (the guest is not running)")]
    return [
        ("both", "the running guest and its persistent config"),
        ("live", "the running guest only (back at its next start)"),
        ("config", "the persistent config only (gone at its next start)"),
    ]
