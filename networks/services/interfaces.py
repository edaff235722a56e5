"""PLACEHOLDER: being written; replace this whole file."""

from networks import operation_kinds
from networks.choices import OperationKind


@operation_kinds.operation_kind(OperationKind.GUEST_INTERFACE_ADD, lock=operation_kinds.HOST)
def _run_guest_interface_add(operation, progress):
    raise NotImplementedError


@operation_kinds.operation_kind(OperationKind.GUEST_INTERFACE_UPDATE, lock=operation_kinds.HOST)
def _run_guest_interface_update(operation, progress):
    raise NotImplementedError


@operation_kinds.operation_kind(OperationKind.GUEST_INTERFACE_REMOVE, lock=operation_kinds.HOST)
def _run_guest_interface_remove(operation, progress):
    raise NotImplementedError
