"""Every status and kind the app stores, in one place."""

from django.db import models


class OperationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (OperationStatus.QUEUED, OperationStatus.RUNNING)
TERMINAL_STATUSES = (OperationStatus.SUCCEEDED, OperationStatus.FAILED, OperationStatus.CANCELLED)


class OperationKind(models.TextChoices):
    HOST_SYNC = "host.sync", "Sync host"
    NETWORK_START = "network.start", "Start network"
    NETWORK_STOP = "network.stop", "Stop network"
    NETWORK_AUTOSTART = "network.autostart", "Set network autostart"
    NETWORK_UNDEFINE = "network.undefine", "Undefine network"
    NETWORK_CREATE = "network.create", "Create network"
    NETWORK_UPDATE = "network.update", "Update network"
    NETWORK_BULK_IMPORT = "network.bulk_import", "Import DHCP reservations"
    NETWORK_RESTART = "network.restart", "Restart network"
    NETWORK_DEFINE = "network.define", "Define new network config"
    NETWORK_XML_LIVE = "network.xml_live", "Apply XML changes live"
    NETWORK_RENAME = "network.rename", "Rename network"
    NETWORK_UNDO = "network.undo", "Undo a change"
    GUEST_INTERFACE_ADD = "guest.interface_add", "Add guest interface"
    GUEST_INTERFACE_UPDATE = "guest.interface_update", "Change guest interface"
    GUEST_INTERFACE_REMOVE = "guest.interface_remove", "Remove guest interface"
    GUEST_HOSTDEV_ATTACH = "guest.hostdev_attach", "Assign PCI device to guest"
    GUEST_HOSTDEV_DETACH = "guest.hostdev_detach", "Return PCI device from guest"
    PORT_FORWARD_CREATE = "port_forward.create", "Create port forward"
    PORT_FORWARD_UPDATE = "port_forward.update", "Change port forward"
    PORT_FORWARD_DELETE = "port_forward.delete", "Delete port forward"
    PORT_FORWARD_REAPPLY = "port_forward.reapply", "Re-apply port forwards"


class AuditSource(models.TextChoices):
    WEB = "web", "Web"
    API = "api", "API"
    TASK = "task", "Task"
    SYSTEM = "system", "System"


class HostStatus(models.TextChoices):
    UNKNOWN = "unknown", "Not synced yet"
    REACHABLE = "reachable", "Reachable"
    UNREACHABLE = "unreachable", "Unreachable"


class ForwardMode(models.TextChoices):
    NONE = "", "Isolated"
    NAT = "nat", "NAT"
    ROUTE = "route", "Routed"
    OPEN = "open", "Open"
    BRIDGE = "bridge", "Bridge"
    PRIVATE = "private", "macvtap private"
    VEPA = "vepa", "macvtap VEPA"
    PASSTHROUGH = "passthrough", "macvtap passthrough"
    HOSTDEV = "hostdev", "SR-IOV pool"


class AddressFamily(models.TextChoices):
    IPV4 = "ipv4", "IPv4"
    IPV6 = "ipv6", "IPv6"


class DnsRecordKind(models.TextChoices):
    HOST = "host", "Host"
    TXT = "txt", "TXT"
    SRV = "srv", "SRV"


class ForwardInterfaceKind(models.TextChoices):
    INTERFACE = "interface", "Interface"
    PF = "pf", "Physical function"
    ADDRESS = "address", "PCI address (VF)"


class GuestState(models.TextChoices):
    RUNNING = "running", "Running"
    BLOCKED = "blocked", "Blocked"
    PAUSED = "paused", "Paused"
    SHUTDOWN = "shutdown", "Shutting down"
    SHUTOFF = "shutoff", "Shut off"
    CRASHED = "crashed", "Crashed"
    PMSUSPENDED = "pmsuspended", "Suspended"
    NOSTATE = "nostate", "No state"


class InterfaceScope(models.TextChoices):
    """Where a guest interface change applies: the running guest, its persistent config, or both."""

    LIVE = "live", "Running guest only"
    CONFIG = "config", "Persistent config only"
    BOTH = "both", "Running guest and persistent config"


class PassthroughSupport(models.TextChoices):
    """Whether a host can assign PCI devices to guests, as far as its libvirt tells."""

    YES = "yes", "Yes"
    NO = "no", "No"
    UNKNOWN = "unknown", "Unknown"


class ForwardProtocol(models.TextChoices):
    TCP = "tcp", "TCP"
    UDP = "udp", "UDP"


class ForwardState(models.TextChoices):
    """What the host worker last found of a forward's rules on its host."""

    UNKNOWN = "unknown", "Not applied yet"
    PRESENT = "present", "Rules present"
    MISSING = "missing", "Rules missing"
    GUEST_STOPPED = "guest_stopped", "Guest stopped (applies at its next start)"
    DISABLED = "disabled", "Disabled"
    NO_ADDRESS = "no_address", "Guest has no IPv4 address on a NAT or routed network"
    WORKER_ABSENT = "worker_absent", "Host worker absent"


class Role(models.TextChoices):
    """What a user may do; each role includes the ones before it."""

    VIEWER = "viewer", "Viewer"
    OPERATOR = "operator", "Operator"
    ADMIN = "admin", "Admin"
