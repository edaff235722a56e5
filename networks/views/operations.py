from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from networks import selectors
from networks.forms import OperationFilterForm
from networks.models import Host, Operation
from networks.services.operations import OperationRejected, operation_cancel
from networks.services.permissions import can, operation_action

from .access import visible, visible_object
from .common import WEB, paginate


def operation_list(request):
    form = OperationFilterForm(request.GET or None, hosts=visible(request, Host.objects, "pk"))
    filters = form.cleaned_data if form.is_valid() else {}
    host = filters.get("host")
    operations = visible(
        request, selectors.operation_list(host_id=host.pk if host else None, status=filters.get("status") or None)
    )
    return render(request, "networks/operation_list.html", {"form": form, "page": paginate(request, operations)})


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
