from rest_framework import serializers

from networks.models import (
    AuditEvent,
    DhcpRange,
    DhcpReservation,
    DnsRecord,
    ForwardInterface,
    Guest,
    GuestInterface,
    Host,
    Network,
    NetworkIp,
    NodeDevice,
    Operation,
    Portgroup,
)
from networks.services import pools
from networks.services.permissions import visible_hosts
from networks.services.xmlcheck import MAX_XML_CHARS


class HostSerializer(serializers.ModelSerializer):
    network_count = serializers.IntegerField(read_only=True)
    guest_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Host
        fields = [
            "id",
            "name",
            "uri",
            "queue",
            "status",
            "last_error",
            "last_sync_at",
            "hostname",
            "hypervisor_type",
            "hypervisor_version",
            "libvirt_version",
            "cpu_model",
            "cpus",
            "memory_mib",
            "host_bridges",
            "sync_warnings",
            "network_count",
            "guest_count",
        ]
        read_only_fields = [f for f in fields if f not in {"name", "uri", "queue"}]


class OperationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Operation
        fields = [
            "id",
            "kind",
            "status",
            "host",
            "host_name",
            "network",
            "target_name",
            "params",
            "result",
            "progress",
            "step",
            "log",
            "error",
            "requested_by_name",
            "source",
            "message",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class OperationRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Operation
        fields = ["id", "status", "kind"]


class DhcpRangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = DhcpRange
        fields = ["start", "end"]


class DhcpHostSerializer(serializers.ModelSerializer):
    ip = serializers.IPAddressField(source="address")

    class Meta:
        model = DhcpReservation
        fields = ["mac", "ip", "name", "host_id"]


class IpamReservationSerializer(DhcpHostSerializer):
    network_name = serializers.CharField(source="network.name")
    host_name = serializers.CharField(source="network.host.name")

    class Meta(DhcpHostSerializer.Meta):
        fields = [*DhcpHostSerializer.Meta.fields, "network", "network_name", "host_name"]


class NetworkIpSerializer(serializers.ModelSerializer):
    dhcp_ranges = DhcpRangeSerializer(many=True, read_only=True)
    dhcp_hosts = DhcpHostSerializer(many=True, read_only=True, source="dhcp_reservations")

    class Meta:
        model = NetworkIp
        fields = ["address", "prefix", "family", "dhcp_ranges", "dhcp_hosts"]


class DnsRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = DnsRecord
        fields = ["kind", "name", "value", "protocol", "domain", "port", "priority", "weight"]


class PortgroupSerializer(serializers.ModelSerializer):
    class Meta:
        model = Portgroup
        fields = ["name", "is_default", "vlan_tags", "inbound_average", "outbound_average"]


class ForwardInterfaceSerializer(serializers.ModelSerializer):
    class Meta:
        model = ForwardInterface
        fields = ["kind", "dev", "pci_address", "connections"]


class NetworkListSerializer(serializers.ModelSerializer):
    host_name = serializers.CharField(source="host.name", read_only=True)

    class Meta:
        model = Network
        fields = [
            "id",
            "name",
            "host",
            "host_name",
            "forward_mode",
            "bridge",
            "active",
            "autostart",
            "persistent",
            "drifted",
            "connections",
        ]


class NetworkDetailSerializer(NetworkListSerializer):
    ips = NetworkIpSerializer(many=True, read_only=True)
    dhcp_hosts = DhcpHostSerializer(many=True, read_only=True, source="dhcp_reservations")
    dns_records = DnsRecordSerializer(many=True, read_only=True)
    portgroups = PortgroupSerializer(many=True, read_only=True)
    forward_interfaces = ForwardInterfaceSerializer(many=True, read_only=True)
    pf = serializers.SerializerMethodField(help_text="An SR-IOV VF pool's PF (null for other networks)")
    vfs = serializers.SerializerMethodField(
        help_text="A pool's VFs: pci_address and held_by (null when free); null for other networks"
    )
    free_vfs = serializers.SerializerMethodField(help_text="A pool's free VFs (null for other networks)")

    def _pool(self, network):
        if not hasattr(network, "_pool_state"):
            network._pool_state = pools.pool_state(network) if pools.is_pool(network) else None
        return network._pool_state

    def get_pf(self, network) -> str | None:
        state = self._pool(network)
        return state.pf if state else None

    def get_vfs(self, network) -> list[dict] | None:
        state = self._pool(network)
        if state is None:
            return None
        return [{"pci_address": vf.pci_address, "held_by": holder_data(vf.holder)} for vf in state.vfs]

    def get_free_vfs(self, network) -> int | None:
        state = self._pool(network)
        return state.free if state else None

    class Meta(NetworkListSerializer.Meta):
        fields = [
            *NetworkListSerializer.Meta.fields,
            "uuid",
            "forward_dev",
            "stp",
            "mtu",
            "domain_name",
            "ips",
            "dhcp_hosts",
            "dns_records",
            "portgroups",
            "forward_interfaces",
            "pf",
            "vfs",
            "free_vfs",
            "live_xml",
            "inactive_xml",
            "synced_at",
        ]


def holder_data(holder) -> dict | None:
    """Who holds a PCI device or VF (a services.pci.Holder), as the API shows it; null: free."""
    if holder is None:
        return None
    return {
        "kind": holder.kind,
        "guest": holder.guest_id,
        "guest_name": holder.guest_name or None,
        "network": holder.network_name or None,
        "detail": holder.detail,
    }


# Longest accepted text of each kind of field: a request body is bounded field by field.
ADDRESS_MAX = 45  # an IPv6 address
INTERFACE_MAX = 49  # an address with its /prefix
HOSTNAME_MAX = 253
IFNAME_MAX = 15  # Linux IFNAMSIZ - 1
INTERFACES_MAX = 1024
RESERVATIONS_MAX = 200_000
MESSAGE_MAX = 500


def _whole_number(data) -> bool:
    """A JSON integer or ASCII digits: DRF alone also reads '١٥٠٠', ' +1500 ', 1500.0 or true."""
    if isinstance(data, str):
        return data.isascii() and data.isdigit()
    return isinstance(data, int) and not isinstance(data, bool)


class AsciiIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if not _whole_number(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class AsciiPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    def to_internal_value(self, data):
        if not _whole_number(data):
            self.fail("incorrect_type", data_type=type(data).__name__)
        return super().to_internal_value(data)


class VisibleHostField(AsciiPrimaryKeyRelatedField):
    """A host id among the hosts the requesting user may see: another one "does not exist"."""

    def get_queryset(self):
        request = self.context.get("request")
        return visible_hosts(request.user if request is not None else None)


def _optional_text(max_length: int, **kwargs) -> serializers.CharField:
    return serializers.CharField(required=False, default="", allow_blank=True, max_length=max_length, **kwargs)


class NetworkCreateSerializer(serializers.Serializer):
    """Fields of every mode; services.create checks which ones a mode needs."""

    host = VisibleHostField(queryset=Host.objects.all())  # narrowed per request
    name = serializers.CharField(max_length=50)
    mode = serializers.ChoiceField(
        choices=["nat", "route", "open", "isolated", "bridge", "macvtap-bridge", "macvtap-private", "macvtap-vepa",
                 "macvtap-passthrough", "hostdev"],
        default="nat",
    )  # fmt: skip
    bridge = serializers.CharField(max_length=15, required=False, default="", allow_blank=True)
    ipv4 = _optional_text(INTERFACE_MAX, help_text="e.g. 192.168.100.1/24")
    ipv4_dhcp_start = _optional_text(ADDRESS_MAX)
    ipv4_dhcp_end = _optional_text(ADDRESS_MAX)
    ipv6 = _optional_text(INTERFACE_MAX, help_text="e.g. fd00:100::1/64")
    ipv6_dhcp_start = _optional_text(ADDRESS_MAX)
    ipv6_dhcp_end = _optional_text(ADDRESS_MAX)
    dhcp = serializers.BooleanField(default=True)
    reservations = _optional_text(RESERVATIONS_MAX, help_text="mac,ip,name lines")
    domain_name = _optional_text(HOSTNAME_MAX)
    mtu = AsciiIntegerField(required=False, allow_null=True, default=None)
    stp = serializers.BooleanField(default=False)
    forward_dev = _optional_text(IFNAME_MAX)
    interfaces = _optional_text(INTERFACES_MAX, help_text="macvtap: eth1 eth2")
    pf = _optional_text(IFNAME_MAX, help_text="hostdev (SR-IOV VF pool): the PF's interface name, e.g. ens1f0")
    start = serializers.BooleanField(default=True)
    autostart = serializers.BooleanField(default=False)
    message = serializers.CharField(max_length=MESSAGE_MAX, required=False, default="", allow_blank=True)


class NetworkXmlSerializer(serializers.Serializer):
    xml = serializers.CharField(max_length=MAX_XML_CHARS)
    apply = serializers.ChoiceField(choices=["live", "define", "restart"], default="define")
    message = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class RenameSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=50)
    move_guests = serializers.BooleanField(default=True)
    message = serializers.CharField(max_length=MESSAGE_MAX, required=False, default="", allow_blank=True)


class MessageSerializer(serializers.Serializer):
    message = serializers.CharField(max_length=MESSAGE_MAX, required=False, default="", allow_blank=True)


class AutostartSerializer(MessageSerializer):
    enabled = serializers.BooleanField()


class GuestInterfaceSerializer(serializers.ModelSerializer):
    class Meta:
        model = GuestInterface
        fields = [
            "type", "mac", "source", "model", "target_dev", "vlan_tags", "portgroup", "network",
            "source_mode", "link_state", "bandwidth", "pci_address", "agent_addresses",
        ]  # fmt: skip


class GuestSerializer(serializers.ModelSerializer):
    interfaces = GuestInterfaceSerializer(many=True, read_only=True)
    host_name = serializers.CharField(source="host.name", read_only=True)

    class Meta:
        model = Guest
        fields = ["id", "name", "host", "host_name", "uuid", "state", "hostdev_addresses", "interfaces", "synced_at"]


class NodeDeviceSerializer(serializers.ModelSerializer):
    class Meta:
        model = NodeDevice
        fields = [
            "id",
            "host",
            "name",
            "parent",
            "capability",
            "pci_address",
            "driver",
            "vendor",
            "product",
            "iommu_group",
            "physical_function",
            "vf_max",
            "vf_addresses",
            "net_interface",
            "net_mac",
        ]


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "actor_name",
            "source",
            "action",
            "host",
            "host_name",
            "object_type",
            "object_name",
            "message",
            "operation",
            "before_xml",
            "after_xml",
            "detail",
        ]


class OperationAcceptedSerializer(serializers.Serializer):
    """What every write that touches a hypervisor answers (202): the operation to watch."""

    operation = OperationRefSerializer(read_only=True)


class HostCreatedSerializer(HostSerializer):
    """A new host (201) with its first sync. `status` is documented as text here: a second
    component with the host's status choices would make the schema's enum names collide."""

    status = serializers.CharField(read_only=True, help_text="unknown until the first sync ends")
    operation = OperationRefSerializer(read_only=True)

    class Meta(HostSerializer.Meta):
        fields = [*HostSerializer.Meta.fields, "operation"]


class ErrorDetailSerializer(serializers.Serializer):
    """401, 403 and 404 answers: one message."""

    detail = serializers.CharField(read_only=True)


# 400 answers: each refused field (or non_field_errors) with its messages, or, for a body that
# is not JSON at all, one `detail`.
FIELD_ERRORS_SCHEMA = {
    "oneOf": [
        {
            "type": "object",
            "description": 'Each refused field with its messages, e.g. {"mac": ["… is not a MAC address."]}',
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        {
            "type": "object",
            "description": "A body that could not be parsed",
            "properties": {"detail": {"type": "string"}},
            "required": ["detail"],
            "additionalProperties": False,
        },
    ]
}
