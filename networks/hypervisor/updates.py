"""virNetworkUpdate: change one section of a network's config, live and/or persistent."""

from __future__ import annotations

import libvirt

from .client import libvirt_errors
from .errors import HypervisorError
from .inventory import read_network
from .networks import lookup
from .types import NetworkInfo

COMMANDS = {
    "add-first": libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_FIRST,
    "add-last": libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
    "modify": libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY,
    "delete": libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
}
SECTIONS = {
    "ip-dhcp-host": libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
    "ip-dhcp-range": libvirt.VIR_NETWORK_SECTION_IP_DHCP_RANGE,
    "dns-host": libvirt.VIR_NETWORK_SECTION_DNS_HOST,
    "dns-txt": libvirt.VIR_NETWORK_SECTION_DNS_TXT,
    "dns-srv": libvirt.VIR_NETWORK_SECTION_DNS_SRV,
    "portgroup": libvirt.VIR_NETWORK_SECTION_PORTGROUP,
    "forward-interface": libvirt.VIR_NETWORK_SECTION_FORWARD_INTERFACE,
}
SCOPES = ("both", "config", "live")


def update_flags(*, active: bool, persistent: bool, scope: str) -> int:
    """libvirt flags for a scope. AFFECT_CURRENT is never used: on a running network it
    means live-only, which the next start silently drops."""
    live, config = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE, libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    if scope not in SCOPES:
        raise HypervisorError(f"Unknown scope {scope!r}")
    if scope == "live" or (scope == "both" and not persistent):
        if not active:
            raise HypervisorError("The network is not running: a live-only change is impossible.")
        return live
    if scope == "config" or not active:
        if not persistent:
            raise HypervisorError("A transient network has no persistent config to change.")
        return config
    return live | config


class NetworkUpdater:
    """Many net-updates to one network over one connection: looked up once, flags fixed once."""

    def __init__(self, conn: libvirt.virConnect, name: str, scope: str):
        with libvirt_errors():
            self.net = lookup(conn, name)
            self.flags = update_flags(
                active=bool(self.net.isActive()), persistent=bool(self.net.isPersistent()), scope=scope
            )

    def apply(self, *, command: str, section: str, fragment: str, parent_index: int = -1) -> None:
        with libvirt_errors():
            self.net.update(COMMANDS[command], SECTIONS[section], parent_index, fragment, self.flags)

    def read(self) -> NetworkInfo:
        with libvirt_errors():
            return read_network(self.net)


def update_network(
    conn: libvirt.virConnect,
    name: str,
    *,
    command: str,
    section: str,
    fragment: str,
    parent_index: int = -1,
    scope: str = "both",
) -> NetworkInfo:
    """Apply one net-update and return the network as it is afterwards."""
    updater = NetworkUpdater(conn, name, scope)
    updater.apply(command=command, section=section, fragment=fragment, parent_index=parent_index)
    return updater.read()
