"""Desired-state pages: export a host's networks, plan a document against hosts, apply it,
and copy one network to other hosts (the same plan, with its conflict checks)."""

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from networks.desired_forms import CopyForm, PlanForm
from networks.models import Host, Network
from networks.services.desired import DocumentRejected, export_networks
from networks.services.desired_plan import apply_document, plan_document, resolve_hosts
from networks.services.permissions import can, visible_hosts

from .access import visible_object
from .common import WEB


def host_networks_export(request, pk):
    """The host's networks as a YAML download, from the mirror."""
    host = visible_object(request, Host.objects, pk, "pk")
    try:
        text = export_networks(host)
    except DocumentRejected as error:  # a network whose XML from the host cannot be read
        messages.error(request, str(error))
        return redirect(host)
    response = HttpResponse(text, content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{host.pk}-networks.yaml"'
    return response


def _host_names(request, exclude: Host | None = None) -> list[str]:
    hosts = visible_hosts(request.user).order_by("name")
    return list((hosts.exclude(pk=exclude.pk) if exclude else hosts).values_list("name", flat=True))


def _plan_context(request, form, document: str, host_names: list[str], prune: bool, overwrite: bool = True) -> dict:
    """The plan of `document` on the hosts (or the document's error), and whether Apply is offered."""
    context = {"form": form, "document": document, "prune": prune, "target_names": host_names}
    context["keep_existing"] = not overwrite
    try:
        hosts = resolve_hosts(request.user, host_names)
        context["plan"] = plan_document(document, hosts, prune, overwrite)
    except DocumentRejected as error:
        context["error"] = str(error)
        return context
    context["may_apply"] = all(can(request.user, "network.apply", host) for host in hosts)
    return context


def host_network_plan(request, pk):
    """Upload or paste a document, plan it against this host (or others of the user's)."""
    host = visible_object(request, Host.objects, pk, "pk")
    data = (request.POST, request.FILES) if request.method == "POST" else ()
    form = PlanForm(*data, host_names=_host_names(request), initial={"hosts": [host.name]})
    context = {"form": form, "host": host}
    if request.method == "POST" and form.is_valid():
        cleaned = form.cleaned_data
        context.update(_plan_context(request, form, cleaned["document"], cleaned["hosts"], cleaned["prune"]))
    return render(request, "networks/desired_plan.html", context)


def network_copy(request, pk):
    """Choose target hosts for one network, then the plan of copying it there."""
    network = visible_object(request, Network.objects.select_related("host"), pk)
    form = CopyForm(request.POST or None, host_names=_host_names(request, exclude=network.host))
    context = {"form": form, "host": network.host, "network": network}
    if request.method == "POST" and form.is_valid():
        cleaned = form.cleaned_data
        try:
            document = export_networks(network.host, [network.name])
        except DocumentRejected as error:  # its XML from the host cannot be read: sync it
            context["error"] = str(error)
        else:
            context.update(_plan_context(request, form, document, cleaned["hosts"], False, cleaned["replace"]))
    return render(request, "networks/desired_plan.html", context)


@require_POST
def network_plan_apply(request):
    """Apply the planned document: one operation per network and host, each authorised and audited."""
    form = PlanForm(request.POST, host_names=_host_names(request))
    context = {"form": form}
    if form.is_valid():
        cleaned = form.cleaned_data
        try:
            hosts = resolve_hosts(request.user, cleaned["hosts"])
            context["result"] = apply_document(
                cleaned["document"], hosts, prune=cleaned["prune"], overwrite=not cleaned["keep_existing"],
                actor=request.user, source=WEB,
            )  # fmt: skip
        except DocumentRejected as error:
            context["error"] = str(error)
    return render(request, "networks/desired_result.html", context, status=200 if "result" in context else 400)
