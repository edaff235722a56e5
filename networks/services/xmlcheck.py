"""Checking a whole network XML a user sends (Edit XML, a restart onto new XML) before libvirt sees it.

Every entry the XML adds or changes goes through the same section checks as the forms (each
through its section's `plan("add-last", ...)` against the network built up so far, as a CSV
import does); the rest are rules only a whole document can break: its size, DOCTYPEs and
entities (refused by the parser), foreign namespaces, and `<dnsmasq:options>`, which libvirt
copies unchecked into the config of a dnsmasq that runs as root.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections import Counter
from dataclasses import replace

from django.conf import settings
from django.core.exceptions import ValidationError
from lxml import etree

from networks.hypervisor import xml
from networks.hypervisor.errors import HypervisorError
from networks.hypervisor.types import DhcpRange, ForwardInterface, NetworkInfo

from .create import BRIDGE_NAME_RE, MTU_RANGE
from .netupdate import SECTIONS, bulk
from .netupdate.common import hostname, interface_name, ip_address, number, shown, text
from .operations import OperationRejected

MAX_XML_CHARS = 1024 * 1024
# Far more than any network needs; each new entry is checked against all the others.
MAX_ELEMENTS = 20_000
MAX_NEW_ENTRIES = bulk.MAX_ROWS
DNSMASQ_NS = "http://libvirt.org/schemas/network/dnsmasq/1.0"
# dnsmasq options that run a program, read or write a file or directory, change the user it
# runs as, serve files, or write into the host's firewall sets: refused even when a deployer
# allows them, because the network's dnsmasq runs as root on the hypervisor.
DNSMASQ_OPTIONS_NEVER = frozenset(
    {
        "dhcp-script", "dhcp-luascript", "dhcp-scriptuser", "conf-file", "conf-dir", "conf-script",
        "addn-hosts", "hostsdir", "dhcp-hostsfile", "dhcp-hostsdir", "dhcp-optsfile", "dhcp-optsdir",
        "dhcp-leasefile", "servers-file", "resolv-file", "log-facility", "pid-file", "enable-tftp",
        "tftp-root", "dumpfile", "read-ethers", "user", "group", "dnssec-timestamp", "ipset", "nftset",
        "enable-dbus", "enable-ubus",
    }
)  # fmt: skip
# Sections net-update can change on a running network: (section, path of the element).
LIVE_SECTIONS = (
    ("ip-dhcp-host", "ip/dhcp/host"),
    ("ip-dhcp-range", "ip/dhcp/range"),
    ("dns-host", "dns/host"),
    ("dns-txt", "dns/txt"),
    ("dns-srv", "dns/srv"),
    ("portgroup", "portgroup"),
    ("forward-interface", "forward/interface"),
)
# The attributes and child elements an entry of each section may have.
ENTRY_SHAPES = {
    "ip-dhcp-host": ({"mac", "id", "name", "ip"}, {"lease"}),
    "ip-dhcp-range": ({"start", "end"}, {"lease"}),
    "dns-host": ({"ip"}, {"hostname"}),
    "dns-txt": ({"name", "value"}, set()),
    "dns-srv": ({"service", "protocol", "domain", "target", "port", "priority", "weight"}, set()),
    "portgroup": ({"name", "default", "trustGuestRxFilters"}, {"vlan", "bandwidth", "virtualport"}),
    "forward-interface": ({"dev"}, set()),
}
FREE_TEXT = {"description", "title"}  # elements whose text libvirt keeps and never hands to dnsmasq
LEASE_UNITS = {"seconds", "minutes", "hours"}
ZONE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a firewalld zone name


# ---------------------------------------------------------------- the document


def parse_user_xml(new_xml) -> etree._Element:
    """A `<network>` document of bounded size, parsed without entities, DTDs or the network."""
    if not isinstance(new_xml, str):
        raise OperationRejected("Send the XML as text.")
    if len(new_xml) > MAX_XML_CHARS:
        raise OperationRejected(f"The XML has at most {MAX_XML_CHARS:,} characters; this has {len(new_xml):,}.")
    try:
        root = xml.parse(new_xml)
    except HypervisorError as error:
        raise OperationRejected(str(error)) from None
    if root.tag != "network":
        raise OperationRejected("The XML must be a <network> definition.")
    if sum(1 for _ in root.iter()) > MAX_ELEMENTS:
        raise OperationRejected(f"The XML has more than {MAX_ELEMENTS:,} elements.")
    return root


def check_network_xml(network, new_xml) -> etree._Element:
    """Everything about `new_xml` as the next config of `network` (a mirror row); the parsed root."""
    root = parse_user_xml(new_xml)
    name = root.findtext("name", "")
    if name != network.name:
        raise OperationRejected(
            f"The XML must keep the name {network.name!r}: it names the network {shown(name)} "
            "(renaming is a separate action)."
        )
    if root.findtext("uuid") and network.uuid and root.findtext("uuid") != network.uuid:
        raise OperationRejected("The XML must keep the network's UUID.")
    _check_namespaces(root)
    problems = dnsmasq_option_problems(root)
    if problems:
        raise OperationRejected(problems[0])
    _check_values(root)
    _check_scalars(root)
    _check_entries(root, network.inactive_xml or network.live_xml)
    return root


def _outside_metadata(root: etree._Element):
    """Every element but `<metadata>`'s free-form content (libvirt keeps it and reads none of it)."""
    metadata = set(root.findall("metadata"))
    stack = [root]
    while stack:
        element = stack.pop()
        yield element
        if element not in metadata:
            stack.extend(child for child in element if isinstance(child.tag, str))


