"""How the API answers errors raised below it."""

from rest_framework import exceptions
from rest_framework.views import exception_handler as drf_exception_handler

from networks.services.permissions import PermissionDenied


def exception_handler(exc, context):
    # DRF answers every Django PermissionDenied with a generic text; ours says which role
    # the action needs, which is what a script's author needs to read.
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(detail=str(exc))
    return drf_exception_handler(exc, context)
