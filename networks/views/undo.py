"""Undo from the audit log: the offer on an event's page, the plan to confirm, the request."""

from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render

from networks.choices import OperationKind
from networks.models import AuditEvent, Operation
from networks.services.undo import MESSAGE_MAX, UndoImpossible, undo_offered, undo_preview, undo_request

from .access import visible, visible_object
from .common import WEB


class UndoForm(forms.Form):
    message = forms.CharField(max_length=MESSAGE_MAX, required=False, help_text="Why (kept in the audit log)")


def undo_context(request, event: AuditEvent) -> dict:
    """What the audit event's page shows about undo: the button (possible and allowed), or
    why not; the event this one undoes, and the undos of this one."""
    plan, reason = undo_offered(event, request.user) if event.object_type == "network" else (None, "")
    operation = Operation.objects.filter(pk=event.operation_id).only("kind", "params").first()
    undoes = operation.params.get("undoes") if operation and operation.kind == OperationKind.NETWORK_UNDO else None
    undone_by = visible(request, Operation.objects.filter(kind=OperationKind.NETWORK_UNDO, params__undoes=event.pk))
    return {
        "undo_possible": plan is not None,
        "undo_reason": reason,
        "undoes": undoes if isinstance(undoes, int) else None,
        "undone_by": list(undone_by.order_by("pk").only("pk", "status")),
    }


def undo_confirm(request, pk):
    """The plan (entries, or a restart and the guests it re-plugs; the three-way picture when
    the network changed since), then Confirm → the operation's page."""
    event = visible_object(request, AuditEvent.objects, pk)
    form = UndoForm(request.POST if request.method == "POST" else None)
    context = {"event": event, "form": form}
    try:
        if request.method == "POST" and form.is_valid():
            operation = undo_request(event, request.user, WEB, form.cleaned_data["message"])
            messages.info(request, f"Undo of event #{event.pk} requested (operation #{operation.pk}).")
            return redirect(operation)
        context["plan"] = undo_preview(event, request.user, WEB)
    except UndoImpossible as error:
        context["error"] = str(error)
    status = 400 if request.method == "POST" else 200  # a refused confirm is audited as a refused write
    return render(request, "networks/undo_confirm.html", context, status=status)