def _check_namespaces(root: etree._Element) -> None:
    """No element or attribute in a namespace, outside `<metadata>`, except dnsmasq's options.

    libvirt drops whatever else it does not know, so such XML would be silently altered."""
    for element in _outside_metadata(root):
        namespace = etree.QName(element).namespace
        if namespace == DNSMASQ_NS:
            _check_dnsmasq_shape(root, element)
        elif namespace is not None:
            raise OperationRejected(
                f"Elements in the namespace {shown(namespace)} are not accepted outside <metadata>: "
                "libvirt would drop them."
            )
        foreign = [key for key in element.attrib if key.startswith("{")]
        if foreign:
            raise OperationRejected(
                f"<{element.tag}> has an attribute in a namespace ({shown(foreign[0])}): libvirt would drop it."
            )


def _check_dnsmasq_shape(root: etree._Element, element: etree._Element) -> None:
    local = etree.QName(element).localname
    if local == "options" and element.getparent() is root and not element.attrib:
        return
    parent = element.getparent()
    is_option = local == "option" and etree.QName(parent).localname == "options" and parent.getparent() is root
    if not is_option or len(element) or set(element.attrib) - {"value"}:
        raise OperationRejected(
            "In the dnsmasq namespace only <dnsmasq:options> (under <network>) holding "
            "<dnsmasq:option value='…'/> elements are accepted."
        )


# ---------------------------------------------------------------- dnsmasq options


def dnsmasq_option_name(value: str) -> str:
    """The option a `<dnsmasq:option value=…>` sets, as dnsmasq reads its config file."""
    return value.split("=", 1)[0].strip().lower().removeprefix("--").strip()


def dnsmasq_option_problems(root: etree._Element, allowed=None) -> list[str]:
    """Why each of the network's dnsmasq options is refused (empty: all are fine)."""
    allowed = set(settings.KVMWEB_DNSMASQ_OPTIONS_ALLOWED if allowed is None else allowed)
    problems = []
    for option in root.iter(f"{{{DNSMASQ_NS}}}option"):
        value = option.get("value")
        try:
            value = text({"value": value}, "value", required=True)
        except ValidationError as error:
            problems.append(f"A <dnsmasq:option> needs a one-line value: {' '.join(error.messages)}")
            continue
        name = dnsmasq_option_name(value)
        if name in DNSMASQ_OPTIONS_NEVER:
            problems.append(
                f"The dnsmasq option {shown(name)} runs a program or names a file that the network's "
                "dnsmasq (running as root) would open: kvmweb never accepts it."
            )
        elif name not in allowed:
            listed = ", ".join(sorted(allowed)) or "none"
            problems.append(
                f"The dnsmasq option {shown(name)} is not allowed (KVMWEB_DNSMASQ_OPTIONS_ALLOWED: {listed})."
            )
    return problems


