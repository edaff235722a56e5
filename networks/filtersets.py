import django_filters

from networks.models import AuditEvent, Guest, Network, NodeDevice, Operation, PortForward
from networks.services.permissions import scoped, visible_hosts


class HostScopedFilterSet(django_filters.FilterSet):
    """`?host=` (and `?network=`) choose among what the user may see: another host's id answers
    like one that does not exist, so a scoped user cannot tell hidden hosts apart."""

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, request=request, **kwargs)
        user = getattr(request, "user", None)
        if "host" in self.filters:
            self.filters["host"].queryset = visible_hosts(user)
        if "network" in self.filters:
            self.filters["network"].queryset = scoped(Network.objects, user)


class NetworkFilterSet(HostScopedFilterSet):
    class Meta:
        model = Network
        fields = ["host", "name", "forward_mode", "active"]


class GuestFilterSet(HostScopedFilterSet):
    class Meta:
        model = Guest
        fields = ["host", "name", "state"]


class NodeDeviceFilterSet(HostScopedFilterSet):
    class Meta:
        model = NodeDevice
        fields = ["host", "capability"]


class OperationFilterSet(HostScopedFilterSet):
    class Meta:
        model = Operation
        fields = ["host", "network", "status", "kind"]


class AuditEventFilterSet(HostScopedFilterSet):
    """`host` takes the id of an existing host; `host_name` also finds removed hosts' events."""

    action = django_filters.CharFilter(lookup_expr="startswith", max_length=100)
    host_name = django_filters.CharFilter(max_length=100)

    class Meta:
        model = AuditEvent
        fields = ["host", "host_name", "source", "action", "actor_name", "operation"]


class PortForwardFilterSet(HostScopedFilterSet):
    """`?guest=` chooses among the guests of the user's hosts, like `?host=`."""

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, request=request, **kwargs)
        self.filters["guest"].queryset = scoped(Guest.objects, getattr(request, "user", None))

    class Meta:
        model = PortForward
        fields = ["host", "guest"]
