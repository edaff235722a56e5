"""Running a PCI assignment or return on the guest's host, then mirroring the guest again;
and recovering one whose worker died (the host is read to tell what happened)."""

from __future__ import annotations

from networks.choices import OperationKind
from networks.hypervisor import guests as hv_guests
from networks.hypervisor import hostdevs as hv_hostdevs
from networks.models import Guest, Operation
from networks.operation_kinds import HOST, operation_kind

from .. import pci
from ..connections import host_connection

# The same reading of a guest's two definitions, and its mirroring, as the guest interface runs.
from ..interfaces.runs import (
    check_scope,
    guest_definitions,
    guest_xml_of,
    guest_xml_pair,
    mirror_guest_quietly,
    remirror_on_failure,
    scope_parts,
)
from ..operations import OperationRejected, Outcome, Progress
from . import checks


def _holding(definitions, scope: str, address: str) -> list[str]:
    """The parts of the guest ("live", "config") that hold the device now."""
    return [part for part in scope_parts(scope) if hv_hostdevs.find_device(guest_xml_of(definitions, part), address)]


def _check_still_free(operation: Operation) -> None:
    """The mirror again, as the operations before this one on the host left it: another
    guest or a pool may have taken the device, or a device of its IOMMU group, since the
    request was checked."""
    host, address = operation.host, operation.params["pci_address"]
    holder = pci.device_holders(host).get(address)
    if holder is not None and not (holder.guest_name == operation.target_name and holder.kind != pci.POOL):
        raise OperationRejected(f"{address} has been taken meanwhile: {holder.detail}.")
    pool = pci.pool_members(host).get(address)
    if pool is not None:
        raise OperationRejected(checks.pooled_message(address, pool))
    guest = Guest.objects.filter(host=host, name=operation.target_name).first()
    conflicts = pci.iommu_group_conflicts(host, address, for_guest=guest)
    if conflicts:
        raise OperationRejected(
            f"{address} cannot be assigned any more: its IOMMU group goes to the guest whole, and devices of it "
            "have been taken meanwhile: " + "; ".join(conflicts)
        )


def guest_hostdev_recover(operation: Operation, progress: Progress) -> Outcome:
    """The worker died during the device call: read the guest, say whether the change is
    there, and mirror it. Nothing is assigned or returned a second time."""
    params = operation.params
    conn = host_connection(operation.host)
    definitions = hv_guests.read_definitions(conn, operation.target_name)
    holding = _holding(definitions, params["scope"], params["pci_address"])
    wanted = len(scope_parts(params["scope"])) if operation.kind == OperationKind.GUEST_HOSTDEV_ATTACH else 0
    mirror_guest_quietly(operation)
    completed = len(holding) == wanted
    held = f"the guest holds {params['pci_address']} in: {', '.join(holding) or 'neither definition'}"
    return Outcome({"recovery": held, "completed": completed, "pci_address": params["pci_address"]})


@operation_kind(OperationKind.GUEST_HOSTDEV_ATTACH, lock=HOST, recover=guest_hostdev_recover)
def guest_hostdev_attach_run(operation: Operation, progress: Progress) -> Outcome:
    """Add the device (live, config or both in one call); a guest holding it already is left."""
    params = operation.params
    address, scope = params["pci_address"], params["scope"]
    conn, before = guest_definitions(operation, progress)
    check_scope(before, scope)
    holding = _holding(before, scope, address)
    if holding and len(holding) < len(scope_parts(scope)):
        raise OperationRejected(f"{before.name} already holds {address} in its {' and '.join(holding)} definition.")
    method = "already present"
    if not holding:
        _check_still_free(operation)
    with remirror_on_failure(operation):
        if not holding:
            progress.checkpoint(device_call="attach")  # a recovery reads the guest to tell how far it got
            progress.step(40, params["summary"])
            method = hv_guests.attach_pci_device(conn, before.name, params["device_xml"], scope)
        after = hv_guests.read_definitions(conn, before.name)
    mirror_guest_quietly(operation)
    return _outcome(params, method, before, after)


@operation_kind(OperationKind.GUEST_HOSTDEV_DETACH, lock=HOST, recover=guest_hostdev_recover)
def guest_hostdev_detach_run(operation: Operation, progress: Progress) -> Outcome:
    """Remove the device from where the guest holds it; a guest without it is left as it is."""
    params = operation.params
    address, scope = params["pci_address"], params["scope"]
    conn, before = guest_definitions(operation, progress)
    check_scope(before, scope)
    holding = _holding(before, scope, address)
    method = "already absent"
    with remirror_on_failure(operation):
        if holding:
            progress.checkpoint(device_call="detach")
            progress.step(40, params["summary"])
            # from where it is: a device assigned live only has no config to lose
            part = scope if len(holding) == len(scope_parts(scope)) else holding[0]
            method = hv_guests.detach_pci_device(conn, before.name, address, part)
        after = hv_guests.read_definitions(conn, before.name)
    mirror_guest_quietly(operation)
    return _outcome(params, method, before, after)


def _outcome(params: dict, method: str, before, after) -> Outcome:
    before_xml, after_xml = guest_xml_pair(before, after, params["scope"])
    keys = ("summary", "pci_address", "kind", "scope", "mac", "warnings")
    result = {key: params.get(key) for key in keys} | {"method": method}
    return Outcome(result, before_xml=before_xml, after_xml=after_xml)
