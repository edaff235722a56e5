"""Reading libvirt XML into typed values, and building it, with lxml only."""

from __future__ import annotations

import ipaddress

from lxml import etree

from .errors import InvalidXml
from .types import (
    BandwidthLimit,
    DhcpHost,
    DhcpRange,
    DnsRecord,
    ForwardInterface,
    GuestInfo,
    GuestInterface,
    HostdevCapabilities,
    HostInterfaceInfo,
    IpConfig,
    NetworkInfo,
    NodeDeviceInfo,
    Portgroup,
)

# Never expand an entity, load a DTD or fetch anything: the XML may come from a user or a hostile host.
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False,
    remove_blank_text=True,
)  # fmt: skip


def parse(xml: str) -> etree._Element:
    """Parse libvirt XML; a DOCTYPE, an entity or a processing instruction is refused, since
    libvirt never writes one and each is a way to make a parser read files or blow up."""
    try:
        root = etree.fromstring(xml.encode(), _PARSER)
    except UnicodeEncodeError:
        raise InvalidXml("Malformed XML: it contains characters that are not Unicode text.") from None
    except etree.XMLSyntaxError as error:
        raise InvalidXml(f"Malformed XML: {error}") from error
    _refuse_declarations(root)
    return root


def _refuse_declarations(root: etree._Element) -> None:
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.externalDTD is not None or docinfo.system_url or docinfo.public_id:
        raise InvalidXml("XML with a DOCTYPE (or entity declarations) is not accepted.")
    if _contains(root, etree.ProcessingInstruction):
        raise InvalidXml("XML with processing instructions (<?…?>) is not accepted.")
    if _contains(root, etree.Entity):
        raise InvalidXml("XML with entity references other than &lt; &gt; &amp; &quot; &apos; is not accepted.")


def _contains(root: etree._Element, kind) -> bool:
    """Whether a node of `kind` is in the document: inside the root or beside it. (lxml filters
    by node kind in C: checking each node in Python cost more than parsing it.)"""
    return any(
        next(nodes, None) is not None
        for nodes in (root.iter(kind), root.itersiblings(kind, preceding=True), root.itersiblings(kind))
    )


def attribute(element: etree._Element, path: str, name: str) -> str:
    """XPath's `string(path/@name)`: the attribute of the first element at `path` that has it,
    "" when none has. (find/get: an xpath() call compiles its expression each time.)"""
    for found in element.iterfind(path):
        value = found.get(name)
        if value is not None:
            return value
    return ""


def to_string(element: etree._Element) -> str:
    return etree.tostring(element, pretty_print=True, encoding="unicode")


# The mirror's integer columns hold 0 ≤ n < 2**31 (PostgreSQL's integer, and CHECKs for the
# positive ones): a figure a host reports outside that is mirrored as absent, where storing it
# would fail the whole host's sync.
_INT_LIMIT = 2**31


def _int_or_none(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value, 0)
    except ValueError:  # libvirt writes numbers; anything else from a host is not one
        return None
    return number if 0 <= number < _INT_LIMIT else None


def pci_address(element: etree._Element | None) -> str:
    """`<address domain='0x0000' bus='0x02' slot='0x10' function='0x1'/>` as 0000:02:10.1."""
    if element is None or element.get("bus") is None:
        return ""
    domain = _int_or_none(element.get("domain")) or 0
    bus = _int_or_none(element.get("bus")) or 0
    slot = _int_or_none(element.get("slot")) or 0
    function = _int_or_none(element.get("function")) or 0
    return f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"


# ---------------------------------------------------------------- networks


def parse_network(live_xml: str, inactive_xml: str = "", **state) -> NetworkInfo:
    """A network's parsed configuration; `state` carries active/autostart/persistent."""
    root = parse(live_xml)
    forward = root.find("forward")
    bridge = root.find("bridge")
    mtu = root.find("mtu")
    return NetworkInfo(
        name=root.findtext("name", ""),
        uuid=root.findtext("uuid", ""),
        forward_mode=_forward_mode(forward),
        forward_dev=forward.get("dev", "") if forward is not None else "",
        bridge=bridge.get("name", "") if bridge is not None else "",
        stp=_stp(bridge),
        mtu=_int_or_none(mtu.get("size")) if mtu is not None else None,
        domain_name=root.find("domain").get("name", "") if root.find("domain") is not None else "",
        virtualport_type=attribute(root, "virtualport", "type"),
        connections=_int_or_none(root.get("connections")) or 0,
        ips=tuple(_parse_ip(ip) for ip in root.findall("ip")),
        dns_records=_parse_dns(root.find("dns")),
        portgroups=tuple(parse_portgroup(pg) for pg in root.findall("portgroup")),
        forward_interfaces=_parse_forward_interfaces(forward),
        live_xml=live_xml,
        inactive_xml=inactive_xml or live_xml,
        **state,
    )


