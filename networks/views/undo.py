"""Undo from the audit log: the offer on an event's page, the plan to confirm, the request."""

from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render

from networks.choices import OperationKind
from networks.models import AuditEvent, Operation
from networks.services.undo import MESSAGE_MAX, UndoImpossible, undo_offered, undo_preview, undo_request

from .access import visible, visible_object
from .common import WEB

GUEST_INTERFACE_ACTIONS = ("guest.interface_add.", "guest.interface_update.", "guest.interface_remove.")
# The kinds of operation that can undo an event (their params carry `undoes`).
UNDO_KINDS = (
    OperationKind.NETWORK_UNDO,
    OperationKind.GUEST_INTERFACE_ADD,
    OperationKind.GUEST_INTERFACE_UPDATE,
    OperationKind.GUEST_INTERFACE_REMOVE,
)


class UndoForm(forms.Form):
    message = forms.CharField(max_length=MESSAGE_MAX, required=False, help_text="Why (kept in the audit log)")


def undo_context(request, event: AuditEvent) -> dict:
    """What the audit event's page shows about undo: the button (possible and allowed), or
    why not; the event this one undoes, and the undos of this one."""
    offered = event.object_type == "network" or event.action.startswith(GUEST_INTERFACE_ACTIONS)
    plan, reason = undo_offered(event, request.user) if offered else (None, "")
    operation = Operation.objects.filter(pk=event.operation_id).only("kind", "params").first()
    undoes = operation.params.get("undoes") if operation else None  # a network undo, or a guest interface change
    # An undo is requested after the event it undoes: the indexed time bound keeps the JSON
    # lookup to the operations since, not the whole table.
    undone_by = visible(
        request,
        Operation.objects.filter(created_at__gte=event.created_at, kind__in=UNDO_KINDS, params__undoes=event.pk),
    )
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
