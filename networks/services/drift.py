"""Comparing a network's running XML with its persistent XML."""

from __future__ import annotations

import difflib

from lxml import etree

from networks.hypervisor import xml


def _canonical(network_xml: str) -> str:
    """The XML without what libvirt adds only at run time (connection counts, pool VFs)."""
    root = xml.parse(network_xml)
    for element in root.iter():
        element.attrib.pop("connections", None)
    forward = root.find("forward")
    if forward is not None and forward.find("pf") is not None:
        for address in forward.findall("address"):
            forward.remove(address)  # VFs libvirt lists once a guest uses the pool
    _drop_default_nat_ports(forward)
    return etree.tostring(root, method="c14n").decode()


def _drop_default_nat_ports(forward) -> None:
    """libvirt writes its default NAT port range (1024-65535) into the running XML only."""
    nat = forward.find("nat") if forward is not None else None
    if nat is None or nat.attrib or len(nat) != 1:
        return
    port = nat.find("port")
    if port is not None and dict(port.attrib) == {"start": "1024", "end": "65535"}:
        forward.remove(nat)


def xml_differs(live_xml: str, inactive_xml: str) -> bool:
    if not live_xml or not inactive_xml:
        return False
    return _canonical(live_xml) != _canonical(inactive_xml)


def xml_diff(before: str, after: str, before_label: str = "before", after_label: str = "after") -> str:
    """A unified diff of two XML documents, for display."""
    lines = difflib.unified_diff(
        before.splitlines(), after.splitlines(), fromfile=before_label, tofile=after_label, lineterm=""
    )
    return "\n".join(lines)
