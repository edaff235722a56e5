"""The JSON API: parse input, call one service or selector, answer."""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from networks import filtersets, selectors
from networks.choices import AuditSource
from networks.models import AuditEvent, Network, NodeDevice, Operation
from networks.services import create as create_services
from networks.services import hosts as host_services
from networks.services import networks as network_services
from networks.services import restart as restart_services
from networks.services import xmledit
from networks.services.operations import OperationRejected
from networks.services.permissions import scoped

from . import serializers as s

API = AuditSource.API


def accepted(operation: Operation) -> Response:
    """Writes that touch a hypervisor answer 202 with the operation to watch."""
    return Response({"operation": s.OperationRefSerializer(operation).data}, status=status.HTTP_202_ACCEPTED)


class HostScoped:
    """Lists and objects only of the hosts in the user's scope; others are 404."""

    host_field = "host"

    def get_queryset(self):
        return scoped(super().get_queryset(), self.request.user, self.host_field)


def _input(serializer_class, request):
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class HostViewSet(
    HostScoped,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = s.HostSerializer
    queryset = selectors.host_list()
    host_field = "pk"

    def create(self, request, *args, **kwargs):
        data = _input(s.HostSerializer, request)
        try:
            host = host_services.host_create(actor=request.user, source=API, **data)
        except DjangoValidationError as error:
            raise ValidationError(error.message_dict) from None
        host = selectors.host_list().get(pk=host.pk)
        operation = host.operations.first()
        body = {**s.HostSerializer(host).data, "operation": s.OperationRefSerializer(operation).data}
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        host_services.host_delete(host=instance, actor=self.request.user, source=API)

    @extend_schema(request=s.MessageSerializer, responses={202: s.OperationRefSerializer})
    @action(detail=True, methods=["post"])
    def sync(self, request, pk=None):
        data = _input(s.MessageSerializer, request)
        return accepted(host_services.host_request_sync(host=self.get_object(), actor=request.user, source=API, **data))


class NetworkViewSet(HostScoped, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    filterset_class = filtersets.NetworkFilterSet

    def get_queryset(self):
        if self.action == "list":
            networks = Network.objects.select_related("host").order_by("host__name", "name")
        else:
            networks = selectors.network_detail_queryset().prefetch_related("dhcp_reservations")
        return scoped(networks, self.request.user)

    def get_serializer_class(self):
        return s.NetworkListSerializer if self.action == "list" else s.NetworkDetailSerializer

    @extend_schema(request=s.NetworkCreateSerializer, responses={202: s.OperationRefSerializer})
    def create(self, request):
        data = _input(s.NetworkCreateSerializer, request)
        try:
            operation = create_services.network_request_create(actor=request.user, source=API, **data)
        except DjangoValidationError as error:
            raise ValidationError(error.message_dict) from None
        return accepted(operation)

    def _lifecycle(self, request, service, serializer_class=s.MessageSerializer):
        data = _input(serializer_class, request)
        try:
            operation = service(network=self.get_object(), actor=request.user, source=API, **data)
        except OperationRejected as error:
            raise ValidationError({"non_field_errors": [str(error)]}) from None
        return accepted(operation)

    @extend_schema(request=s.MessageSerializer, responses={202: s.OperationRefSerializer})
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return self._lifecycle(request, network_services.network_request_start)

    @extend_schema(request=s.MessageSerializer, responses={202: s.OperationRefSerializer})
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        return self._lifecycle(request, network_services.network_request_stop)

    @extend_schema(request=s.AutostartSerializer, responses={202: s.OperationRefSerializer})
    @action(detail=True, methods=["post"])
    def autostart(self, request, pk=None):
        return self._lifecycle(request, network_services.network_request_autostart, s.AutostartSerializer)

    @extend_schema(request=s.MessageSerializer, responses={202: s.OperationRefSerializer})
    @action(detail=True, methods=["post"])
    def restart(self, request, pk=None):
        return self._lifecycle(request, restart_services.network_request_restart)

    @extend_schema(request=s.NetworkXmlSerializer, responses={202: s.OperationRefSerializer})
    @action(detail=True, methods=["put"])
    def xml(self, request, pk=None):
        """New persistent XML. apply: live (net-update), define (restart pending) or restart."""
        data = _input(s.NetworkXmlSerializer, request)
        try:
            operation = xmledit.network_request_xml_change(
                network=self.get_object(), new_xml=data["xml"], apply=data["apply"], message=data["message"],
                actor=request.user, source=API,
            )  # fmt: skip
        except OperationRejected as error:
            raise ValidationError({"xml": [str(error)]}) from None
        return accepted(operation)

    @extend_schema(request=s.RenameSerializer, responses={202: s.OperationRefSerializer})
    @action(detail=True, methods=["post"])
    def rename(self, request, pk=None):
        data = _input(s.RenameSerializer, request)
        try:
            operation = restart_services.network_request_rename(
                network=self.get_object(), new_name=data["name"], move_guests=data["move_guests"],
                message=data["message"], actor=request.user, source=API,
            )  # fmt: skip
        except OperationRejected as error:
            raise ValidationError({"name": [str(error)]}) from None
        return accepted(operation)

    @extend_schema(request=s.MessageSerializer, responses={202: s.OperationRefSerializer})
    @action(detail=True, methods=["post"])
    def undefine(self, request, pk=None):
        return self._lifecycle(request, network_services.network_request_undefine)


class GuestViewSet(HostScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.GuestSerializer
    queryset = selectors.guest_detail_queryset().order_by("host__name", "name")
    filterset_class = filtersets.GuestFilterSet


class NodeDeviceViewSet(HostScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.NodeDeviceSerializer
    queryset = NodeDevice.objects.order_by("host", "name")
    filterset_class = filtersets.NodeDeviceFilterSet


class OperationViewSet(HostScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.OperationSerializer
    queryset = Operation.objects.all()
    filterset_class = filtersets.OperationFilterSet


class AuditEventViewSet(HostScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.AuditEventSerializer
    queryset = AuditEvent.objects.all()
    filterset_class = filtersets.AuditEventFilterSet
