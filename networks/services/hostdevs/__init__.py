"""Giving a guest a host PCI device and taking it back: a `<hostdev>` (any PCI device) or an
`<interface type='hostdev'>` (an SR-IOV VF as a NIC whose MAC, VLAN and port profile libvirt
sets). Admins only: a wrong assignment can take a host's NIC or disk controller away.

`checks` holds the field and device checks (against the mirror: a refused request reaches
no host), `plans` the preview and the request, `runs` the Operation on the host.
"""

from . import runs  # noqa: F401  registers the run functions of the two operation kinds
from .plans import (
    ACTIONS,
    ATTACH,
    CONFIG_ONLY,
    DETACH,
    HOTPLUG,
    UNPLUG,
    HostdevPlan,
    guest_hostdev_request,
    hostdev_plan,
    vf_mac_warning,
)

__all__ = [
    "ACTIONS", "ATTACH", "CONFIG_ONLY", "DETACH", "HOTPLUG", "UNPLUG", "HostdevPlan", "guest_hostdev_request",
    "hostdev_plan", "vf_mac_warning",
]  # fmt: skip
