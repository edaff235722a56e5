"""Desired-state documents: a host's networks exported as YAML, and documents read back.

A document holds, per network, its full libvirt XML (libvirt's own schema, so nothing is
lost in translation) with `active` and `autostart`. The UUID and the bridge MAC are left
out: libvirt assigns them per host, and without them a document is portable and the
re-export of a host it was applied to compares equal. Documents come from users: they are
read with YAML's safe loader only, bounded in size, values and depth, refused if they use
anchors or aliases (a YAML bomb), repeat a key, or carry anything but the fields below
(`DocumentRejected`, a 400).
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass

import yaml
from django.utils import timezone
from lxml import etree

from networks.hypervisor import xml
from networks.hypervisor.errors import HypervisorError
from networks.models import Host, Network

from .networks import NETWORK_NAME_RE
from .operations import OperationRejected
from .xmlcheck import check_entry_shapes, check_network_xml, parse_user_xml

FORMAT = "networks/v1"
MAX_DOCUMENT_CHARS = 1024 * 1024
MAX_NETWORKS = 500
# 500 networks of 9 values each (a mapping, 4 keys, 4 values) and the header, with room to spare.
MAX_NODES = 10_000
HEADER_KEYS = {"kvmweb", "exported_from", "exported_at", "networks"}
ENTRY_KEYS = {"name", "xml", "active", "autostart"}
MAX_DEPTH = 20  # a document needs 3: the header, the list of networks, an entry
# libyaml's reader where it is installed: the pure-Python one is many times slower.
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DocumentRejected(OperationRejected):
    """The document cannot be used as it is; nothing was planned or changed."""


@dataclass(frozen=True)
class DesiredNetwork:
    name: str
    xml: str  # portable: no UUID, no bridge MAC, no runtime state
    active: bool
    autostart: bool


# ---------------------------------------------------------------- XML without what a host assigns


# The order libvirt writes a network's elements in; a document may use any order.
ELEMENT_ORDER = (
    "name", "uuid", "title", "description", "metadata", "forward", "bridge", "mtu", "mac", "domain", "dns",
    "vlan", "bandwidth", "virtualport", "ip", "route", "portgroup",
)  # fmt: skip
# Modes whose bridge libvirt creates itself (none: an isolated network).
OWN_BRIDGE_MODES = {None, "nat", "route", "open"}


def normalised_root(network_xml: str) -> etree._Element:
    """The config as libvirt stores it once defined, so that a hand-written document and the
    host's config compare equal: the defaults libvirt writes (forward mode nat, STP on and
    delay 0 on a bridge it creates), its element order, no runtime state."""
    root = xml.without_runtime_state(network_xml)
    forward = root.find("forward")
    if forward is not None and forward.get("mode") is None:
        forward.set("mode", "nat")
    if (None if forward is None else forward.get("mode")) in OWN_BRIDGE_MODES:
        bridge = root.find("bridge")
        if bridge is None:
            bridge = etree.SubElement(root, "bridge")
        for attribute, default in (("stp", "on"), ("delay", "0")):
            if bridge.get(attribute) is None:
                bridge.set(attribute, default)
    for element in root.iter():
        if element.text is not None and not element.text.strip():
            element.text = None  # libvirt writes an empty <ip> over two lines
        element.tail = None
    rank = {tag: index for index, tag in enumerate(ELEMENT_ORDER)}
    children = sorted(
        root, key=lambda child: rank.get(child.tag, len(rank)) if isinstance(child.tag, str) else len(rank)
    )
    root[:] = children
    return root


def portable_root(network_xml: str, keep_bridge_name: bool = True) -> etree._Element:
    """The network's config as another host would take it: no UUID, no bridge MAC (and, if
    asked, no bridge name), no runtime state."""
    root = normalised_root(network_xml)
    for element in [*root.findall("uuid"), *root.findall("mac")]:
        root.remove(element)
    if not keep_bridge_name and root.find("bridge") is not None:
        root.find("bridge").attrib.pop("name", None)
    return root


def portable_xml(network_xml: str) -> str:
    return xml.to_string(portable_root(network_xml))


def _c14n(root: etree._Element) -> str:
    # Exclusive C14N: attribute order and an unused namespace declaration are no change.
    return etree.tostring(root, method="c14n", exclusive=True).decode()


def same_config(document_xml: str, current_xml: str) -> bool:
    """Whether the host's config is what the document asks for, whatever the host assigned
    itself: UUID, bridge MAC, and the bridge name where the document leaves it to the host."""
    document = portable_root(document_xml)
    names_bridge = document.find("bridge") is not None and document.find("bridge").get("name")
    return _c14n(document) == _c14n(portable_root(current_xml, keep_bridge_name=bool(names_bridge)))


def for_host(document_xml: str, current_xml: str) -> str:
    """The document's XML as libvirt would store it, with what the host gave the network:
    its UUID (libvirt refuses a redefine with another), its bridge MAC (else a new one) and,
    if the document names no bridge, the host's bridge name (else libvirt may pick another)."""
    root = normalised_root(document_xml)
    current = xml.parse(current_xml)
    for tag in ("uuid", "mac"):
        if current.find(tag) is not None and root.find(tag) is None:
            root.append(copy.deepcopy(current.find(tag)))
    bridge, current_bridge = root.find("bridge"), current.find("bridge")
    if bridge is not None and not bridge.get("name") and current_bridge is not None and current_bridge.get("name"):
        bridge.set("name", current_bridge.get("name"))
    return xml.to_string(normalised_root(xml.to_string(root)))


