"""The JSON API: parse input, call one service or selector, answer."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from networks import filtersets, selectors
from networks.choices import AuditSource
from networks.models import AuditEvent, Network, NodeDevice, Operation
from networks.services import create as create_services
from networks.services import hosts as host_services
from networks.services import networks as network_services
from networks.services import restart as restart_services
from networks.services import xmledit
from networks.services.audit import EXPORT_FORMATS, audit_export
from networks.services.operations import OperationRejected
from networks.services.permissions import scoped

from . import serializers as s
from .pagination import BoundedLimitOffsetPagination, NewestFirstCursorPagination
from .schema import ErrorDocumentingAutoSchema

API = AuditSource.API


def accepted(operation: Operation) -> Response:
    """Writes that touch a hypervisor answer 202 with the operation to watch."""
    return Response({"operation": s.OperationRefSerializer(operation).data}, status=status.HTTP_202_ACCEPTED)


class HostScoped:
    """Lists and objects only of the hosts in the user's scope; others are 404."""

    host_field = "host"
    pagination_class = BoundedLimitOffsetPagination
    schema = ErrorDocumentingAutoSchema()

    def get_queryset(self):
        return scoped(super().get_queryset(), self.request.user, self.host_field)


def _input(serializer_class, request):
    serializer = serializer_class(data=request.data, context={"request": request})
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
    filterset_class = filtersets.HostFilterSet
    host_field = "pk"

    @extend_schema(responses={201: s.HostCreatedSerializer})
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

    @extend_schema(request=s.MessageSerializer, responses={202: s.OperationAcceptedSerializer})
    @action(detail=True, methods=["post"])
    def sync(self, request, pk=None):
        data = _input(s.MessageSerializer, request)
        return accepted(host_services.host_request_sync(host=self.get_object(), actor=request.user, source=API, **data))


class NetworkViewSet(HostScoped, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    filterset_class = filtersets.NetworkFilterSet

    def get_queryset(self):
        if self.action == "list":
            networks = (
                Network.objects.select_related("host").defer("live_xml", "inactive_xml").order_by("host__name", "name")
            )
        else:
            networks = selectors.network_detail_queryset().prefetch_related(
                "dhcp_reservations", "ips__dhcp_reservations"
            )
        return scoped(networks, self.request.user)

    def get_serializer_class(self):
        return s.NetworkListSerializer if self.action == "list" else s.NetworkDetailSerializer

    @extend_schema(request=s.NetworkCreateSerializer, responses={202: s.OperationAcceptedSerializer})
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

    @extend_schema(request=s.MessageSerializer, responses={202: s.OperationAcceptedSerializer})
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return self._lifecycle(request, network_services.network_request_start)

    @extend_schema(request=s.MessageSerializer, responses={202: s.OperationAcceptedSerializer})
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        return self._lifecycle(request, network_services.network_request_stop)

    @extend_schema(request=s.AutostartSerializer, responses={202: s.OperationAcceptedSerializer})
    @action(detail=True, methods=["post"])
    def autostart(self, request, pk=None):
        return self._lifecycle(request, network_services.network_request_autostart, s.AutostartSerializer)

    @extend_schema(request=s.MessageSerializer, responses={202: s.OperationAcceptedSerializer})
    @action(detail=True, methods=["post"])
    def restart(self, request, pk=None):
        return self._lifecycle(request, restart_services.network_request_restart)

    @extend_schema(request=s.NetworkXmlSerializer, responses={202: s.OperationAcceptedSerializer})
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

    @extend_schema(request=s.RenameSerializer, responses={202: s.OperationAcceptedSerializer})
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

    @extend_schema(request=s.MessageSerializer, responses={202: s.OperationAcceptedSerializer})
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
    pagination_class = NewestFirstCursorPagination


class AuditEventViewSet(HostScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.AuditEventSerializer
    queryset = AuditEvent.objects.all()
    filterset_class = filtersets.AuditEventFilterSet
    pagination_class = NewestFirstCursorPagination


class _JsonErrorsOnly(BaseContentNegotiation):
    """The export answers its own media type whatever the client accepts; errors are JSON."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class AuditExportView(HostScoped, GenericAPIView):
    queryset = AuditEvent.objects.all()
    filterset_class = filtersets.AuditEventFilterSet
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _JsonErrorsOnly
    pagination_class = None

    @extend_schema(
        operation_id="audit_export",
        parameters=[
            OpenApiParameter("export_format", str, OpenApiParameter.PATH, enum=list(EXPORT_FORMATS)),
            OpenApiParameter("host", int, description="Id of an existing host"),
            OpenApiParameter("host_name", str, description="Host name; also finds removed hosts' events"),
            OpenApiParameter("source", str, enum=AuditSource.values),
            OpenApiParameter("action", str, description="Action prefix, e.g. network.start"),
            OpenApiParameter("actor_name", str),
            OpenApiParameter("operation", int),
        ],
        responses={(200, "text/csv"): OpenApiTypes.STR, (200, "application/x-ndjson"): OpenApiTypes.STR},
        description="The audit events of /api/audit/ (same filters), oldest first, streamed. CSV cells that "
        "a spreadsheet would run as a formula are prefixed with '; JSON lines keep every value exactly.",
    )
    def get(self, request, export_format: str):
        events = self.filter_queryset(self.get_queryset())  # a filter it cannot read answers 400
        response = StreamingHttpResponse(
            audit_export(events, export_format), content_type=EXPORT_FORMATS[export_format]
        )
        response["Content-Disposition"] = f'attachment; filename="kvmweb-audit.{export_format}"'
        return response
