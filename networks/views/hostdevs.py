"""Assigning a host PCI device to a guest and returning it: the form (free devices only), a
preview of the device XML, what the guest notices and the warnings, then the Operation."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render

from networks import selectors
from networks.hostdev_forms import HostdevForm, device_choices
from networks.hypervisor import hostdevs as hv_hostdevs
from networks.services.hostdevs import ACTIONS, ATTACH, DETACH, guest_hostdev_request, hostdev_plan
from networks.services.hostdevs.checks import assignable_devices

from .access import require, visible_object
from .common import WEB

CONFIRM = "networks/guest_hostdev_confirm.html"


def _guest(request, pk, action: str):
    guest = visible_object(request, selectors.guest_detail_queryset(), pk)
    require(request, ACTIONS[action], guest.host, guest.name)
    return guest


def _errors(error: ValidationError) -> dict:
    return error.message_dict if hasattr(error, "error_dict") else {"__all__": error.messages}


def _form(request, guest) -> HostdevForm:
    initial = {"kind": request.GET.get("kind") or "hostdev", "pci_address": request.GET.get("pci", ""), "managed": True}
    data = request.POST if request.method == "POST" else None
    return HostdevForm(data, initial=initial, devices=device_choices(*assignable_devices(guest.host)),
                       running=guest.is_running)  # fmt: skip


def guest_hostdev_add(request, pk):
    guest = _guest(request, pk, ATTACH)
    form = _form(request, guest)
    context = {"guest": guest, "form": form, "action": ATTACH}
    if request.method != "POST":
        return render(request, "networks/guest_hostdev_form.html", context)
    if not form.is_valid():
        context["errors"] = form.errors
        return render(request, "networks/guest_hostdev_form.html", context)
    values = form.service_values()
    if request.POST.get("confirm") == "1" and request.POST.get("previewed_mac") and values.get("kind") == "interface":
        values.setdefault("mac", request.POST["previewed_mac"])  # the MAC the preview showed
    return _preview_or_apply(request, guest, ATTACH, values, form.cleaned_data.get("message", ""), context)


def _preview_or_apply(request, guest, action: str, values: dict, message: str, context: dict, pci: str = ""):
    template = "networks/guest_hostdev_form.html" if action == ATTACH else CONFIRM
    try:
        if request.POST.get("confirm") == "1":
            operation = guest_hostdev_request(
                action=action, guest=guest, values=values, pci_address=pci, actor=request.user, source=WEB,
                message=message,
            )  # fmt: skip
            messages.info(request, f"{operation.params['summary']}: requested (operation #{operation.pk}).")
            return redirect(operation)
        plan = hostdev_plan(action=action, guest=guest, values=values, pci_address=pci, actor=request.user)
    except ValidationError as error:
        context["errors"] = _errors(error)
        return render(request, template, context)
    context.update(plan=plan, message=message)
    return render(request, CONFIRM, context)


def guest_hostdev_remove(request, pk, pci):
    guest = _guest(request, pk, DETACH)
    current = hv_hostdevs.find_device(guest.xml, pci.lower())
    context = {"guest": guest, "action": DETACH, "pci": pci, "current": current, "scopes": _remove_scopes(guest)}
    values = {"scope": request.POST.get("scope", "")} if request.method == "POST" else {}
    return _preview_or_apply(request, guest, DETACH, values, request.POST.get("message", ""), context, pci)


def _remove_scopes(guest) -> list[tuple[str, str]]:
    if not guest.is_running:
        return [("config", "the persistent config (the guest is not running)")]
    return [
        ("both", "the running guest and its persistent config"),
        ("live", "the running guest only (back at its next start)"),
        ("config", "the persistent config only (gone at its next start)"),
    ]
