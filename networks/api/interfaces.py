"""`/api/guests/{id}/interfaces/[{mac}/]`: a guest's interfaces, and the writes that change them.

The body is read as any JSON value and checked by the service (a list where text belongs
is a 400 naming the field); the serializers below document it. `?dry_run=1` answers the
preview (XML before and after, what the running guest notices) and changes nothing.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import QueryDict
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from networks import selectors
from networks.choices import AuditSource
from networks.services.interfaces import ACTIONS, ADD, REMOVE, UPDATE, checks, guest_interface_request, interface_plan
from networks.services.netupdate.common import text
from networks.services.permissions import authorize, scoped

from . import serializers as s
from .schema import ErrorDocumentingAutoSchema
from .views import accepted

MESSAGE_MAX = 500
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


def _guest(request, pk):
    return get_object_or_404(scoped(selectors.guest_detail_queryset(), request.user), pk=pk)


def _body(data) -> tuple[dict, str]:
    """The fields and the message of a body of any JSON type (a non-object is a 400)."""
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["Send a JSON object of the interface's fields."]})
    values = data.dict() if isinstance(data, QueryDict) else dict(data)  # a form: one value per field
    try:
        message = text({"message": values.pop("message", "")}, "message", max_length=MESSAGE_MAX)
    except DjangoValidationError as error:
        raise ValidationError(_field_errors(error)) from None
    return values, message


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
        raise ValidationError(_field_errors(error)) from None
    return accepted(operation)


def _field_errors(error: DjangoValidationError) -> dict:
    return error.message_dict if hasattr(error, "error_dict") else {"non_field_errors": error.messages}


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
        return Response(s.GuestInterfaceSerializer(_guest(request, pk).interfaces.all(), many=True).data)

    @extend_schema(
        operation_id="guest_interface_add",
        parameters=[DRY_RUN],
        request=InterfaceAddSerializer,
        responses={200: InterfacePreviewSerializer, 202: s.OperationAcceptedSerializer},
    )
    def post(self, request, pk):
        guest = _guest(request, pk)
        values, message = _body(request.data)
        return _write(request, guest, ADD, values, message)


@extend_schema(parameters=[GUEST_PK, MAC])
class GuestInterfaceView(APIView):
    """GET one interface; PATCH changes it, DELETE removes it (202 with the operation)."""

    schema = ErrorDocumentingAutoSchema()

    @extend_schema(operation_id="guest_interface_detail", responses={200: s.GuestInterfaceSerializer})
    def get(self, request, pk, mac):
        row = _guest(request, pk).interfaces.filter(mac=mac.lower()).first()
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
        guest = _guest(request, pk)
        values, message = _body(request.data)
        return _write(request, guest, UPDATE, values, message, mac)

    @extend_schema(
        operation_id="guest_interface_remove",
        parameters=[DRY_RUN, OpenApiParameter("scope", enum=list(checks.SCOPES), required=False)],
        request=InterfaceRemoveSerializer,
        responses={200: InterfacePreviewSerializer, 202: s.OperationAcceptedSerializer},
    )
    def delete(self, request, pk, mac):
        guest = _guest(request, pk)
        values, message = _body(request.data)
        if "scope" in request.query_params:
            values.setdefault("scope", request.query_params["scope"])
        return _write(request, guest, REMOVE, values, message, mac)
