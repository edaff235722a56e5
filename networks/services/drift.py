"""Comparing a network's running XML with its persistent XML."""

from __future__ import annotations

import difflib

from lxml import etree

from networks.hypervisor import xml


def _canonical(network_xml: str) -> str:
    return etree.tostring(xml.without_runtime_state(network_xml), method="c14n").decode()


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
