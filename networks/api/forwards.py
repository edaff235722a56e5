"""`/api/port-forwards/`: forwards of host ports to guests; every write answers 202 with the
operation that applies it on the host (its host worker)."""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from networks import filtersets
from networks.choices import AuditSource, ForwardProtocol, ForwardState
from networks.models import Guest, Host, PortForward
from networks.services import forwards as forward_services
from networks.services.permissions import scoped

from . import serializers as s
from .errors import field_errors
from .views import HostScoped

API = AuditSource.API
PORT = {"min_value": 1, "max_value": 65535}
STATES = ", ".join(ForwardState.values)


class VisibleGuestField(s.AsciiPrimaryKeyRelatedField):
    """A guest id among the guests of the hosts the requesting user may see."""

    def get_queryset(self):
        request = self.context.get("request")
        return scoped(Guest.objects.select_related("host"), request.user if request is not None else None)


class FlatListField(serializers.ListField):
    """A list whose item errors read as plain messages ("item 2: …"), as every 400 of the API does."""

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except ValidationError as error:
            if not isinstance(error.detail, dict):
                raise
            raise ValidationError(
                [f"Item {index + 1}: {message}" for index, messages in error.detail.items() for message in messages]
            ) from None


def _port(**kwargs):
    return s.AsciiIntegerField(required=False, **PORT, **kwargs)


class PortForwardChangeSerializer(serializers.Serializer):
    """Fields a change may give (PATCH: only those to change). A port is `host_port`, or a range
    `host_port_start`/`host_port_end`; the same for the guest. Ranges have the same length."""

    protocol = serializers.ChoiceField(choices=ForwardProtocol.choices, required=False)
    host_address = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=s.ADDRESS_MAX,
        help_text="An IPv4 address of the host; empty: every address of the host",
    )  # fmt: skip
    host_port = _port()
    host_port_start = _port()
    host_port_end = _port()
    guest = VisibleGuestField(queryset=Guest.objects.all(), required=False)
    guest_port = _port()
    guest_port_start = _port()
    guest_port_end = _port()
    source_cidrs = FlatListField(
        child=serializers.CharField(max_length=18), required=False, max_length=forward_services.SOURCE_CIDRS_MAX,
        help_text="IPv4 networks allowed to connect, e.g. 203.0.113.0/24; empty: any source",
    )  # fmt: skip
    enabled = serializers.BooleanField(required=False)
    comment = serializers.CharField(required=False, allow_blank=True, max_length=forward_services.COMMENT_MAX)
    message = serializers.CharField(max_length=s.MESSAGE_MAX, required=False, default="", allow_blank=True)


class PortForwardCreateSerializer(PortForwardChangeSerializer):
    host = s.VisibleHostField(queryset=Host.objects.all())
    protocol = serializers.ChoiceField(choices=ForwardProtocol.choices, default=ForwardProtocol.TCP)
    guest = VisibleGuestField(queryset=Guest.objects.all())
    enabled = serializers.BooleanField(default=True)


class PortForwardSerializer(serializers.ModelSerializer):
    host_name = serializers.CharField(source="host.name", read_only=True)
    # Documented as text: a second enum of these choices would collide with other `state` enums.
    state = serializers.CharField(read_only=True, help_text=f"What the host worker last found: {STATES}")
    live_state = serializers.SerializerMethodField(help_text="`state`, or worker_absent when the host worker is silent")

    class Meta:
        model = PortForward
        fields = [
            "id", "host", "host_name", "protocol", "host_address", "host_port_start", "host_port_end", "guest",
            "guest_name", "guest_mac", "guest_port_start", "guest_port_end", "source_cidrs", "enabled", "comment",
            "state", "live_state", "guest_address", "checked_at", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.STR)
    def get_live_state(self, forward) -> str:
        return forward_services.live_state(forward)


class ForwardWarningSerializer(serializers.Serializer):
    message = serializers.CharField()
    link = serializers.CharField(help_text="Where to fix it (a page), or empty")


class PortForwardAcceptedSerializer(s.OperationAcceptedSerializer):
    port_forward = PortForwardSerializer(read_only=True)
    warnings = ForwardWarningSerializer(many=True, read_only=True)


class HostReapplySerializer(s.MessageSerializer):
    host = s.VisibleHostField(queryset=Host.objects.all())