def network_xml_warnings(*xml_texts: str) -> tuple[str, ...]:
    """What a synced network's XML carries that kvmweb would refuse in an edit (for its page)."""
    found = []
    for xml_text in xml_texts:
        try:
            root = xml.parse(xml_text) if xml_text else None
        except HypervisorError:
            continue
        if root is not None:
            found.extend(dnsmasq_option_problems(root))
    return tuple(dict.fromkeys(found))


# ---------------------------------------------------------------- values anywhere in the document


def _check_values(root: etree._Element) -> None:
    """No control character, line break or invisible character in any attribute or text:
    libvirt writes many of these values into dnsmasq's config and hosts files line by line."""
    for element in _outside_metadata(root):
        for key, value in element.attrib.items():
            _printable(value, f"<{element.tag} {key}>")
        if len(element) == 0 and element.text and element.tag not in FREE_TEXT:
            _printable(element.text.strip(), f"<{element.tag}>")


def _printable(value: str, where: str) -> None:
    if not value.isprintable():
        raise OperationRejected(
            f"{where}: control characters, line breaks and invisible characters are not allowed ({shown(value)})."
        )


def _checked(where: str, check) -> object:
    """Run a form field check on one value of the XML; its error names where it is."""
    try:
        return check()
    except ValidationError as error:
        raise OperationRejected(f"{where}: {' '.join(error.messages)}") from None


def _check_scalars(root: etree._Element) -> None:
    """The parts of a network no net-update section covers, with the create form's rules."""
    bridge = root.find("bridge")
    if bridge is not None and bridge.get("name") and not BRIDGE_NAME_RE.match(bridge.get("name")):
        raise OperationRejected(
            f"<bridge name>: {shown(bridge.get('name'))} is not a bridge name "
            "(at most 15 letters, digits, '.', '_' or '-')."
        )
    if bridge is not None and bridge.get("zone") and not ZONE_RE.fullmatch(bridge.get("zone")):
        raise OperationRejected(f"<bridge zone>: {shown(bridge.get('zone'))} is not a firewalld zone name.")
    for where, element in (("<forward dev>", root.find("forward")), ("<pf dev>", root.find("forward/pf"))):
        if element is not None and element.get("dev") is not None:
            _checked(where, lambda e=element: interface_name({"dev": e.get("dev")}))
    mtu = root.find("mtu")
    if mtu is not None:
        _checked("<mtu size>", lambda: number({"size": mtu.get("size")}, "size", low=MTU_RANGE[0], high=MTU_RANGE[1]))
    domain = root.find("domain")
    if domain is not None:
        _checked("<domain name>", lambda: hostname({"name": domain.get("name")}, "name", required=True))
    for forwarder in root.findall("dns/forwarder"):
        if forwarder.get("domain") is not None:
            _checked("<forwarder domain>", lambda f=forwarder: hostname({"domain": f.get("domain")}, "domain"))
        if forwarder.get("addr") is not None:
            _checked("<forwarder addr>", lambda f=forwarder: ip_address({"addr": f.get("addr")}, "addr"))
    if root.find("ip/tftp") is not None:
        raise OperationRejected(
            "<tftp> makes the network's dnsmasq serve a directory of the host to its guests: not accepted."
        )
    for ip in root.findall("ip"):
        _check_ip(ip)


