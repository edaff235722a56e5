"""`/api/guests/{id}/interfaces/[{mac}/]`: a guest's interfaces, and the writes that change them.

The body is read as any JSON value and checked by the service (a list where text belongs
is a 400 naming the field); the serializers below document it. `?dry_run=1` answers the
preview (XML before and after, what the running guest notices) and changes nothing.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from networks.choices import AuditSource
from networks.services.interfaces import ACTIONS, ADD, REMOVE, UPDATE, checks, guest_interface_request, interface_plan
from networks.services.permissions import authorize

from . import serializers as s
from .errors import field_errors
from .guest_devices import MESSAGE_MAX, scoped_guest, write_body
from .schema import ErrorDocumentingAutoSchema
from .views import accepted

GUEST_PK = OpenApiParameter("id", {"type": "integer", "minimum": 0}, OpenApiParameter.PATH)
MAC = OpenApiParameter("mac", {"type": "string", "pattern": "^[^/]+$"}, OpenApiParameter.PATH, description="MAC")
DRY_RUN = OpenApiParameter(
    "dry_run", {"type": "string", "enum": ["0", "1"]}, OpenApiParameter.QUERY, description="1: answer the preview only"
)


class BandwidthSerializer(serializers.Serializer):
    average = serializers.IntegerField(min_value=1, help_text="KiB/s")
    peak = serializers.IntegerField(min_value=1, required=False, help_text="KiB/s")
    burst = serializers.IntegerField(min_value=1, required=False, help_text="KiB")


class InterfaceChangeSerializer(serializers.Serializer):
    """What a change takes (PATCH: each field optional, absent ones stay as they are)."""

    source_type = serializers.ChoiceField(choices=checks.SOURCE_TYPES, required=False)
    source = serializers.CharField(required=False, help_text="network, bridge or host interface name")
    portgroup = serializers.CharField(required=False, allow_blank=True)
    model = serializers.ChoiceField(choices=checks.MODELS, required=False)
    # Text in the schema: an enum would collide with the network create "mode" enum's name.
    mode = serializers.CharField(required=False, help_text="macvtap (direct) only: bridge, vepa, private, passthrough")
    link = serializers.ChoiceField(choices=checks.LINK_STATES, required=False)
    vlan_tags = serializers.ListField(child=serializers.IntegerField(min_value=0, max_value=4095), required=False)
    inbound = BandwidthSerializer(required=False, allow_null=True)
    outbound = BandwidthSerializer(required=False, allow_null=True)
    scope = serializers.ChoiceField(choices=checks.SCOPES, required=False, help_text="default: both (stopped: config)")
    message = serializers.CharField(required=False, allow_blank=True, max_length=MESSAGE_MAX)


class InterfaceAddSerializer(InterfaceChangeSerializer):
    mac = serializers.CharField(required=False, allow_blank=True, help_text="empty: a free one in 52:54:00")


class InterfaceRemoveSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=checks.SCOPES, required=False)
    message = serializers.CharField(required=False, allow_blank=True, max_length=MESSAGE_MAX)


class InterfacePreviewSerializer(serializers.Serializer):
    action = serializers.CharField()
    mac = serializers.CharField()
    scope = serializers.CharField()
    summary = serializers.CharField()
    effect = serializers.CharField(help_text="what the running guest notices")
    replug = serializers.BooleanField(help_text="a live change unplugs and plugs the NIC")
    before_xml = serializers.CharField()
    after_xml = serializers.CharField()
    warnings = serializers.ListField(child=serializers.CharField())


def _write(request, guest, action: str, values: dict, message: str, mac: str = ""):
    try:
        if request.query_params.get("dry_run") in ("1", "true"):
            authorize(actor=request.user, action=ACTIONS[action], host=guest.host, source=AuditSource.API,
                      object_name=guest.name)  # fmt: skip
            plan = interface_plan(action=action, guest=guest, values=values, mac=mac, actor=request.user)
            return Response(_preview_json(plan))
        operation = guest_interface_request(
            action=action, guest=guest, values=values, mac=mac, actor=request.user, source=AuditSource.API,
            message=message,
        )  # fmt: skip
    except DjangoValidationError as error:
        raise ValidationError(field_errors(error)) from None
    return accepted(operation)


def _preview_json(plan) -> dict:
    return {
        "action": plan.action,
        "mac": plan.mac,
        "scope": str(plan.scope),
        "summary": plan.summary,
        "effect": plan.effect,
        "replug": plan.replug,
        "before_xml": plan.before_xml,
        "after_xml": plan.after_xml,
        "warnings": list(plan.warnings),
    }


@extend_schema(parameters=[GUEST_PK])
class GuestInterfacesView(APIView):
    """GET lists the guest's interfaces (as last synced); POST adds one (202 with the operation)."""

    schema = ErrorDocumentingAutoSchema()

    @extend_schema(operation_id="guest_interface_list", responses={200: s.GuestInterfaceSerializer(many=True)})
    def get(self, request, pk):
        return Response(s.GuestInterfaceSerializer(scoped_guest(request, pk).interfaces.all(), many=True).data)

    @extend_schema(
        operation_id="guest_interface_add",
        parameters=[DRY_RUN],
        request=InterfaceAddSerializer,
        responses={200: InterfacePreviewSerializer, 202: s.OperationAcceptedSerializer},
    )
    def post(self, request, pk):
        guest = scoped_guest(request, pk)
        values, message = write_body(request.data, "the interface's fields")
        return _write(request, guest, ADD, values, message)


@extend_schema(parameters=[GUEST_PK, MAC])
class GuestInterfaceView(APIView):
    """GET one interface; PATCH changes it, DELETE removes it (202 with the operation)."""

    schema = ErrorDocumentingAutoSchema()

    @extend_schema(operation_id="guest_interface_detail", responses={200: s.GuestInterfaceSerializer})
    def get(self, request, pk, mac):
        row = scoped_guest(request, pk).interfaces.filter(mac=mac.lower()).first()
        if row is None:
            raise NotFound("The guest has no interface with this MAC.")
        return Response(s.GuestInterfaceSerializer(row).data)

    @extend_schema(
        operation_id="guest_interface_change",
        parameters=[DRY_RUN],
        request=InterfaceChangeSerializer,
        responses={200: InterfacePreviewSerializer, 202: s.OperationAcceptedSerializer},
    )
    def patch(self, request, pk, mac):
        guest = scoped_guest(request, pk)
        values, message = write_body(request.data, "the interface's fields")
        return _write(request, guest, UPDATE, values, message, mac)

    @extend_schema(
        operation_id="guest_interface_remove",
        parameters=[DRY_RUN, OpenApiParameter("scope", enum=list(checks.SCOPES), required=False)],
        request=InterfaceRemoveSerializer,
        responses={200: InterfacePreviewSerializer, 202: s.OperationAcceptedSerializer},
    )
    def delete(self, request, pk, mac):
        guest = scoped_guest(request, pk)
        values, message = write_body(request.data, "the interface's fields")
        if "scope" in request.query_params:
            values.setdefault("scope", request.query_params["scope"])
        return _write(request, guest, REMOVE, values, message, mac)