def _port_changes(data: dict, prefix: str) -> dict:
    """ForwardSpec fields from `<prefix>_port` or `<prefix>_port_start`/`_end` (not both)."""
    single, start, end = f"{prefix}_port", f"{prefix}_port_start", f"{prefix}_port_end"
    if single in data and (start in data or end in data):
        raise ValidationError({single: [f"Give {single}, or {start} and {end}, not both."]})
    if single in data:
        return {start: data[single], end: None}
    return {name: data[name] for name in (start, end) if name in data}


def _spec_changes(data: dict) -> dict:
    changes = {name: data[name] for name in ("protocol", "host_address", "guest", "source_cidrs", "enabled",
                                              "comment") if name in data}  # fmt: skip
    return {**changes, **_port_changes(data, "host"), **_port_changes(data, "guest")}


def _accepted(requested: forward_services.ForwardRequested) -> Response:
    body = {
        "operation": s.OperationRefSerializer(requested.operation).data,
        "port_forward": PortForwardSerializer(requested.forward).data,
        "warnings": [{"message": w.message, "link": w.link} for w in requested.warnings],
    }
    return Response(body, status=status.HTTP_202_ACCEPTED)


def _operation_accepted(operation) -> Response:
    return Response({"operation": s.OperationRefSerializer(operation).data}, status=status.HTTP_202_ACCEPTED)


def _input(serializer_class, request, partial=False) -> dict:
    serializer = serializer_class(data=request.data, context={"request": request}, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class PortForwardViewSet(HostScoped, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Port forwards of the user's hosts. Filters: `host`, `guest`."""

    serializer_class = PortForwardSerializer
    queryset = PortForward.objects.select_related("host").order_by("host__name", "protocol", "host_port_start")
    filterset_class = filtersets.PortForwardFilterSet
    lookup_value_regex = "[0-9]+"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    @extend_schema(request=PortForwardCreateSerializer, responses={202: PortForwardAcceptedSerializer})
    def create(self, request):
        data = _input(PortForwardCreateSerializer, request)
        spec = forward_services.ForwardSpec(**{"guest": None, **_spec_changes(data)})
        try:
            requested = forward_services.port_forward_request_create(
                host=data["host"], spec=spec, actor=request.user, source=API, message=data["message"]
            )
        except DjangoValidationError as error:
            raise ValidationError(field_errors(error)) from None
        return _accepted(requested)

    @extend_schema(request=PortForwardChangeSerializer, responses={202: PortForwardAcceptedSerializer})
    def partial_update(self, request, pk=None):
        data = _input(PortForwardChangeSerializer, request, partial=True)
        try:
            requested = forward_services.port_forward_request_update(
                forward=self.get_object(), changes=_spec_changes(data), actor=request.user, source=API,
                message=data.get("message", ""),
            )  # fmt: skip
        except DjangoValidationError as error:
            raise ValidationError(field_errors(error)) from None
        return _accepted(requested)

    @extend_schema(request=None, responses={202: s.OperationAcceptedSerializer})
    def destroy(self, request, pk=None):
        try:
            operation = forward_services.port_forward_request_delete(
                forward=self.get_object(), actor=request.user, source=API
            )
        except DjangoValidationError as error:
            raise ValidationError(field_errors(error)) from None
        return _operation_accepted(operation)

    @extend_schema(
        operation_id="port_forward_reapply", request=s.MessageSerializer, responses={202: s.OperationAcceptedSerializer}
    )
    @action(detail=True, methods=["post"])
    def reapply(self, request, pk=None):
        """Apply the forwards of this forward's host again (all of them: the set is applied whole)."""
        data = _input(s.MessageSerializer, request)
        forward = self.get_object()
        return self._reapply(request, forward.host, forward, data["message"])

    @extend_schema(
        operation_id="port_forward_reapply_host",
        request=HostReapplySerializer,
        responses={202: s.OperationAcceptedSerializer},
    )
    @action(detail=False, methods=["post"], url_path="reapply", url_name="reapply-host")
    def reapply_host(self, request):
        """Apply every forward of a host again, e.g. after its firewall was flushed."""
        data = _input(HostReapplySerializer, request)
        return self._reapply(request, data["host"], None, data["message"])

    def _reapply(self, request, host, forward, message):
        try:
            operation = forward_services.port_forward_request_reapply(
                host=host, forward=forward, actor=request.user, source=API, message=message
            )
        except DjangoValidationError as error:
            raise ValidationError(field_errors(error)) from None
        return _operation_accepted(operation)