def without_runtime_state(network_xml: str) -> etree._Element:
    """The network XML without what libvirt adds only while it runs: connection counts,
    the VFs of a hostdev pool, and the default NAT port range."""
    root = parse(network_xml)
    for element in root.iter():
        element.attrib.pop("connections", None)
    forward = root.find("forward")
    if forward is not None and forward.find("pf") is not None:
        for address in forward.findall("address"):
            forward.remove(address)
    nat = forward.find("nat") if forward is not None else None
    if nat is not None and not nat.attrib and len(nat) == 1:
        port = nat.find("port")
        if port is not None and dict(port.attrib) == {"start": "1024", "end": "65535"}:
            forward.remove(nat)
    return root


def _forward_mode(forward: etree._Element | None) -> str:
    if forward is None:
        return ""  # no <forward>: an isolated network
    return forward.get("mode", "nat")  # libvirt's default forward mode is nat


def _stp(bridge: etree._Element | None) -> bool | None:
    if bridge is None or bridge.get("stp") is None:
        return None
    return bridge.get("stp") == "on"


def _parse_ip(ip: etree._Element) -> IpConfig:
    family = ip.get("family") or ("ipv6" if ":" in ip.get("address", "") else "ipv4")
    address = ip.get("address", "")
    if ip.get("prefix"):
        prefix = int(ip.get("prefix"))
    elif ip.get("netmask"):
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{ip.get('netmask')}").prefixlen
    else:
        prefix = 24 if family == "ipv4" else 64
    dhcp = ip.find("dhcp")
    ranges = hosts = ()
    if dhcp is not None:
        ranges = tuple(DhcpRange(r.get("start", ""), r.get("end", "")) for r in dhcp.findall("range"))
        hosts = tuple(parse_dhcp_host(h) for h in dhcp.findall("host"))
    return IpConfig(address, prefix, family, ranges, hosts)


def parse_dhcp_host(host: etree._Element) -> DhcpHost:
    return DhcpHost(
        ip=host.get("ip", ""),
        mac=(host.get("mac") or "").lower(),
        name=host.get("name", ""),
        host_id=host.get("id", ""),
    )


def _parse_dns(dns: etree._Element | None) -> tuple[DnsRecord, ...]:
    if dns is None:
        return ()
    kinds = ("host", "txt", "srv")  # in this order, whatever the order in the XML
    return tuple(parse_dns_record(element) for kind in kinds for element in dns.findall(kind))


def parse_dns_record(element: etree._Element) -> DnsRecord:
    """One `<host>`, `<txt>` or `<srv>` of `<dns>`."""
    if element.tag == "host":
        names = " ".join(h.text or "" for h in element.findall("hostname"))
        return DnsRecord("host", names, element.get("ip", ""))
    if element.tag == "txt":
        return DnsRecord("txt", element.get("name", ""), element.get("value", ""))
    return _parse_srv(element)


def _parse_srv(srv: etree._Element) -> DnsRecord:
    return DnsRecord(
        "srv",
        srv.get("service", ""),
        srv.get("target", ""),
        protocol=srv.get("protocol", ""),
        domain=srv.get("domain", ""),
        port=_int_or_none(srv.get("port")),
        priority=_int_or_none(srv.get("priority")),
        weight=_int_or_none(srv.get("weight")),
    )


def parse_portgroup(pg: etree._Element) -> Portgroup:
    return Portgroup(
        name=pg.get("name", ""),
        is_default=pg.get("default") == "yes",
        vlan_tags=tuple(int(tag.get("id")) for tag in pg.findall("vlan/tag")),
        inbound_average=_int_or_none(attribute(pg, "bandwidth/inbound", "average")),
        outbound_average=_int_or_none(attribute(pg, "bandwidth/outbound", "average")),
        xml=to_string(pg),
    )


def _parse_forward_interfaces(forward: etree._Element | None) -> tuple[ForwardInterface, ...]:
    if forward is None:
        return ()
    found = []
    for iface in forward.findall("interface"):
        found.append(ForwardInterface("interface", dev=iface.get("dev", ""), connections=_connections(iface)))
    for pf in forward.findall("pf"):
        found.append(ForwardInterface("pf", dev=pf.get("dev", ""), connections=_connections(pf)))
    for address in forward.findall("address"):
        found.append(ForwardInterface("address", pci_address=pci_address(address), connections=_connections(address)))
    return tuple(found)


