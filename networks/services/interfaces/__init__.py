"""A guest's interfaces: add, change and remove them, each previewed, then one Operation.

`plans` checks a request against the mirror (a bad request gets field errors and no
Operation) and says what the running guest will notice; `runs` applies it on the host from
what the host has now, so a stale mirror never overwrites someone else's change (an update
carries only the fields it changes); `checks` holds the field checks both share.
"""

from . import runs  # noqa: F401  registers the run functions of the three operation kinds
from .plans import (
    ACTIONS,
    ADD,
    CONFIG_ONLY,
    HOTPLUG,
    IN_PLACE,
    REMOVE,
    REPLUG,
    UNPLUG,
    UPDATE,
    InterfacePlan,
    apply_changes,
    guest_interface_request,
    interface_plan,
    needs_replug,
)

__all__ = [
    "ACTIONS", "ADD", "CONFIG_ONLY", "HOTPLUG", "IN_PLACE", "REMOVE", "REPLUG", "UNPLUG", "UPDATE", "InterfacePlan",
    "apply_changes", "guest_interface_request", "interface_plan", "needs_replug",
]  # fmt: skip