def check_create_xml(name: str, network_xml: str) -> etree._Element:
    """Edit XML's rules for a whole document (size, entities, namespaces, dnsmasq options,
    control characters, bridge, forward, MTU, domain, addresses, tftp) and the shape of each
    entry (no attribute or child libvirt would drop). The entries' values are not checked as a
    form checks a new one: the forms are stricter than libvirt (a name on both an IPv4 and an
    IPv6 reservation, portgroup VLANs), and a network copied from a host that runs it must be
    accepted as it is."""
    root = check_network_xml(Network(name=name, inactive_xml=network_xml), network_xml)
    check_entry_shapes(xml.without_runtime_state(network_xml))
    return root


# ---------------------------------------------------------------- export (from the mirror)


def network_config(network: Network) -> str:
    return network.inactive_xml or network.live_xml


def export_networks(host: Host, names: list[str] | None = None) -> str:
    """The host's networks (or the ones named) as a document, from the mirror."""
    networks = list(host.networks.order_by("name"))
    if names is not None:
        missing = sorted(set(names) - {network.name for network in networks})
        if missing:
            raise DocumentRejected(f"{host.name} has no network named {', '.join(map(repr, missing))}.")
        networks = [network for network in networks if network.name in names]
    entries = []
    for network in networks:
        try:
            config = portable_xml(network_config(network))
        except HypervisorError as error:
            raise DocumentRejected(f"The XML of {network.name} cannot be read ({error}): sync the host.") from None
        entries.append({"name": network.name, "active": network.active, "autostart": network.autostart, "xml": config})
    header = {"kvmweb": FORMAT, "exported_from": host.name, "exported_at": timezone.now().isoformat(timespec="seconds")}
    return yaml.dump({**header, "networks": entries}, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the XML) as literal blocks, readable and diffable."""


def _text(dumper, value: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


# ---------------------------------------------------------------- reading a document


def parse_document(text) -> list[DesiredNetwork]:
    """The networks a document asks for, each XML checked as Edit XML checks it."""
    data = _load(text)
    if not isinstance(data, dict):
        raise DocumentRejected("The document must be a YAML mapping with `kvmweb: networks/v1` and `networks:`.")
    unknown = sorted(map(str, set(data) - HEADER_KEYS))
    if unknown:
        raise DocumentRejected(f"Unknown key {unknown[0]!r} at the top of the document.")
    if data.get("kvmweb") != FORMAT:
        raise DocumentRejected(f"This is not a kvmweb networks document: it needs `kvmweb: {FORMAT}`.")
    entries = data.get("networks")
    if not isinstance(entries, list):
        raise DocumentRejected("`networks` must be a list of networks.")
    if len(entries) > MAX_NETWORKS:
        raise DocumentRejected(f"A document holds at most {MAX_NETWORKS} networks; this has {len(entries)}.")
    networks = [_entry(number, entry) for number, entry in enumerate(entries, start=1)]
    repeated = sorted(name for name, count in Counter(network.name for network in networks).items() if count > 1)
    if repeated:
        raise DocumentRejected(f"The network {repeated[0]!r} is in the document more than once.")
    return networks


def _load(text):
    if not isinstance(text, str):
        raise DocumentRejected("Send the document as text.")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise DocumentRejected(f"A document has at most {MAX_DOCUMENT_CHARS:,} characters; this has {len(text):,}.")
    try:
        _refuse_aliases_depth_and_size(text)
        loader = Loader(text)
        try:
            node = loader.get_single_node()
            _refuse_repeats(node)
            return None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        raise DocumentRejected(f"This is not readable YAML: {_first_line(error)}") from None


def _first_line(error: yaml.YAMLError) -> str:
    return str(error).strip().splitlines()[0][:200]


def _refuse_aliases_depth_and_size(text: str) -> None:
    """Anchors and aliases let a few lines stand for gigabytes; deep nesting exhausts the
    stack of the reader, which composes recursively (libyaml's binding crashes the process);
    and each node costs memory and time. The parser's flat event stream is read first, and
    stops at the first of them, before any node is built."""
    depth = nodes = 0
    for event in yaml.parse(text, Loader=Loader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise DocumentRejected("YAML anchors and aliases (& and *) are not accepted in a document.")
        if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
            nodes += 1
            if nodes > MAX_NODES:
                raise DocumentRejected(f"The document has more than {MAX_NODES:,} YAML values.")
        depth += isinstance(event, yaml.CollectionStartEvent) - isinstance(event, yaml.CollectionEndEvent)
        if depth > MAX_DEPTH:
            raise DocumentRejected(f"The document nests deeper than {MAX_DEPTH} levels.")


def _refuse_repeats(node) -> None:
    """A repeated key would be read as its last value, silently."""
    stack = [node] if node is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            counts = Counter(key.value for key, _value in node.value if isinstance(key, yaml.ScalarNode))
            repeated = [key for key, count in counts.items() if count > 1]
            if repeated:
                raise DocumentRejected(f"The key {str(repeated[0])[:60]!r} appears twice in one mapping.")
            stack.extend(value for _key, value in node.value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _entry(number: int, entry) -> DesiredNetwork:
    where = f"networks entry {number}"
    if not isinstance(entry, dict):
        raise DocumentRejected(f"{where} must be a mapping with name, xml, active and autostart.")
    unknown = sorted(map(str, set(entry) - ENTRY_KEYS))
    if unknown:
        raise DocumentRejected(f"{where}: unknown key {unknown[0][:60]!r}.")
    name = entry.get("name")
    if not isinstance(name, str) or not NETWORK_NAME_RE.match(name):
        raise DocumentRejected(f"{where}: `name` must be a network name (letters, digits, '.', '_', '-').")
    where = f"network {name}"
    flags = {}
    for flag, default in (("active", True), ("autostart", False)):
        value = entry.get(flag, default)
        if not isinstance(value, bool):
            raise DocumentRejected(f"{where}: `{flag}` must be true or false.")
        flags[flag] = value
    return DesiredNetwork(name, _entry_xml(where, name, entry.get("xml")), **flags)


def _entry_xml(where: str, name: str, network_xml) -> str:
    if not isinstance(network_xml, str):
        raise DocumentRejected(f"{where}: `xml` must be the network's XML, as text.")
    try:
        root = parse_user_xml(network_xml)
        if root.findtext("name") != name:
            raise DocumentRejected(f"the XML names the network {root.findtext('name', '')[:60]!r}.")
        for tag, why in (("uuid", "a UUID"), ("mac", "a bridge MAC")):
            if root.find(tag) is not None:
                raise DocumentRejected(f"remove <{tag}>: each host gives a network {why} of its own.")
        check_create_xml(name, network_xml)
    except OperationRejected as error:
        raise DocumentRejected(f"{where}: {error}") from None
    return portable_xml(network_xml)