def _connections(element: etree._Element) -> int | None:
    return _int_or_none(element.get("connections"))


MACVTAP_MODES = {"private", "vepa", "passthrough"}  # and "bridge" with interfaces but no <bridge>


def build_network_xml(
    *,
    name: str,
    forward_mode: str = "nat",
    bridge: str = "",
    stp: bool = False,
    ips: tuple[IpConfig, ...] = (),
    domain_name: str = "",
    mtu: int | None = None,
    forward_dev: str = "",
    interfaces: tuple[str, ...] = (),
) -> str:
    """XML for any network kvmweb creates.

    forward_mode "" is isolated; nat, route and open get a libvirt bridge (named by
    libvirt when `bridge` is empty); "bridge" with `bridge` uses an existing host bridge;
    "bridge", private, vepa and passthrough with `interfaces` are macvtap networks.
    """
    root = etree.Element("network")
    etree.SubElement(root, "name").text = name
    host_bridge = forward_mode == "bridge" and not interfaces
    macvtap = bool(interfaces) and forward_mode in MACVTAP_MODES | {"bridge"}
    if forward_mode:
        forward = etree.SubElement(root, "forward", _attrs(mode=forward_mode, dev=forward_dev))
        for dev in interfaces:
            etree.SubElement(forward, "interface", dev=dev)
    if host_bridge:
        etree.SubElement(root, "bridge", name=bridge)
    elif not macvtap:
        bridge_attrs = {"stp": "on" if stp else "off", "delay": "0"}
        etree.SubElement(root, "bridge", {"name": bridge, **bridge_attrs} if bridge else bridge_attrs)
    if mtu:
        etree.SubElement(root, "mtu", size=str(mtu))
    if domain_name:
        etree.SubElement(root, "domain", name=domain_name)
    for ip in ips:
        root.append(_build_ip(ip))
    return to_string(root)


def build_pool_network_xml(*, name: str, pf: str) -> str:
    """An SR-IOV VF pool: `<forward mode='hostdev' managed='yes'><pf dev=PF/>`. libvirt lists the
    PF's VFs itself when the first guest starts; managed='yes' lets it bind each VF to vfio-pci
    for the guest and back to the host driver afterwards. No `<bridge>` and no `<ip>`: guests get
    the VF itself, so traffic never passes the host's network stack."""
    root = etree.Element("network")
    etree.SubElement(root, "name").text = name
    forward = etree.SubElement(root, "forward", mode="hostdev", managed="yes")
    etree.SubElement(forward, "pf", dev=pf)
    return to_string(root)


def _build_ip(ip: IpConfig) -> etree._Element:
    attrs = {"address": ip.address, "prefix": str(ip.prefix)}
    if ip.family == "ipv6":
        attrs["family"] = "ipv6"
    element = etree.Element("ip", attrs)
    if ip.dhcp_ranges or ip.dhcp_hosts:
        dhcp = etree.SubElement(element, "dhcp")
        for dhcp_range in ip.dhcp_ranges:
            etree.SubElement(dhcp, "range", start=dhcp_range.start, end=dhcp_range.end)
        for host in ip.dhcp_hosts:
            dhcp.append(build_dhcp_host(host))
    return element


def build_dhcp_host(host: DhcpHost) -> etree._Element:
    attrs = {key: value for key, value in (("mac", host.mac), ("id", host.host_id), ("name", host.name)) if value}
    attrs["ip"] = host.ip
    return etree.Element("host", attrs)


# ---------------------------------------------------------------- guests


GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


def parse_domain(xml: str, state: str) -> GuestInfo:
    root = parse(xml)
    # One pass over the devices (a guest has dozens), not one search per kind.
    interfaces, hostdevs, channels = [], [], []
    kinds = {"interface": interfaces, "hostdev": hostdevs, "channel": channels}
    for devices in root.iterfind("devices"):
        for device in devices:
            found = kinds.get(device.tag)
            if found is not None:
                found.append(device)
    return GuestInfo(
        name=root.findtext("name", ""),
        uuid=root.findtext("uuid", ""),
        state=state,
        interfaces=tuple(parse_interface(iface) for iface in interfaces),
        hostdev_addresses=tuple(pci_address(hd.find("source/address")) for hd in hostdevs if hd.get("type") == "pci"),
        xml=xml,
        agent_channel=_agent_channel_state(channels),
    )


def agent_channel_state(root: etree._Element) -> str | None:
    """The state of the guest agent's virtio channel: libvirt's live XML says "connected" once
    an agent inside the guest has opened its end, "disconnected" otherwise; "" where the XML
    gives no state (a stopped guest's config); None when the guest has no such channel."""
    return _agent_channel_state(root.iterfind("devices/channel"))


