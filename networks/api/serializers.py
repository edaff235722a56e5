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
            "live_xml",
            "inactive_xml",
            "synced_at",
        ]


class NetworkCreateSerializer(serializers.Serializer):
    """Fields of every mode; services.create checks which ones a mode needs."""

    host = serializers.PrimaryKeyRelatedField(queryset=Host.objects.all())
    name = serializers.CharField(max_length=50)
    mode = serializers.ChoiceField(
        choices=["nat", "route", "open", "isolated", "bridge", "macvtap-bridge", "macvtap-private", "macvtap-vepa",
                 "macvtap-passthrough"],
        default="nat",
    )  # fmt: skip
    bridge = serializers.CharField(max_length=15, required=False, default="", allow_blank=True)
    ipv4 = serializers.CharField(required=False, default="", allow_blank=True, help_text="e.g. 192.168.100.1/24")
    ipv4_dhcp_start = serializers.CharField(required=False, default="", allow_blank=True)
    ipv4_dhcp_end = serializers.CharField(required=False, default="", allow_blank=True)
    ipv6 = serializers.CharField(required=False, default="", allow_blank=True, help_text="e.g. fd00:100::1/64")
    ipv6_dhcp_start = serializers.CharField(required=False, default="", allow_blank=True)
    ipv6_dhcp_end = serializers.CharField(required=False, default="", allow_blank=True)
    dhcp = serializers.BooleanField(default=True)
    reservations = serializers.CharField(required=False, default="", allow_blank=True, help_text="mac,ip,name lines")
    domain_name = serializers.CharField(required=False, default="", allow_blank=True)
    mtu = serializers.IntegerField(required=False, allow_null=True, default=None)
    stp = serializers.BooleanField(default=False)
    forward_dev = serializers.CharField(required=False, default="", allow_blank=True)
    interfaces = serializers.CharField(required=False, default="", allow_blank=True, help_text="macvtap: eth1 eth2")
    start = serializers.BooleanField(default=True)
    autostart = serializers.BooleanField(default=False)
    message = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class NetworkXmlSerializer(serializers.Serializer):
    xml = serializers.CharField()
    apply = serializers.ChoiceField(choices=["live", "define", "restart"], default="define")
    message = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class RenameSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=50)
    move_guests = serializers.BooleanField(default=True)
    message = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class MessageSerializer(serializers.Serializer):
    message = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class AutostartSerializer(MessageSerializer):
    enabled = serializers.BooleanField()


class GuestInterfaceSerializer(serializers.ModelSerializer):
    class Meta:
        model = GuestInterface
        fields = ["type", "mac", "source", "model", "target_dev", "vlan_tags", "portgroup", "network"]


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
