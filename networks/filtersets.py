import django_filters

from networks.models import AuditEvent, Guest, Network, NodeDevice, Operation


class NetworkFilterSet(django_filters.FilterSet):
    class Meta:
        model = Network
        fields = ["host", "name", "forward_mode", "active"]


class GuestFilterSet(django_filters.FilterSet):
    class Meta:
        model = Guest
        fields = ["host", "name", "state"]


class NodeDeviceFilterSet(django_filters.FilterSet):
    class Meta:
        model = NodeDevice
        fields = ["host", "capability"]


class OperationFilterSet(django_filters.FilterSet):
    class Meta:
        model = Operation
        fields = ["host", "network", "status", "kind"]


class AuditEventFilterSet(django_filters.FilterSet):
    """`host` takes the id of an existing host; `host_name` also finds removed hosts' events."""

    action = django_filters.CharFilter(lookup_expr="startswith", max_length=100)
    host_name = django_filters.CharFilter(max_length=100)

    class Meta:
        model = AuditEvent
        fields = ["host", "host_name", "source", "action", "actor_name", "operation"]
