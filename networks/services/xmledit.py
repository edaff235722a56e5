"""Editing a network's whole XML: what changed, whether net-update can apply it live, and
defining it as the new persistent config (then "restart pending") or restarting onto it."""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import asdict, dataclass

from lxml import etree

from networks.choices import OperationKind
from networks.hypervisor import networks as hv_networks
from networks.hypervisor import updates as hv_updates
from networks.hypervisor import xml
from networks.hypervisor.errors import HypervisorError
from networks.models import Network, Operation
from networks.operation_kinds import operation_kind

from .connections import host_connection
from .drift import xml_diff
from .operations import OperationRejected, Outcome, PartlyFailed, Progress, network_operation_request
from .permissions import authorize
from .restart import network_request_restart
from .sync import mirror_network, remirror_on_failure
from .xmlcheck import LIVE_SECTIONS, check_network_xml, entry_key


@dataclass(frozen=True)
class LiveUpdate:
    section: str
    # add-last, delete, modify (libvirt swaps the entry in one call), or replace: a changed
    # entry of a section without modify, sent as delete then add-last, and put back if the
    # add fails, so a failure in between never loses it.
    command: str
    fragment: str
    parent_index: int = -1
    old_fragment: str = ""  # replace: the entry deleted first


@dataclass(frozen=True)
class XmlAnalysis:
    diff: str
    live_updates: tuple[LiveUpdate, ...] | None  # None: the change needs a restart
    unchanged: bool

    @property
    def live_possible(self) -> bool:
        return self.live_updates is not None


def _entries(root: etree._Element, path: str) -> dict[tuple[int, str], etree._Element]:
    """(index of the parent <ip>, canonical text) → element, for one section."""
    return {entry_key(element, root): element for element in root.findall(path)}


def _without_live_sections(root: etree._Element) -> str:
    stripped = copy.deepcopy(root)
    for _section, path in LIVE_SECTIONS:
        for element in stripped.findall(path):
            element.getparent().remove(element)
    for dhcp in stripped.findall("ip/dhcp"):
        if len(dhcp) == 0:
            dhcp.getparent().remove(dhcp)  # libvirt drops an empty <dhcp> too
    for dns in stripped.findall("dns"):
        if len(dns) == 0 and not dns.attrib:
            dns.getparent().remove(dns)
    return etree.tostring(stripped, method="c14n", exclusive=True).decode()  # unused xmlns are no change


def analyse(current_xml: str, new_xml: str) -> XmlAnalysis:
    old = xml.without_runtime_state(current_xml)
    new = xml.without_runtime_state(new_xml)
    diff = xml_diff(xml.to_string(old), xml.to_string(new), "current", "new")
    if _without_live_sections(old) != _without_live_sections(new):
        return XmlAnalysis(diff, None, False)
    updates = []
    for section, path in LIVE_SECTIONS:
        updates += _section_updates(section, _entries(old, path), _entries(new, path))
    return XmlAnalysis(diff, tuple(updates), not updates)


# How an entry keeps its identity when it changes, for sections libvirt cannot modify: the
# old and new versions are then sent as one replace (delete, add, put back on failure).
_REPLACE_IDENTITY = {
    "ip-dhcp-range": ("start",),
    "dns-host": ("ip",),
    "dns-txt": ("name",),
    "dns-srv": ("service", "protocol", "domain", "target"),
}


def _section_updates(section: str, before: dict, after: dict) -> list[LiveUpdate]:
    """Deletes of entries gone, then modifies or replaces of changed ones, then adds."""
    removed = {key: before[key] for key in sorted(before.keys() - after.keys())}
    added = {key: after[key] for key in sorted(after.keys() - before.keys())}
    pairs = []
    for key, element in list(added.items()):
        match = _changed_from(section, key, element, removed)
        if match is None:
            continue
        old, new = removed.pop(match), added.pop(key)
        if _modify_is_exact(section, key, new, before, match):
            pairs.append(LiveUpdate(section, "modify", xml.to_string(new), key[0]))
        else:
            pairs.append(LiveUpdate(section, "replace", xml.to_string(new), key[0], old_fragment=xml.to_string(old)))
    deletes = [LiveUpdate(section, "delete", xml.to_string(e), key[0]) for key, e in removed.items()]
    adds = [LiveUpdate(section, "add-last", xml.to_string(e), key[0]) for key, e in added.items()]
    return deletes + pairs + adds


