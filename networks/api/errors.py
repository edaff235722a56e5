"""How the API answers errors raised below it."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.views import exception_handler as drf_exception_handler

from networks.services.permissions import PermissionDenied


def exception_handler(exc, context):
    # DRF answers every Django PermissionDenied with a generic text; ours says which role
    # the action needs, which is what a script's author needs to read.
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(detail=str(exc))
    return drf_exception_handler(exc, context)


def field_errors(error: DjangoValidationError) -> dict:
    """A service's ValidationError as the API's 400 body: each field with its messages."""
    return error.message_dict if hasattr(error, "error_dict") else {"non_field_errors": error.messages}
