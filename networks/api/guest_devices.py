"""What the guest interface and guest hostdev endpoints share: the guest in the user's scope,
and a write body of any JSON type read into its fields and its message."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import QueryDict
from django.shortcuts import get_object_or_404
from rest_framework.exceptions import ValidationError

from networks import selectors
from networks.services.netupdate.common import text
from networks.services.permissions import scoped

from .errors import field_errors

MESSAGE_MAX = 500  # as Operation.message


def scoped_guest(request, pk):
    """The guest, with what its page shows; a guest of a host outside the user's scope is a 404."""
    return get_object_or_404(scoped(selectors.guest_detail_queryset(), request.user), pk=pk)


def write_body(data, what: str) -> tuple[dict, str]:
    """The fields and the message of a body; a body that is not an object is a 400 asking
    for `what` (e.g. "the interface's fields")."""
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": [f"Send a JSON object of {what}."]})
    values = data.dict() if isinstance(data, QueryDict) else dict(data)  # a form: one value per field
    try:
        message = text({"message": values.pop("message", "")}, "message", max_length=MESSAGE_MAX)
    except DjangoValidationError as error:
        raise ValidationError(field_errors(error)) from None
    return values, message
