"""PCI devices given to a guest: `<hostdev>` and `<interface type='hostdev'>`, built and read.

Two of libvirt's three ways to hand a guest a physical network function live here (the
third, a VF pool network, is a network). The shapes follow libvirt's domain format docs:

    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x06' slot='0x02' function='0x0'/></source>
    </hostdev>

    <interface type='hostdev' managed='yes'>
      <mac address='52:54:00:6d:90:02'/>
      <source><address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/></source>
      <vlan><tag id='42'/></vlan>
      <virtualport type='802.1Qbh'><parameters profileid='finance'/></virtualport>
    </interface>

A `<hostdev>` hands over the bare device: a VF keeps whatever MAC its PF gave it (a random one
after each host boot). `<interface type='hostdev'>` makes libvirt set the VF's MAC, VLAN and
802.1Qbh port profile first. No libvirt here: the calls are in `guests.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from . import xml
from .errors import InvalidXml, NotFound

HOSTDEV, INTERFACE = "hostdev", "interface"
KINDS = (HOSTDEV, INTERFACE)
QBH = "802.1Qbh"  # the only port profile libvirt applies to an <interface type='hostdev'>

# 0000:01:10.2: a PCI domain, bus, slot (device) and function, as the mirror keeps addresses.
PCI_RE = re.compile(r"(?P<domain>[0-9a-f]{4}):(?P<bus>[0-9a-f]{2}):(?P<slot>[0-1][0-9a-f])\.(?P<function>[0-7])")


@dataclass(frozen=True)
class HostdevSettings:
    """What kvmweb writes for one PCI device given to a guest."""

    kind: str  # HOSTDEV or INTERFACE
    pci_address: str  # the host's address, 0000:01:10.2
    managed: bool = True  # libvirt detaches the device from its host driver and binds it to vfio-pci
    mac: str = ""  # INTERFACE only
    vlan: int | None = None  # INTERFACE only
    profileid: str = ""  # INTERFACE only: an 802.1Qbh port profile


@dataclass(frozen=True)
class AssignedDevice:
    """A PCI device a guest's XML holds, as read back."""

    kind: str
    pci_address: str
    managed: bool
    mac: str = ""
    vlan: int | None = None
    virtualport: str = ""
    profileid: str = ""
    xml: str = ""


def address_attrs(pci_address: str) -> dict[str, str]:
    """0000:01:10.2 as the attributes of libvirt's `<address>` (hex, as libvirt writes them)."""
    match = PCI_RE.fullmatch(pci_address)
    if match is None:
        raise InvalidXml(f"{pci_address!r} is not a PCI address like 0000:01:10.2.")
    return {name: f"0x{match[name]}" for name in ("domain", "bus", "slot", "function")}


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def build_hostdev(settings: HostdevSettings) -> str:
    """`<hostdev mode='subsystem' type='pci'>` for any PCI device."""
    device = etree.Element("hostdev", mode="subsystem", type="pci", managed=_yes_no(settings.managed))
    source = etree.SubElement(device, "source")
    etree.SubElement(source, "address", address_attrs(settings.pci_address))
    return xml.to_string(device)


def build_hostdev_interface(settings: HostdevSettings) -> str:
    """`<interface type='hostdev'>` for an SR-IOV VF: libvirt sets its MAC (and VLAN and port
    profile) on the VF before the guest gets it."""
    iface = etree.Element("interface", type="hostdev", managed=_yes_no(settings.managed))
    etree.SubElement(iface, "mac", address=settings.mac)
    source = etree.SubElement(iface, "source")
    etree.SubElement(source, "address", {"type": "pci", **address_attrs(settings.pci_address)})
    if settings.vlan is not None:
        vlan = etree.SubElement(iface, "vlan")
        etree.SubElement(vlan, "tag", id=str(settings.vlan))
    if settings.profileid:
        port = etree.SubElement(iface, "virtualport", type=QBH)
        etree.SubElement(port, "parameters", profileid=settings.profileid)
    return xml.to_string(iface)


def build_device(settings: HostdevSettings) -> str:
    return build_hostdev_interface(settings) if settings.kind == INTERFACE else build_hostdev(settings)


# ---------------------------------------------------------------- reading a guest's devices


def _devices(root: etree._Element):
    """(kind, element) for each PCI `<hostdev>` and hostdev `<interface>` of a domain."""
    for element in root.findall("devices/*"):
        if element.tag == "hostdev" and element.get("type") == "pci":
            yield HOSTDEV, element
        elif element.tag == "interface" and element.get("type") == "hostdev" and not _pool_nic(element):
            yield INTERFACE, element


def _pool_nic(element: etree._Element) -> bool:
    """A running guest's NIC on a VF pool network shows type='hostdev' too, with a `<source
    network>`: it belongs to the network (returned by removing the interface), not here."""
    return element.find("source[@network]") is not None


def _host_address(element: etree._Element) -> str:
    return xml.pci_address(element.find("source/address"))


def _read(kind: str, element: etree._Element) -> AssignedDevice:
    tag = element.find("vlan/tag")
    return AssignedDevice(
        kind=kind,
        pci_address=_host_address(element),
        managed=element.get("managed") == "yes",
        mac=element.xpath("string(mac/@address)").lower(),
        vlan=int(tag.get("id")) if tag is not None and (tag.get("id") or "").isdigit() else None,
        virtualport=element.xpath("string(virtualport/@type)"),
        profileid=element.xpath("string(virtualport/parameters/@profileid)"),
        xml=xml.to_string(element),
    )


def assigned_devices(domain_xml: str) -> list[AssignedDevice]:
    """The PCI devices a guest's XML holds, in document order ([] for no XML)."""
    if not domain_xml:
        return []
    return [_read(kind, element) for kind, element in _devices(xml.parse(domain_xml))]


def find_device(domain_xml: str, pci_address: str) -> AssignedDevice | None:
    """The device the guest's XML holds at host address `pci_address`, or None."""
    return next((d for d in assigned_devices(domain_xml) if d.pci_address == pci_address), None)


def with_device_added(domain_xml: str, device: str) -> str:
    root = xml.parse(domain_xml)
    devices = root.find("devices")
    if devices is None:
        devices = etree.SubElement(root, "devices")
    devices.append(xml.parse(device))
    return xml.to_string(root)


def with_device_removed(domain_xml: str, pci_address: str) -> str:
    """The guest XML without the device at host address `pci_address`."""
    root = xml.parse(domain_xml)
    for _kind, element in _devices(root):
        if _host_address(element) == pci_address:
            element.getparent().remove(element)
            return xml.to_string(root)
    raise NotFound(f"The guest holds no PCI device {pci_address}.")