# How an entry keeps its identity when it changes. For ip-dhcp-host and portgroup libvirt
# can swap the entry in one call (modify); for the others the change is sent as a replace.
_IDENTITY = {
    "ip-dhcp-host": ("mac", "ip", "name"),  # any one of them in common
    "portgroup": ("name",),
    "ip-dhcp-range": ("start",),
    "dns-host": ("ip",),
    "dns-txt": ("name",),
    "dns-srv": ("service", "protocol", "domain", "target"),
}


def _changed_from(section: str, key, element, removed: dict):
    """The key of the removed entry (same `<ip>`) that `element` is a new version of, or None."""
    candidates = [k for k, old in removed.items() if k[0] == key[0] and _same_identity(section, old, element)]
    return candidates[0] if candidates else None


def _same_identity(section: str, old: etree._Element, new: etree._Element) -> bool:
    attributes = _IDENTITY.get(section)
    if attributes is None:  # forward-interface: an entry is nothing but its identity
        return False
    if section == "ip-dhcp-host":
        return _same_any(section, old, new)
    return all(_normal(a, old.get(a)) == _normal(a, new.get(a)) for a in attributes)


def _modify_is_exact(section: str, key, new: etree._Element, before: dict, match) -> bool:
    """libvirt's modify replaces the FIRST entry matching any identity attribute, and checks
    no other entry against the new one (docs/libvirt.md): it is sent only when exactly one
    current entry matches, and that is the one being changed."""
    if section not in MODIFIABLE:
        return False
    matching = [k for k, old in before.items() if k[0] == key[0] and _same_any(section, old, new)]
    return matching == [match]


MODIFIABLE = {"ip-dhcp-host", "portgroup"}


def _same_any(section: str, old: etree._Element, new: etree._Element) -> bool:
    return any(
        new.get(attribute) is not None
        and _normal(attribute, old.get(attribute)) == _normal(attribute, new.get(attribute))
        for attribute in _IDENTITY[section]
    )


def _normal(attribute: str, value: str | None):
    if value is None or attribute not in {"mac", "ip"}:
        return value
    if attribute == "mac":
        return value.lower()
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return value


def check_new_xml(network: Network, new_xml: str) -> None:
    """The checks of every section form and of the whole document (networks/services/xmlcheck.py)."""
    check_network_xml(network, new_xml)


def network_xml_preview(*, network: Network, new_xml: str) -> XmlAnalysis:
    check_new_xml(network, new_xml)
    try:
        return analyse(network.inactive_xml or network.live_xml, new_xml)
    except HypervisorError as error:  # the mirror's XML, as a host sent it
        raise OperationRejected(f"The network's current XML cannot be read ({error}): sync the host.") from None


def network_request_xml_change(
    *, network: Network, new_xml: str, apply: str, actor, source: str, message: str = ""
) -> Operation:
    """apply: "live" (net-update, only if possible), "define" (persistent config; a running
    network then has a restart pending) or "restart" (define and restart, rolled back on failure)."""
    authorize(actor=actor, action="network.xml_edit", host=network.host, source=source, object_name=network.name)
    analysis = network_xml_preview(network=network, new_xml=new_xml)
    if analysis.unchanged:
        raise OperationRejected("The XML does not change anything.")
    if apply == "restart":
        return network_request_restart(network=network, actor=actor, source=source, message=message, new_xml=new_xml)
    if apply == "live" and not (analysis.live_possible and network.active):
        raise OperationRejected("This change cannot be applied to the running network: save it and restart.")
    if apply not in {"live", "define"}:
        raise OperationRejected("Choose live, define or restart.")
    return network_operation_request(
        kind=OperationKind.NETWORK_XML_LIVE if apply == "live" else OperationKind.NETWORK_DEFINE,
        network=network,
        actor=actor,
        source=source,
        params={"xml": new_xml},
        message=message,
    )


@operation_kind(OperationKind.NETWORK_DEFINE)
def network_define_run(operation: Operation, progress: Progress) -> Outcome:
    conn = host_connection(operation.host)
    before = hv_networks.get_network(conn, operation.target_name)
    progress.step(40, "Defining the new persistent config (libvirt validates it)")
    with remirror_on_failure(operation) as guard:
        guard.touch()
        info = hv_networks.redefine_network(conn, operation.params["xml"])
    mirror_network(operation.host, info)
    pending = info.active and info.inactive_xml != before.inactive_xml
    return Outcome({"restart_pending": pending}, before_xml=before.inactive_xml, after_xml=info.inactive_xml)