def _agent_channel_state(channels) -> str | None:
    for channel in channels:
        for target in channel.iterfind("target"):
            if target.get("type") == "virtio" and target.get("name") == GUEST_AGENT_CHANNEL:
                return target.get("state", "")
    return None


def parse_interface(iface: etree._Element) -> GuestInterface:
    # One pass over the children, then each value from them: a sync parses every NIC of every
    # guest that changed, and a find() per value cost most of the guest's parse.
    children: dict[str, list[etree._Element]] = {}
    for child in iface:
        children.setdefault(child.tag, []).append(child)

    def first(tag: str, name: str) -> str:  # string(tag/@name)
        return next((c.get(name) for c in children.get(tag, ()) if c.get(name) is not None), "")

    kind = iface.get("type", "")
    sources = children.get("source")
    source = sources[0] if sources else None
    bandwidth = children.get("bandwidth", ())
    return GuestInterface(
        type=kind,
        mac=first("mac", "address").lower(),
        source=_interface_source(kind, source, sources),
        model=first("model", "type"),
        target_dev=first("target", "dev"),
        vlan_tags=tuple(int(tag.get("id")) for vlan in children.get("vlan", ()) for tag in vlan.iterfind("tag")),
        portgroup=source.get("portgroup", "") if source is not None else "",
        network=source.get("network", "") if source is not None else "",
        # Other types' <source mode> means something else (a vhost-user socket's client/server).
        source_mode=source.get("mode", "") if kind == "direct" and source is not None else "",
        link_state=first("link", "state"),
        inbound=_bandwidth_limit(_first_child(bandwidth, "inbound")),
        outbound=_bandwidth_limit(_first_child(bandwidth, "outbound")),
        # The guest-side slot; a hostdev's <source><address> is the host's VF and stays in `source`.
        pci_address=pci_address(next((a for a in children.get("address", ()) if a.get("type") == "pci"), None)),
    )


def _first_child(parents, tag: str) -> etree._Element | None:
    """The first `tag` child of any of `parents`, in document order (find("parent/tag"))."""
    return next((child for parent in parents for child in parent.iterfind(tag)), None)


def _bandwidth_limit(element: etree._Element | None) -> BandwidthLimit | None:
    if element is None:
        return None
    values = {name: _decimal_or_none(element.get(name)) for name in ("average", "peak", "burst", "floor")}
    return BandwidthLimit(**values)


def _decimal_or_none(value: str | None) -> int | None:
    """libvirt writes bandwidth figures in base 10 (a leading zero is not octal)."""
    return int(value, 10) if value else None


def _interface_source(kind: str, source: etree._Element | None, sources) -> str:
    if source is None:
        return ""
    if kind == "hostdev":
        # A NIC that a hostdev pool network gave a VF shows, live, a first <source network=…/> and
        # then the VF in a second <source><address/></source>: take the address wherever it is.
        return pci_address(_first_child(sources, "address"))
    for attribute_name in ("network", "bridge", "dev"):
        if source.get(attribute_name):
            return source.get(attribute_name)
    return ""


# ---------------------------------------------------------------- node devices


def parse_node_device(xml: str) -> NodeDeviceInfo:
    root = parse(xml)
    capability = root.find("capability")
    kind = capability.get("type", "") if capability is not None else ""
    values = {"name": root.findtext("name", ""), "parent": root.findtext("parent", ""), "capability": kind}
    values["driver"] = root.findtext("driver/name", "")
    if kind == "pci":
        values.update(_pci_values(capability))
    elif kind == "net":
        values["net_interface"] = capability.findtext("interface", "")
        values["net_mac"] = (capability.findtext("address", "") or "").lower()
    return NodeDeviceInfo(xml=xml, **values)


def _pci_values(cap: etree._Element) -> dict:
    address = etree.Element(
        "address",
        domain=cap.findtext("domain", "0"),
        bus=cap.findtext("bus", "0"),
        slot=cap.findtext("slot", "0"),
        function=cap.findtext("function", "0"),
    )
    group = cap.find("iommuGroup")
    vfs = cap.find("capability[@type='virt_functions']")
    return {
        "pci_address": pci_address(address),
        "vendor": cap.findtext("vendor", ""),
        "product": cap.findtext("product", ""),
        "iommu_group": _int_or_none(group.get("number")) if group is not None else None,
        "pf_address": pci_address(cap.find("capability[@type='phys_function']/address")),
        "vf_addresses": tuple(pci_address(a) for a in vfs.findall("address")) if vfs is not None else (),
        "vf_max": _int_or_none(vfs.get("maxCount")) if vfs is not None else None,
    }


