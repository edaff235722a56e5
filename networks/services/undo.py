"""Undoing a change from the audit log (placeholder: filled in by the undo work)."""

from __future__ import annotations

from networks.choices import OperationKind
from networks.models import Operation
from networks.operation_kinds import operation_kind

from .operations import OperationRejected, Outcome, Progress


@operation_kind(OperationKind.NETWORK_UNDO)
def network_undo_run(operation: Operation, progress: Progress) -> Outcome:
    raise OperationRejected("Undo is not available yet.")
