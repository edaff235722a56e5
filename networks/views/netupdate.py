"""Editing a network's sections live: form, then a preview of the effect, then the Operation."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render

from networks import selectors
from networks.forms import SECTION_FIELDS, SECTION_TITLES
from networks.models import Network
from networks.services.netupdate import (
    SCOPES,
    network_bulk_preview,
    network_request_bulk_import,
    network_request_update,
    network_update_preview,
    update_action,
)
from networks.services.netupdate.bulk import MAX_CSV_CHARS, export_csv
from networks.services.netupdate.common import text

from .access import require, visible_object
from .common import WEB

OPTION_NAMES = ("command", "key", "scope", "message")


def network_edit(request, pk, section):
    """GET shows the form; POST previews the change; POST with confirm=1 requests it."""
    if section not in SECTION_FIELDS:
        raise Http404("No such section")
    network = visible_object(request, Network.objects.select_related("host"), pk)
    require(request, update_action(section), network.host, network.name)
    source = request.POST if request.method == "POST" else request.GET
    options = {name: source.get(name, "") for name in OPTION_NAMES}
    options["command"] = options["command"] or "add-last"
    options["scope"] = options["scope"] or "both"
    field_names = [name for name, _label in SECTION_FIELDS[section]]
    prefill_errors = {}
    if request.method == "POST":
        values = {name: request.POST.get(name, "") for name in field_names}
    else:  # links may carry values (an SRV delete names its protocol and target, a guest's lease its MAC and IP)
        given, prefill_errors = _prefill(request.GET, field_names)
        values = {**given, **selectors.section_entry_values(network, section, options["command"], options["key"])}
    context = {
        "network": network,
        "section": section,
        "title": SECTION_TITLES[section],
        "fields": [(name, label, values.get(name, "")) for name, label in SECTION_FIELDS[section]],
        "options": options,
        "scopes": SCOPES,
        "values": values,
    }
    if prefill_errors:
        context["errors"] = prefill_errors
    if request.method == "POST":
        return _preview_or_apply(request, network, section, values, options, context)
    return render(request, "networks/network_edit.html", context)


def _prefill(query, field_names) -> tuple[dict, dict]:
    """Field values a link carries, checked as text like any input: one that is too long or
    holds control characters is left out of the form and named in an error."""
    values, errors = {}, {}
    for name in field_names:
        if name not in query:
            continue
        try:
            values[name] = text({name: query[name]}, name)
        except ValidationError as error:
            errors.update(error.message_dict)
    return values, errors


def _preview_or_apply(request, network, section, values, options, context):
    arguments = {
        "network": network,
        "section": section,
        "command": options["command"],
        "values": values,
        "key": options["key"],
        "scope": options["scope"],
    }
    try:
        if request.POST.get("confirm") == "1":
            operation = network_request_update(**arguments, actor=request.user, source=WEB, message=options["message"])
            messages.info(request, f"{operation.params['summary']}: requested (operation #{operation.pk}).")
            return redirect(network)
        context["preview"] = network_update_preview(**arguments, actor=request.user)
    except ValidationError as error:
        context["errors"] = error.message_dict if hasattr(error, "error_dict") else {"__all__": error.messages}
    return render(request, "networks/network_edit.html", context)


def network_import(request, pk):
    """Bulk reservations: paste or upload CSV, preview each row, pick a strategy, apply."""
    network = visible_object(request, Network.objects.select_related("host"), pk)
    require(request, "network.bulk_import", network.host, network.name)
    context = {"network": network, "csv_text": "", "strategy": "live"}
    if request.method == "POST":
        upload = request.FILES.get("csv_file")
        context["strategy"] = request.POST.get("strategy", "live")
        try:
            csv_text = _uploaded_text(upload) if upload else request.POST.get("csv_text", "")
            context["csv_text"] = csv_text
            if request.POST.get("confirm") == "1":
                operation = network_request_bulk_import(
                    network=network,
                    csv_text=csv_text,
                    strategy=context["strategy"],
                    actor=request.user,
                    source=WEB,
                    message=request.POST.get("message", ""),
                )
                messages.info(request, f"{operation.params['summary']}: requested (operation #{operation.pk}).")
                return redirect(operation)
            context["preview"] = network_bulk_preview(network=network, csv_text=csv_text)
        except ValidationError as error:
            context["errors"] = error.message_dict if hasattr(error, "error_dict") else {"__all__": error.messages}
    return render(request, "networks/network_import.html", context)


def _uploaded_text(upload) -> str:
    """The uploaded CSV as text: too large or not UTF-8 is refused, never read as something else."""
    if upload.size > MAX_CSV_CHARS:
        raise ValidationError({"csv": [f"At most {MAX_CSV_CHARS:,} bytes at once."]})
    try:
        return upload.read().decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError({"csv": ["The file is not UTF-8 text."]}) from None


def network_reservations_csv(request, pk):
    network = visible_object(request, Network.objects.select_related("host"), pk)
    response = HttpResponse(export_csv(network.dhcp_reservations.order_by("ip__position", "address")), "text/csv")
    response["Content-Disposition"] = f'attachment; filename="{network.host.name}-{network.name}-reservations.csv"'
    return response
