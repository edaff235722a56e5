"""Checking a PCI assignment or return against the mirror, previewing it, and requesting
its Operation. A refused request changes nothing and reaches no host."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from networks.choices import InterfaceScope, OperationKind
from networks.hypervisor import hostdevs as hv_hostdevs
from networks.hypervisor.hostdevs import HOSTDEV, INTERFACE, HostdevSettings
from networks.models import Guest, Operation

from .. import macs
from ..netupdate.common import gather, invalid
from ..operations import host_lock_key, operation_request
from ..permissions import authorize
from . import checks

ATTACH, DETACH = "attach", "detach"
ACTIONS = {ATTACH: "guest.hostdev_attach", DETACH: "guest.hostdev_detach"}
KINDS = {ATTACH: OperationKind.GUEST_HOSTDEV_ATTACH, DETACH: OperationKind.GUEST_HOSTDEV_DETACH}

HOTPLUG = "Hot-plug: the guest sees a new PCI device (a VF is a new NIC: it must bring it up and ask DHCP)."
UNPLUG = "Hot-unplug: the guest loses the device at once; the host gets it back."
CONFIG_ONLY = "Persistent config only: the guest sees it at its next start."
MANAGED = "managed: libvirt unbinds the device from its host driver and binds it to vfio-pci; the host loses it."
UNMANAGED = (
    "not managed: the device must already be bound to vfio-pci on the host (virsh nodedev-detach), "
    "or libvirt refuses to start the guest with it."
)


def vf_mac_warning(address: str) -> str:
    """Why a VF should be an interface, not a bare hostdev (the page links to the other form)."""
    return (
        f"{address} is an SR-IOV VF: as a <hostdev> it gets a new random MAC after each host reboot, so the "
        "guest sees a new NIC and DHCP reservations stop matching. Assign it as kind interface instead: "
        "libvirt then sets the MAC (and VLAN) you choose each time."
    )


@dataclass(frozen=True)
class HostdevPlan:
    """A checked assignment or return, ready to request."""

    action: str
    guest: Guest
    pci_address: str
    kind: str  # hostdev or interface ("" when only the host's config can tell)
    scope: str
    device_xml: str  # the device as it will be added, or as the mirror has it
    effect: str
    summary: str
    mac: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def suggests_interface(self) -> bool:
        """A VF asked for as a bare hostdev: the page offers the interface form instead."""
        return self.action == ATTACH and self.kind == HOSTDEV and vf_mac_warning(self.pci_address) in self.warnings


def hostdev_plan(*, action: str, guest: Guest, values, pci_address: str = "", actor=None) -> HostdevPlan:
    """What the assignment or return will do, or a ValidationError naming each bad field."""
    if action == ATTACH:
        return _attach_plan(guest, checks.values_of(values, checks.ATTACH_FIELDS), actor)
    if action == DETACH:
        values = checks.values_of(values, checks.DETACH_FIELDS)
        return _detach_plan(guest, checks.pci_address_of({"pci_address": pci_address}), values)
    raise ValueError(f"unknown hostdev action {action!r}")


def _attach_plan(guest: Guest, values: dict, actor) -> HostdevPlan:
    support_warning = checks.host_can_assign(guest)  # before anything else: no IOMMU, no assignment
    address, kind, managed, scope = gather(
        lambda: checks.pci_address_of(values),
        lambda: checks.kind_of(values),
        lambda: checks.managed_of(values),
        lambda: checks.scope_of(values, guest),
    )
    checks.interface_fields_only(values, kind)
    device = checks.host_device(guest, address)
    if kind == INTERFACE:
        checks.check_vf(device)
    checks.check_free(guest, address)
    checks.check_not_pooled(guest, address)
    checks.check_vfs_free(guest, device)
    checks.check_iommu_group(guest, address)
    warnings = [support_warning] if support_warning else []
    if kind == INTERFACE:
        settings, mac_notes = _interface_settings(guest, values, address, managed, actor)
        warnings.extend(mac_notes)
    else:
        settings = HostdevSettings(HOSTDEV, address, managed)
        if checks.is_vf(device):
            warnings.append(vf_mac_warning(address))
    warnings.append(MANAGED if managed else UNMANAGED)
    what = f"VF {address} as interface {settings.mac}" if kind == INTERFACE else f"PCI device {address}"
    label = f" ({device.product})" if device.product else ""
    return HostdevPlan(
        ATTACH, guest, address, kind, scope, hv_hostdevs.build_device(settings),
        HOTPLUG if scope != InterfaceScope.CONFIG else CONFIG_ONLY,
        f"Assign {what}{label} to {guest.name} ({scope})", settings.mac, tuple(warnings),
    )  # fmt: skip


def _interface_settings(
    guest: Guest, values: dict, address: str, managed: bool, actor
) -> tuple[HostdevSettings, tuple[str, ...]]:
    """The VF interface's settings, and the warnings about its MAC (a typed one the fleet knows)."""
    (mac, mac_notes), vlan, profileid = gather(
        lambda: macs.new_mac(values, actor=actor, guest=guest),
        lambda: checks.vlan_of(values),
        lambda: checks.port_profile_of(values),
    )
    return HostdevSettings(INTERFACE, address, managed, mac, vlan, profileid), mac_notes


def _detach_plan(guest: Guest, address: str, values: dict) -> HostdevPlan:
    scope = checks.scope_of(values, guest)
    current = hv_hostdevs.find_device(guest.xml, address)
    if current is None and not (scope == InterfaceScope.CONFIG and guest.is_running):
        raise invalid("pci_address", f"{guest.name} holds no PCI device {address}.")
    # A running guest's mirror is its live XML: a device assigned to its config only is not in
    # it, and the worker finds it in the config.
    kind = current.kind if current else ""
    effect = UNPLUG if scope != InterfaceScope.CONFIG else CONFIG_ONLY
    mac = current.mac if current else ""
    what = f"VF {address} (interface {mac})" if kind == INTERFACE else f"PCI device {address}"
    return HostdevPlan(
        DETACH, guest, address, kind, scope, current.xml if current else "", effect,
        f"Return {what} from {guest.name} ({scope})", mac,
    )  # fmt: skip


def guest_hostdev_request(
    *, action: str, guest: Guest, values, actor, source: str, pci_address: str = "", message: str = ""
) -> Operation:
    """Authorize, check, and queue the Operation that assigns or returns the device."""
    authorize(actor=actor, action=ACTIONS[action], host=guest.host, source=source, object_name=guest.name)
    with transaction.atomic():
        # a VF interface takes a MAC: check and record it under the lock the interface editor takes
        macs.lock_macs(guest.host)
        return _request(action, guest, values, actor, source, pci_address, message)


def _request(action: str, guest: Guest, values, actor, source: str, pci_address: str, message: str) -> Operation:
    plan = hostdev_plan(action=action, guest=guest, values=values, pci_address=pci_address, actor=actor)
    params = {
        "pci_address": plan.pci_address, "kind": plan.kind, "scope": plan.scope, "summary": plan.summary,
        "device_xml": plan.device_xml, "mac": plan.mac, "warnings": list(plan.warnings),
    }  # fmt: skip
    return operation_request(
        kind=KINDS[action],
        host=guest.host,
        actor=actor,
        source=source,
        lock_key=host_lock_key(guest.host),
        target_name=guest.name,
        params=params,
        message=message,
        object_type="guest",
        before_xml=guest.xml,
    )