# ---------------------------------------------------------------- net-update fragments


def _attrs(**values) -> dict[str, str]:
    """Attributes with a value, as strings (None and "" are left out)."""
    return {key.replace("_", "-"): str(value) for key, value in values.items() if value not in (None, "")}


def dhcp_host_fragment(host: DhcpHost) -> str:
    return to_string(build_dhcp_host(host))


def dhcp_range_fragment(dhcp_range: DhcpRange) -> str:
    return to_string(etree.Element("range", start=dhcp_range.start, end=dhcp_range.end))


def dns_host_fragment(ip: str, hostnames: tuple[str, ...]) -> str:
    host = etree.Element("host", ip=ip)
    for name in hostnames:
        etree.SubElement(host, "hostname").text = name
    return to_string(host)


def dns_txt_fragment(record: DnsRecord) -> str:
    return to_string(etree.Element("txt", _attrs(name=record.name, value=record.value)))


def dns_srv_fragment(record: DnsRecord) -> str:
    attrs = _attrs(
        service=record.name,
        protocol=record.protocol,
        domain=record.domain,
        target=record.value,
        port=record.port,
        priority=record.priority,
        weight=record.weight,
    )
    return to_string(etree.Element("srv", attrs))


def portgroup_fragment(portgroup: Portgroup) -> str:
    element = etree.Element("portgroup", _attrs(name=portgroup.name, default="yes" if portgroup.is_default else ""))
    if portgroup.vlan_tags:
        vlan = etree.SubElement(element, "vlan", {"trunk": "yes"} if len(portgroup.vlan_tags) > 1 else {})
        for tag in portgroup.vlan_tags:
            etree.SubElement(vlan, "tag", id=str(tag))
    if portgroup.inbound_average or portgroup.outbound_average:
        bandwidth = etree.SubElement(element, "bandwidth")
        if portgroup.inbound_average:
            etree.SubElement(bandwidth, "inbound", average=str(portgroup.inbound_average))
        if portgroup.outbound_average:
            etree.SubElement(bandwidth, "outbound", average=str(portgroup.outbound_average))
    return to_string(element)


def forward_interface_fragment(dev: str) -> str:
    return to_string(etree.Element("interface", dev=dev))


# ---------------------------------------------------------------- PCI passthrough facts


def node_device_pci_class(device_xml: str) -> str:
    """A PCI node device's class code as libvirt prints it ("0x020000"); "" when absent."""
    return (parse(device_xml).findtext("capability[@type='pci']/class") or "").strip().lower()


def node_device_link_state(device_xml: str) -> str:
    """A net node device's `<link state>` ("up", "down", "unknown"); "" when absent."""
    return attribute(parse(device_xml), "capability[@type='net']/link", "state")


def parse_hostdev_capabilities(domcaps_xml: str) -> HostdevCapabilities:
    """`getDomainCapabilities()` → `<devices><hostdev supported=…>` with its enums."""
    hostdev = parse(domcaps_xml).find("devices/hostdev")
    if hostdev is None:
        return HostdevCapabilities(supported=None)

    def values(enum: str) -> tuple[str, ...]:
        return tuple(value.text or "" for value in hostdev.findall(f"enum[@name='{enum}']/value"))

    return HostdevCapabilities(
        supported=hostdev.get("supported") == "yes",
        modes=values("mode"),
        subsystem_types=values("subsysType"),
        pci_backends=values("pciBackend"),
    )


def parse_host_iommu(capabilities_xml: str) -> bool | None:
    """`getCapabilities()` → `<host><iommu support='yes|no'/>`; None where the XML has none."""
    support = attribute(parse(capabilities_xml), "host/iommu", "support")
    return {"yes": True, "no": False}.get(support)


def parse_host_interface(interface_xml: str) -> HostInterfaceInfo:
    """One `virInterface`: its name, type, addresses and the interfaces it is built on (bridge
    ports, bond members, a VLAN's parent)."""
    root = parse(interface_xml)
    addresses = tuple(
        f"{ip.get('address')}/{ip.get('prefix')}" if ip.get("prefix") else ip.get("address")
        for ip in root.findall("protocol/ip")
        if ip.get("address")
    )
    members = tuple(
        member.get("name", "")
        for member in root.xpath("bridge/interface | bond/interface | vlan/interface")
        if member.get("name")
    )
    return HostInterfaceInfo(name=root.get("name", ""), type=root.get("type", ""), addresses=addresses, members=members)
