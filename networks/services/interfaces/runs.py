"""Running a guest interface change on its host: attach, change (in place, else detach +
attach) or detach, then mirror the guest again; and recovering a change whose worker died."""

from __future__ import annotations

import contextlib
import logging

from django.db import transaction
from django.utils import timezone

from networks.choices import AuditSource, InterfaceScope, OperationKind
from networks.hypervisor import guests as hv_guests
from networks.hypervisor import xml
from networks.hypervisor.errors import HypervisorError, NotFound
from networks.hypervisor.guests import InterfaceSettings
from networks.models import Guest, Operation
from networks.operation_kinds import HOST, operation_kind

from .. import forwards, macs
from ..connections import host_connection
from ..operations import OperationRejected, Outcome, PartlyFailed, Progress, host_sync_request
from ..sync import lock_host
from ..sync import mirror_guest as write_guest
from .plans import apply_changes, needs_replug

logger = logging.getLogger(__name__)


def guest_definitions(operation: Operation, progress: Progress):
    progress.step(10, f"Reading {operation.target_name} on {operation.host_name}")
    conn = host_connection(operation.host)
    return conn, hv_guests.read_definitions(conn, operation.target_name)


def check_scope(definitions, scope: str) -> None:
    if scope != InterfaceScope.CONFIG and not definitions.active:
        raise OperationRejected(f"{definitions.name} is not running any more: only its persistent config can change.")
    if scope != InterfaceScope.LIVE and not definitions.persistent:
        raise OperationRejected(f"{definitions.name} is transient: it has no persistent config to change.")


def guest_xml_pair(definitions, after, scope: str) -> tuple[str, str]:
    """The guest XML before and after for the audit log: the config for a config-only change."""
    if scope == InterfaceScope.CONFIG:
        return definitions.config_xml, after.config_xml
    return definitions.live_xml, after.live_xml


@contextlib.contextmanager
def remirror_on_failure(operation: Operation):
    """Whatever stops a run, the guest is read again so the mirror shows what the host has."""
    try:
        yield
    except BaseException:
        mirror_guest_quietly(operation)
        raise


@operation_kind(OperationKind.GUEST_INTERFACE_ADD, lock=HOST)
def guest_interface_add_run(operation: Operation, progress: Progress) -> Outcome:
    """Attach the interface (live, config or both in one call). Re-run from the top after a
    lost connection is safe: an interface whose MAC the guest has already is not added again."""
    params = operation.params
    mac, scope = params["mac"], params["scope"]
    conn, before = guest_definitions(operation, progress)
    check_scope(before, scope)
    holder = macs.mac_holder(mac, exclude_guest=_guest_row(operation))
    if holder is not None:
        raise OperationRejected(macs.clash_message(mac, holder, operation.requested_by))
    present = [s for s in scope_parts(scope) if hv_guests.find_interface(guest_xml_of(before, s), mac) is not None]
    if present and len(present) < len(scope_parts(scope)):
        raise OperationRejected(f"{before.name} already has {mac} in its {' and '.join(present)} definition.")
    method = "already present"
    with remirror_on_failure(operation):
        if not present:
            progress.step(40, params["summary"])
            method = hv_guests.attach_interface(conn, before.name, params["interface_xml"], scope)
        after = hv_guests.read_definitions(conn, before.name)
    _mirror_guest(operation, conn)
    return _outcome(params, method, before, after)


@operation_kind(OperationKind.GUEST_INTERFACE_REMOVE, lock=HOST)
def guest_interface_remove_run(operation: Operation, progress: Progress) -> Outcome:
    """Detach the interface; a guest that no longer has it is left as it is."""
    params = operation.params
    mac, scope = params["mac"], params["scope"]
    conn, before = guest_definitions(operation, progress)
    check_scope(before, scope)
    present = [s for s in scope_parts(scope) if hv_guests.find_interface(guest_xml_of(before, s), mac) is not None]
    method = "already absent"
    with remirror_on_failure(operation):
        if present:
            progress.step(40, params["summary"])
            method = _detach(conn, before.name, mac, scope, present)
        after = hv_guests.read_definitions(conn, before.name)
    _mirror_guest(operation, conn)
    return _outcome(params, method, before, after)


def _detach(conn, name: str, mac: str, scope: str, present: list[str]) -> str:
    """Detach from where the interface is: a NIC added live only has no config to lose."""
    if len(present) == len(scope_parts(scope)):
        return hv_guests.detach_interface(conn, name, mac, scope)
    return hv_guests.detach_interface(conn, name, mac, present[0])


