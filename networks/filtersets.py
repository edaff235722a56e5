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
    action = django_filters.CharFilter(lookup_expr="startswith")

    class Meta:
        model = AuditEvent
        fields = ["host", "source", "action", "actor_name", "operation"]