def _check_ip(ip: etree._Element) -> None:
    address = _checked("<ip address>", lambda: ip_address({"address": ip.get("address")}, "address"))
    family = ip.get("family")
    if family not in (None, "ipv4", "ipv6") or (family and family != f"ipv{address.version}"):
        raise OperationRejected(f"<ip family>: {shown(family)} does not match the address {address}.")
    if ip.get("prefix") is not None:
        _checked(
            "<ip prefix>", lambda: number({"prefix": ip.get("prefix")}, "prefix", low=1, high=address.max_prefixlen)
        )
    if ip.get("netmask") is not None:
        try:
            ipaddress.IPv4Network(f"0.0.0.0/{ip.get('netmask')}")
        except ValueError:
            raise OperationRejected(f"<ip netmask>: {shown(ip.get('netmask'))} is not an IPv4 netmask.") from None
        if address.version != 4:
            raise OperationRejected("<ip netmask>: an IPv6 address takes a prefix, not a netmask.")


# ---------------------------------------------------------------- entries of the live sections


def entry_key(element: etree._Element, root: etree._Element) -> tuple[int, str]:
    """(index of the parent `<ip>`, or -1; canonical XML): equal for the same entry in two documents."""
    index = -1
    if element.getparent() is not None and element.getparent().tag == "dhcp":
        index = root.findall("ip").index(element.getparent().getparent())
    # Exclusive C14N: a namespace declared on <network> (dnsmasq's) must not make every entry differ.
    return index, etree.tostring(element, method="c14n", exclusive=True).decode()


def new_entries(root: etree._Element, current: etree._Element) -> list[tuple[str, etree._Element]]:
    """(section, element) of each entry of `root` that `current` does not have, in document order.
    An entry written twice counts twice: libvirt would get both."""
    found = []
    for section, path in LIVE_SECTIONS:
        known = Counter(entry_key(element, current) for element in current.findall(path))
        for element in root.findall(path):
            key = entry_key(element, root)
            if known[key]:
                known[key] -= 1
            else:
                found.append((section, element))
    return found


def _check_entries(root: etree._Element, current_xml: str) -> None:
    """Check each added or changed entry as its form would, against the network built so far."""
    root = xml.without_runtime_state(xml.to_string(root))
    current = _current_config(current_xml)
    added = new_entries(root, current)
    if len(added) > MAX_NEW_ENTRIES:
        raise OperationRejected(f"At most {MAX_NEW_ENTRIES} new or changed entries at once; this has {len(added)}.")
    base = copy.deepcopy(root)
    base_elements = dict(zip(root.iter(), base.iter(), strict=True))
    for _section, element in added:
        twin = base_elements[element]
        twin.getparent().remove(twin)
    info = _network_info(base)
    for section, element in added:
        info = _check_entry(section, element, root, info)


def _current_config(current_xml: str) -> etree._Element:
    """The mirror's config; if a host ever sent XML kvmweb cannot read, every entry is checked."""
    try:
        return xml.without_runtime_state(current_xml)
    except HypervisorError:
        return etree.Element("network")


def _network_info(root: etree._Element) -> NetworkInfo:
    try:
        return xml.parse_network(xml.to_string(root))
    except (ValueError, TypeError) as error:  # a number libvirt could not read either
        raise OperationRejected(f"The XML has a value that is not a valid number: {shown(str(error))}") from None


def _describe(element: etree._Element) -> str:
    attributes = " ".join(f"{key}={shown(value)}" for key, value in list(element.attrib.items())[:3])
    return f"<{element.tag}{' ' if attributes else ''}{attributes}>"


def _check_entry(section: str, element: etree._Element, root: etree._Element, info: NetworkInfo) -> NetworkInfo:
    where = _describe(element)
    _check_shape(section, element, where)
    try:
        plan = SECTIONS[section].plan("add-last", _entry_values(section, element), info)
    except ValidationError as error:
        fields = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items())
        raise OperationRejected(f"{where}: {fields}") from None
    if section.startswith("ip-dhcp-"):
        written_in = root.findall("ip").index(element.getparent().getparent())
        if plan.parent_index != written_in:
            raise OperationRejected(f"{where}: the address belongs to another <ip> of this network.")
    return _with_entry(info, section, plan)


def check_entry_shapes(root: etree._Element) -> None:
    """The attributes and children of every entry of the live sections (a network created from
    a whole XML: libvirt would silently drop an attribute it does not know)."""
    for section, path in LIVE_SECTIONS:
        for element in root.findall(path):
            _check_shape(section, element, _describe(element))


