"""System checks: kvmweb refuses to start with an operation kind nobody can run."""

from django.core import checks

from networks.choices import OperationKind
from networks.operation_kinds import registered_kinds


@checks.register()
def every_operation_kind_is_registered(app_configs=None, **kwargs):
    missing = sorted(set(OperationKind.values) - registered_kinds())
    return [
        checks.Error(
            f"Operation kind {kind!r} has no registered run function.",
            hint="Decorate its run function with @operation_kind in its service module.",
            id="networks.E001",
        )
        for kind in missing
    ]
