"""PLACEHOLDER: being written; replace this whole file."""

from networks import operation_kinds
from networks.choices import OperationKind


@operation_kinds.operation_kind(OperationKind.PORT_FORWARD_CREATE, lock=operation_kinds.HOST)
def _run_port_forward_create(operation, progress):
    raise NotImplementedError


@operation_kinds.operation_kind(OperationKind.PORT_FORWARD_UPDATE, lock=operation_kinds.HOST)
def _run_port_forward_update(operation, progress):
    raise NotImplementedError


@operation_kinds.operation_kind(OperationKind.PORT_FORWARD_DELETE, lock=operation_kinds.HOST)
def _run_port_forward_delete(operation, progress):
    raise NotImplementedError


@operation_kinds.operation_kind(OperationKind.PORT_FORWARD_REAPPLY, lock=operation_kinds.HOST)
def _run_port_forward_reapply(operation, progress):
    raise NotImplementedError