def guest_interface_update_recover(operation: Operation, progress: Progress) -> Outcome:
    """The worker died while it changed the interface. If it had unplugged the running NIC,
    plug the new one in (or, if libvirt refuses it, the old one), then make the config
    match; nothing is plugged twice."""
    if not operation.checkpoint.get("replugging"):
        host_sync_request(
            host=operation.host, actor=None, source=AuditSource.SYSTEM, message="re-read after an interruption"
        )
        return Outcome({"recovery": "nothing had been unplugged; the guest is read again", "completed": False})
    conn = host_connection(operation.host)
    plugged, completed = _plug_back(conn, operation, progress)
    if completed and operation.params["scope"] == InterfaceScope.BOTH and not operation.checkpoint.get("config_done"):
        _update_config_part(conn, operation, progress)
    _mirror_guest(operation, conn)
    return Outcome({"recovery": plugged, "completed": completed})


def _plug_back(conn, operation: Operation, progress: Progress) -> tuple[str, bool]:
    """Plug in the interface the run meant to plug; (what happened, whether the change is made)."""
    state, name = operation.checkpoint, operation.target_name
    try:
        if hv_guests.attach_again(conn, name, state["new_interface_xml"]):
            return "the new NIC was plugged in", True
    except HypervisorError as error:
        progress.log(f"The new interface was refused ({error}); plugging the old one in again")
        try:
            hv_guests.attach_again(conn, name, state["old_interface_xml"])
        except HypervisorError as second:
            unplugged = hv_guests.NicUnplugged(
                f"The new interface was refused ({error}), and plugging the old one in again failed too ({second}): "
                f"the NIC is now unplugged; its XML:\n{state['old_interface_xml']}",
                state["old_interface_xml"],
            )
            progress.log(str(unplugged))
            raise unplugged from second
        return "the old NIC was plugged in again", False
    left = hv_guests.changed_fields(
        _live_settings(conn, name, operation.params["mac"]), _settings_of(state["new_interface_xml"])
    )
    return ("the old NIC is still plugged in, unchanged", False) if left else ("the NIC was plugged in already", True)


@operation_kind(OperationKind.GUEST_INTERFACE_UPDATE, lock=HOST, recover=guest_interface_update_recover)
def guest_interface_update_run(operation: Operation, progress: Progress) -> Outcome:
    """The running guest first (in place, else detach + attach), then its config."""
    params = operation.params
    scope = params["scope"]
    conn, before = guest_definitions(operation, progress)
    check_scope(before, scope)
    result = {"summary": params["summary"], "mac": params["mac"], "scope": scope, "notes": []}
    with remirror_on_failure(operation):
        if scope != InterfaceScope.CONFIG:
            progress.step(30, f"Changing the running guest: {params['summary']}")
            result.update(_change_live(conn, operation, before, progress))
        if scope != InterfaceScope.LIVE:
            progress.step(70, "Changing the persistent config")
            try:
                result["config_method"] = _update_config_part(conn, operation, progress)
            except (HypervisorError, OperationRejected) as error:
                if scope == InterfaceScope.CONFIG:
                    raise
                result["config_error"] = str(error)  # the running guest has changed: say so, then fail
        after = hv_guests.read_definitions(conn, before.name)
    _mirror_guest(operation, conn)
    result["method"] = result.get("live_method") or result.get("config_method")
    before_xml, after_xml = guest_xml_pair(before, after, scope)
    if "config_error" in result:
        raise PartlyFailed(
            f"The running guest was changed, but its persistent config was not: {result['config_error']}", result
        )
    return Outcome(result, before_xml=before_xml, after_xml=after_xml)


