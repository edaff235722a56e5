from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from networks.filtersets import OperationFilterSet
from networks.models import Operation
from networks.services.operations import OperationRejected, operation_cancel
from networks.services.permissions import can, operation_action
from networks.tables import OperationTable

from .access import visible, visible_object
from .common import WEB
from .lists import filtered, keyset_table

LIST_DEFERRED = ("params", "result", "log", "error", "checkpoint", "message")


def operation_list(request):
    """Newest first, a keyset page at a time (no COUNT over the table, no OFFSET)."""
    operations = visible(request, Operation.objects.defer(*LIST_DEFERRED))
    filterset = filtered(request, OperationFilterSet, operations)
    table = keyset_table(request, OperationTable, filterset.qs)
    return render(request, "networks/operation_list.html", {"table": table, "form": filterset.form})


def operation_detail(request, pk):
    operation = visible_object(request, Operation.objects.select_related("host", "network"), pk)
    may_cancel = can(request.user, operation_action(operation), operation.host)
    return render(request, "networks/operation_detail.html", {"operation": operation, "may_cancel": may_cancel})


def operation_progress(request, pk):
    """The polled fragment. Once the operation has ended it no longer asks to be polled."""
    operation = visible_object(request, Operation.objects, pk)
    response = render(request, "networks/partials/operation_progress.html", {"operation": operation})
    if operation.is_terminal and request.GET.get("refresh"):
        response["HX-Refresh"] = "true"  # the page around it shows mirror data that just changed
    return response


@require_POST
def operation_cancel_view(request, pk):
    operation = visible_object(request, Operation.objects, pk)
    try:
        operation_cancel(operation=operation, actor=request.user, source=WEB)
    except OperationRejected as error:
        messages.error(request, str(error))
    return redirect(operation)
