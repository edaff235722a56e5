"""Port forward pages: the lists, a forward's page, create/edit/delete (with a confirm) and re-apply."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from networks.filtersets import PortForwardFilterSet
from networks.forms import ConfirmForm
from networks.forward_forms import PortForwardForm, initial_of
from networks.models import Host, PortForward
from networks.services import forwards as forward_services
from networks.tables import PortForwardTable

from .access import may, require, visible, visible_object
from .common import WEB, id_param
from .lists import filtered, table_page


def _forwards():
    return PortForward.objects.select_related("host", "guest").order_by("host__name", "protocol", "host_port_start")


def port_forward_list(request):
    """Every forward of the user's hosts; `?host=` and `?guest=` narrow it."""
    filterset = filtered(request, PortForwardFilterSet, visible(request, _forwards().defer("guest__xml")))
    filterset.form.is_valid()  # unbound without a query string; else the values it could read
    filters = getattr(filterset.form, "cleaned_data", {})
    context = {
        "table": table_page(request, PortForwardTable(filterset.qs)),
        "form": filterset.form,
        "host": filters.get("host"),
        "guest": filters.get("guest"),
    }
    return render(request, "networks/port_forward_list.html", context)


def port_forward_detail(request, pk):
    forward = visible_object(request, _forwards(), pk)
    context = {
        "forward": forward,
        "may": may(request, forward.host),
        "warnings": forward_services.forward_current_warnings(forward),
        "worker": forward_services.host_worker_present(forward.host),
        "operations": forward.host.operations.filter(kind__startswith="port_forward.")[:10],
    }
    return render(request, "networks/port_forward_detail.html", context)


def port_forward_create(request, host_pk):
    host = visible_object(request, Host.objects, host_pk, "pk")
    require(request, "port_forward.create", host, host.name)
    initial = {"guest": id_param(request, "guest")} if request.method == "GET" else None
    form = PortForwardForm(request.POST or None, host=host, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            requested = forward_services.port_forward_request_create(
                host=host, spec=form.spec(), actor=request.user, source=WEB, message=form.cleaned_data["message"]
            )
        except ValidationError as error:
            form.add_service_errors(error)
        else:
            return _requested(request, requested, "created")
    context = {"form": form, "host": host, "forward": None, "worker": forward_services.host_worker_present(host)}
    return render(request, "networks/port_forward_form.html", context)


def port_forward_edit(request, pk):
    forward = visible_object(request, _forwards(), pk)
    require(request, "port_forward.update", forward.host, str(forward))
    form = PortForwardForm(request.POST or None, host=forward.host, initial=initial_of(forward))
    if request.method == "POST" and form.is_valid():
        try:
            requested = forward_services.port_forward_request_update(
                forward=forward, changes=_changes(form), actor=request.user, source=WEB,
                message=form.cleaned_data["message"],
            )  # fmt: skip
        except ValidationError as error:
            form.add_service_errors(error)
        else:
            return _requested(request, requested, "changed")
    worker = forward_services.host_worker_present(forward.host)
    context = {"form": form, "host": forward.host, "forward": forward, "worker": worker}
    return render(request, "networks/port_forward_form.html", context)


def _changes(form: PortForwardForm) -> dict:
    spec = form.spec()
    return {name: getattr(spec, name) for name in spec.__dataclass_fields__}


def _requested(request, requested, verb: str):
    messages.info(request, f"Forward {requested.forward} {verb}; operation #{requested.operation.pk} applies it.")
    for warning in requested.warnings:
        messages.warning(request, warning.message)  # the forward's page links to the fix
    return redirect(requested.forward)


def port_forward_delete(request, pk):
    forward = visible_object(request, _forwards(), pk)
    require(request, "port_forward.delete", forward.host, str(forward))
    form = ConfirmForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        host = forward.host
        try:
            operation = forward_services.port_forward_request_delete(
                forward=forward, actor=request.user, source=WEB, message=form.cleaned_data["message"]
            )
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
            return redirect(forward)
        messages.info(request, f"Forward {forward} deleted; operation #{operation.pk} removes its rules.")
        return redirect(host)
    return render(request, "networks/port_forward_confirm_delete.html", {"forward": forward, "form": form})


@require_POST
def port_forward_reapply(request, pk):
    forward = visible_object(request, _forwards(), pk)
    return _reapply(request, forward.host, forward, redirect_to=forward)


@require_POST
def host_port_forwards_reapply(request, host_pk):
    host = visible_object(request, Host.objects, host_pk, "pk")
    return _reapply(request, host, None, redirect_to=host)


def _reapply(request, host, forward, redirect_to):
    form = ConfirmForm(request.POST)
    message = form.cleaned_data["message"] if form.is_valid() else ""
    try:
        operation = forward_services.port_forward_request_reapply(
            host=host, forward=forward, actor=request.user, source=WEB, message=message
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.info(request, f"Re-applying the port forwards of {host.name} (operation #{operation.pk}).")
    return redirect(redirect_to)
