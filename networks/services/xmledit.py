"""Editing a network's whole XML: what changed, whether net-update can apply it live, and
defining it as the new persistent config (then "restart pending") or restarting onto it."""

from __future__ import annotations

import copy
from dataclasses import dataclass

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
from .sync import mirror_network
from .xmlcheck import LIVE_SECTIONS, check_network_xml, entry_key


@dataclass(frozen=True)
class LiveUpdate:
    section: str
    command: str  # add-last or delete
    fragment: str
    parent_index: int = -1


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
        before, after = _entries(old, path), _entries(new, path)
        for key in before.keys() - after.keys():
            updates.append(LiveUpdate(section, "delete", xml.to_string(before[key]), key[0]))
        for key in sorted(after.keys() - before.keys()):
            updates.append(LiveUpdate(section, "add-last", xml.to_string(after[key]), key[0]))
    return XmlAnalysis(diff, tuple(updates), not updates)


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
    info = hv_networks.redefine_network(conn, operation.params["xml"])
    mirror_network(operation.host, info)
    pending = info.active and info.inactive_xml != before.inactive_xml
    return Outcome({"restart_pending": pending}, before_xml=before.inactive_xml, after_xml=info.inactive_xml)


@operation_kind(OperationKind.NETWORK_XML_LIVE)
def network_xml_live_run(operation: Operation, progress: Progress) -> Outcome:
    """Apply the XML's changes with net-update, computed again against the host's XML."""
    conn = host_connection(operation.host)
    before = hv_networks.get_network(conn, operation.target_name)
    analysis = analyse(before.inactive_xml, operation.params["xml"])
    if not analysis.live_possible:
        raise OperationRejected("The network changed since the request: this edit now needs a restart.")
    updater = hv_updates.NetworkUpdater(conn, operation.target_name, "both")
    done = []
    for number, update in enumerate(analysis.live_updates, start=1):
        progress.step(10 + int(80 * number / len(analysis.live_updates)), f"{update.command} {update.section}")
        try:
            updater.apply(
                command=update.command, section=update.section, fragment=update.fragment,
                parent_index=update.parent_index,
            )  # fmt: skip
        except HypervisorError as error:
            mirror_network(operation.host, updater.read())
            raise PartlyFailed(f"Stopped at {update.command} {update.section}: {error}", {"applied": done}) from None
        done.append(f"{update.command} {update.section}")
    after = updater.read()
    mirror_network(operation.host, after)
    return Outcome({"applied": done}, before_xml=before.inactive_xml, after_xml=after.inactive_xml)