def _change_live(conn, operation: Operation, before, progress: Progress) -> dict:
    params = operation.params
    current = hv_guests.find_interface(before.live_xml, params["mac"])
    if current is None:
        raise OperationRejected(f"{before.name} has no running interface {params['mac']} any more.")
    settings = hv_guests.interface_settings(current)
    wanted = apply_changes(settings, params["changes"])
    if not hv_guests.changed_fields(settings, wanted):
        return {"live_method": "already so"}
    new_xml = hv_guests.build_interface(wanted, xml.to_string(current))
    try:
        change = hv_guests.change_live(
            conn, before.name, new_xml, replug=needs_replug(settings, wanted), checkpoint=progress.checkpoint,
            log=progress.log,
        )  # fmt: skip
    except (hv_guests.DetachPending, hv_guests.NicUnplugged) as error:
        # The NIC is gone (or going): the whole message (with the XML to plug in) is logged,
        # and the XML is in the result, where the row's one-line error cannot hold it.
        progress.log(str(error))
        pending = isinstance(error, hv_guests.DetachPending)
        result = {"live_method": hv_guests.REPLUG, "interface_xml": error.interface_xml}
        raise PartlyFailed(str(error), {**result, ("detach_pending" if pending else "unplugged"): True}) from error
    except HypervisorError as error:
        if operation.checkpoint.get("replugging"):
            progress.log(f"Re-plugging failed: {error}")
        raise
    for note in change.notes:
        progress.log(note)
    left = hv_guests.changed_fields(hv_guests.interface_settings(xml.parse(change.interface_xml)), wanted)
    if left:
        raise PartlyFailed(
            f"libvirt applied the change but the running guest still differs in {', '.join(left)}.",
            {"live_method": change.method, "notes": list(change.notes)},
        )
    progress.log(f"Running guest changed by {change.method} in {change.seconds:.2f} s")
    return {"live_method": change.method, "seconds": round(change.seconds, 3), "notes": list(change.notes)}


def _settings_of(interface_xml: str) -> InterfaceSettings:
    return hv_guests.interface_settings(xml.parse(interface_xml))


def _live_settings(conn, name: str, mac: str) -> InterfaceSettings:
    return hv_guests.interface_settings(hv_guests.find_interface(hv_guests.dom_xml(conn, name), mac))


def _update_config_part(conn, operation: Operation, progress: Progress) -> str:
    """Apply the changes to the persistent definition (read again: the live part may have
    taken a while). Returns the method ("already so" when it has them)."""
    params = operation.params
    config = hv_guests.read_definitions(conn, operation.target_name).config_xml
    current = hv_guests.find_interface(config, params["mac"])
    if current is None:
        raise OperationRejected(f"{operation.target_name}'s persistent config has no interface {params['mac']}.")
    settings = hv_guests.interface_settings(current)
    wanted = apply_changes(settings, params["changes"])
    if not hv_guests.changed_fields(settings, wanted):
        return "already so"
    method = hv_guests.update_config(
        conn, operation.target_name, hv_guests.build_interface(wanted, xml.to_string(current))
    )
    progress.checkpoint(config_done=True)
    return method


def scope_parts(scope: str) -> list[str]:
    return {"live": ["live"], "config": ["config"], "both": ["live", "config"]}[scope]


def guest_xml_of(definitions, part: str) -> str:
    return definitions.live_xml if part == "live" else definitions.config_xml


def _outcome(params: dict, method: str, before, after) -> Outcome:
    before_xml, after_xml = guest_xml_pair(before, after, params["scope"])
    result = {"summary": params["summary"], "mac": params["mac"], "scope": params["scope"], "method": method}
    return Outcome(result, before_xml=before_xml, after_xml=after_xml)


# ---------------------------------------------------------------- the mirror


def _guest_row(operation: Operation) -> Guest | None:
    return Guest.objects.filter(host=operation.host, name=operation.target_name).first()


def _mirror_guest(operation: Operation, conn) -> None:
    """Write the guest as its host has it now (the same rows a sync writes); its port forwards
    are then applied again, since a NIC they point at may have moved or gone."""
    host = operation.host
    try:
        info = hv_guests.read_guest(conn, operation.target_name)
    except NotFound:
        with transaction.atomic():
            lock_host(host.pk)  # as every writer of the host's mirror: the sync and the watcher wait
            host.guests.filter(name=operation.target_name).delete()
    else:
        # The rows a host sync writes for one guest, the host's networks read under its lock.
        write_guest(host, info, now=timezone.now())
    forwards.after_guest_change(host, operation.target_name)


def mirror_guest_quietly(operation: Operation) -> None:
    """Mirror the guest after a failure; if the host cannot be read, ask for a host sync."""
    try:
        _mirror_guest(operation, host_connection(operation.host))
    except HypervisorError as error:
        logger.warning("Re-reading %s failed (%s): requesting a sync", operation.target_name, error)
        host_sync_request(
            host=operation.host, actor=None, source=AuditSource.SYSTEM,
            message=f"re-read after operation #{operation.pk} stopped part way",
        )  # fmt: skip
