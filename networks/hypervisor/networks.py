"""Network lifecycle on a host. Each call is idempotent where libvirt allows it."""

from __future__ import annotations

import libvirt

from . import xml
from .client import libvirt_errors
from .errors import AlreadyExists, NotFound
from .inventory import read_network
from .types import NetworkInfo


def lookup(conn: libvirt.virConnect, name: str) -> libvirt.virNetwork:
    try:
        return conn.networkLookupByName(name)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            raise NotFound(f"Network {name!r} does not exist on this host.", code=error.get_error_code()) from error
        raise


def get_network(conn: libvirt.virConnect, name: str) -> NetworkInfo:
    with libvirt_errors():
        return read_network(lookup(conn, name))


def start_network(conn: libvirt.virConnect, name: str) -> NetworkInfo:
    """Ensure the network is running."""
    with libvirt_errors():
        net = lookup(conn, name)
        if not net.isActive():
            net.create()
        return read_network(net)


def stop_network(conn: libvirt.virConnect, name: str) -> NetworkInfo:
    """Ensure the network is stopped (libvirt's destroy: guests lose connectivity)."""
    with libvirt_errors():
        net = lookup(conn, name)
        if net.isActive():
            net.destroy()
        return read_network(net)


def set_network_autostart(conn: libvirt.virConnect, name: str, enabled: bool) -> NetworkInfo:
    with libvirt_errors():
        net = lookup(conn, name)
        net.setAutostart(1 if enabled else 0)
        return read_network(net)


def undefine_network(conn: libvirt.virConnect, name: str) -> None:
    """Stop the network if it runs, then remove its persistent definition."""
    with libvirt_errors():
        net = lookup(conn, name)
        if net.isActive():
            net.destroy()
        if net.isPersistent():
            net.undefine()


def define_network(
    conn: libvirt.virConnect, network_xml: str, *, start: bool, autostart: bool, keep_defined: bool = False
) -> NetworkInfo:
    """Define a persistent network from XML, optionally starting it and marking it autostart.

    If starting fails the new definition is removed again, so a failed create leaves
    the host as it was; with `keep_defined` it stays, inactive (a VF pool whose PF has no
    VFs yet), and the start's error is raised all the same.
    """
    name = xml.parse(network_xml).findtext("name", "")
    with libvirt_errors():
        if name in conn.listNetworks() + conn.listDefinedNetworks():
            # networkDefineXML would silently replace the existing definition.
            raise AlreadyExists(f"A network named {name!r} already exists on this host.")
        net = conn.networkDefineXML(network_xml)
        try:
            if autostart:
                net.setAutostart(1)
            if start:
                net.create()
        except libvirt.libvirtError:
            if not keep_defined:
                net.undefine()
            raise
        return read_network(net)


def redefine_network(conn: libvirt.virConnect, network_xml: str) -> NetworkInfo:
    """Replace an existing network's persistent config; a running network keeps running
    its old config until it restarts."""
    name = xml.parse(network_xml).findtext("name", "")
    with libvirt_errors():
        lookup(conn, name)  # must exist: never create a network here
        return read_network(conn.networkDefineXML(network_xml))
