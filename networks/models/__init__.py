from .accounts import ApiToken, UserRole
from .audit import AuditEvent
from .devices import NodeDevice
from .forwards import PortForward
from .guests import Guest, GuestInterface
from .hosts import Host
from .networks import DhcpLease, DhcpRange, DhcpReservation, DnsRecord, ForwardInterface, Network, NetworkIp, Portgroup
from .operations import Operation

__all__ = [
    "ApiToken",
    "AuditEvent",
    "DhcpLease",
    "DhcpRange",
    "DhcpReservation",
    "DnsRecord",
    "ForwardInterface",
    "Guest",
    "GuestInterface",
    "Host",
    "Network",
    "NetworkIp",
    "NodeDevice",
    "Operation",
    "PortForward",
    "Portgroup",
    "UserRole",
]