def _recover_xml_live(operation: Operation, progress: Progress) -> Outcome:
    """A worker died mid-edit: put back an entry it deleted but had not yet re-added, then
    say whether the host now has the whole edit."""
    conn = host_connection(operation.host)
    updater = hv_updates.NetworkUpdater(conn, operation.target_name, "both")
    replacing = operation.checkpoint.get("replacing")
    restored = bool(replacing) and restore_if_lost(updater, LiveUpdate(**replacing))
    after = updater.read()
    mirror_network(operation.host, after)
    done = analyse(after.inactive_xml, operation.params["xml"]).unchanged
    what = "the edit is on the host" if done else "the edit is only partly on the host"
    if restored:
        what = f"an entry it had deleted to change was put back; {what}"
    return Outcome({"recovery": what, "completed": done}, after_xml=after.inactive_xml)


@operation_kind(OperationKind.NETWORK_XML_LIVE, recover=_recover_xml_live)
def network_xml_live_run(operation: Operation, progress: Progress) -> Outcome:
    """Apply the XML's changes with net-update, computed again against the host's XML."""
    conn = host_connection(operation.host)
    before = hv_networks.get_network(conn, operation.target_name)
    analysis = analyse(before.inactive_xml, operation.params["xml"])
    if not analysis.live_possible:
        raise OperationRejected("The network changed since the request: this edit now needs a restart.")
    updater = hv_updates.NetworkUpdater(conn, operation.target_name, "both")
    done = []
    with remirror_on_failure(operation) as guard:
        for number, update in enumerate(analysis.live_updates, start=1):
            progress.step(10 + int(80 * number / len(analysis.live_updates)), f"{update.command} {update.section}")
            guard.touch()
            try:
                apply_live_update(updater, progress, update)
            except HypervisorError as error:
                raise PartlyFailed(
                    f"Stopped at {update.command} {update.section}: {error}", {"applied": done}
                ) from None
            done.append(f"{update.command} {update.section}")
    after = updater.read()
    mirror_network(operation.host, after)
    return Outcome({"applied": done}, before_xml=before.inactive_xml, after_xml=after.inactive_xml)


def apply_live_update(
    updater: hv_updates.NetworkUpdater, progress: Progress, update: LiveUpdate, scope: str = "both"
) -> None:
    """One net-update entry; a replace is a delete then an add, with the old entry put back
    if the add fails. `scope` is the updater's: the config whose XML says what is present."""
    if update.command != "replace":
        updater.apply(
            command=update.command, section=update.section, fragment=update.fragment, parent_index=update.parent_index
        )
        return
    # Recorded first: a worker killed between the delete and the add leaves what to put back.
    progress.checkpoint(replacing=asdict(update))
    updater.apply(command="delete", section=update.section, fragment=update.old_fragment,
                  parent_index=update.parent_index)  # fmt: skip
    try:
        updater.apply(command="add-last", section=update.section, fragment=update.fragment,
                      parent_index=update.parent_index)  # fmt: skip
    except HypervisorError:
        restore_if_lost(updater, update, scope)
        raise
    progress.checkpoint(replacing=None)


def scope_xml(state, scope: str) -> str:
    """The XML a change of `scope` works on: the running one for "live", else the persistent one."""
    return state.live_xml if scope == "live" else (state.inactive_xml or state.live_xml)


def restore_if_lost(updater: hv_updates.NetworkUpdater, update: LiveUpdate, scope: str = "both") -> bool:
    """Add the old entry back when neither it nor its new version is in the XML of the scope."""
    root = xml.without_runtime_state(scope_xml(updater.read(), scope))
    present = {key[1] for _section, path in LIVE_SECTIONS for key in _entries(root, path)}
    if {_canonical(update.old_fragment), _canonical(update.fragment)} & present:
        return False
    updater.apply(command="add-last", section=update.section, fragment=update.old_fragment,
                  parent_index=update.parent_index)  # fmt: skip
    return True


def _canonical(fragment: str) -> str:
    return etree.tostring(xml.parse(fragment), method="c14n", exclusive=True).decode()