def _check_shape(section: str, element: etree._Element, where: str) -> None:
    attributes, children = ENTRY_SHAPES[section]
    unknown = set(element.attrib) - attributes
    if unknown:
        raise OperationRejected(f"{where}: unknown attribute {shown(sorted(unknown)[0])}.")
    for child in element:
        if not isinstance(child.tag, str):
            continue  # a comment
        if child.tag not in children:
            raise OperationRejected(f"{where}: <{child.tag}> does not belong here.")
        if child.tag == "lease":
            _check_lease(child, where)
        if section == "dns-host":
            _checked(f"{where} <hostname>", lambda c=child: hostname({"hostnames": c.text or ""}, "hostnames"))
        if section == "portgroup":
            _check_portgroup_part(child, where)


def _check_lease(lease: etree._Element, where: str) -> None:
    if set(lease.attrib) - {"expiry", "unit"} or lease.get("unit", "minutes") not in LEASE_UNITS:
        raise OperationRejected(
            f"{where}: <lease> takes expiry (a number) and unit ({', '.join(sorted(LEASE_UNITS))})."
        )
    _checked(
        f"{where} <lease expiry>", lambda: number({"expiry": lease.get("expiry")}, "expiry", low=0, high=2**32 - 1)
    )


def _check_portgroup_part(child: etree._Element, where: str) -> None:
    if child.tag == "bandwidth":
        for direction in child:
            for key, value in direction.attrib.items():
                _checked(
                    f"{where} <{direction.tag} {key}>", lambda v=value: number({"v": v}, "v", low=0, high=2**32 - 1)
                )
    if child.tag == "vlan":
        for tag in child:
            if tag.get("nativeMode") not in (None, "tagged", "untagged"):
                raise OperationRejected(f"{where}: <tag nativeMode> is tagged or untagged.")


def _entry_values(section: str, element: etree._Element) -> dict:
    """The form fields of one entry, as the section's form would send them."""
    get = element.get
    if section == "ip-dhcp-host":
        return {"mac": get("mac", ""), "ip": get("ip", ""), "name": get("name", ""), "host_id": get("id", "")}
    if section == "ip-dhcp-range":
        return {"start": get("start", ""), "end": get("end", "")}
    if section == "dns-host":
        return {"ip": get("ip", ""), "hostnames": " ".join(h.text or "" for h in element.findall("hostname"))}
    if section == "portgroup":
        return {
            "name": get("name", ""),
            "is_default": get("default", "no"),
            "vlan_tags": " ".join(tag.get("id", "") for tag in element.findall("vlan/tag")),
            "inbound_average": element.xpath("string(bandwidth/inbound/@average)"),
            "outbound_average": element.xpath("string(bandwidth/outbound/@average)"),
        }
    return {key: get(key, "") for key in ENTRY_SHAPES[section][0]}  # txt, srv, forward interface


def _with_entry(info: NetworkInfo, section: str, plan) -> NetworkInfo:
    """`info` once the planned entry is added: later entries are checked against it."""
    element = xml.parse(plan.fragment)
    if section == "ip-dhcp-host":
        return bulk.with_host(info, plan.parent_index, xml.parse_dhcp_host(element))
    if section == "ip-dhcp-range":
        ips = list(info.ips)
        ip = ips[plan.parent_index]
        ips[plan.parent_index] = replace(
            ip, dhcp_ranges=(*ip.dhcp_ranges, DhcpRange(element.get("start"), element.get("end")))
        )
        return replace(info, ips=tuple(ips))
    if section.startswith("dns-"):
        return replace(info, dns_records=(*info.dns_records, xml.parse_dns_record(element)))
    if section == "portgroup":
        return replace(info, portgroups=(*info.portgroups, xml.parse_portgroup(element)))
    return replace(
        info, forward_interfaces=(*info.forward_interfaces, ForwardInterface("interface", dev=element.get("dev")))
    )
