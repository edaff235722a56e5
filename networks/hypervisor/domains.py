"""Small reads of a host's guests that port forwards need: which run, and where a NIC sits."""

from __future__ import annotations

import libvirt

from . import xml
from .client import libvirt_errors


def running_domain_names(conn: libvirt.virConnect) -> set[str]:
    """Names of the guests that run now (paused ones included: their NICs keep their ports)."""
    with libvirt_errors():
        return {dom.name() for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}


def interface_networks(conn: libvirt.virConnect) -> dict[tuple[str, str], str]:
    """(guest name, MAC) → the libvirt network its interface names, for every guest's NIC on a
    network. A running guest's live XML is read (where it sits now); a stopped guest's XML is
    its config, which is where it will sit at its next start."""
    found: dict[tuple[str, str], str] = {}
    with libvirt_errors():
        for dom in conn.listAllDomains(0):
            root = xml.parse(dom.XMLDesc(0))
            for iface in root.findall("devices/interface"):
                network = iface.xpath("string(source/@network)")
                mac = iface.xpath("string(mac/@address)").lower()
                if network and mac:
                    found[(dom.name(), mac)] = network
    return found
