"""PLACEHOLDER: being written; replace this whole file."""

from networks import operation_kinds
from networks.choices import OperationKind


@operation_kinds.operation_kind(OperationKind.GUEST_HOSTDEV_ATTACH, lock=operation_kinds.HOST)
def _run_attach(operation, progress):
    raise NotImplementedError


@operation_kinds.operation_kind(OperationKind.GUEST_HOSTDEV_DETACH, lock=operation_kinds.HOST)
def _run_detach(operation, progress):
    raise NotImplementedError
