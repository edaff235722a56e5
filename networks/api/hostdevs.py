"""`/api/guests/{id}/hostdevs/[{pci}/]`: the host PCI devices a guest holds, assigning one
and returning it (admins only).

The body is read as any JSON value and checked by the service (a list where text belongs
is a 400 naming the field); the serializers below document it. `?dry_run=1` answers the
preview (the device XML, what the guest notices, warnings) and changes nothing.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from networks.choices import AuditSource
from networks.hypervisor import hostdevs as hv_hostdevs
from networks.services.hostdevs import ACTIONS, ATTACH, DETACH, guest_hostdev_request, hostdev_plan
from networks.services.interfaces.checks import SCOPES
from networks.services.permissions import authorize

from . import serializers as s
from .errors import field_errors
from .guest_devices import MESSAGE_MAX, scoped_guest, write_body
from .schema import ErrorDocumentingAutoSchema

GUEST_PK = OpenApiParameter("id", {"type": "integer", "minimum": 0}, OpenApiParameter.PATH)
PCI = OpenApiParameter(
    "pci", {"type": "string", "pattern": "^[^/]+$"}, OpenApiParameter.PATH, description="host PCI address, 0000:01:10.2"
)
DRY_RUN = OpenApiParameter(
    "dry_run", {"type": "string", "enum": ["0", "1"]}, OpenApiParameter.QUERY, description="1: answer the preview only"
)


class HostdevSerializer(serializers.Serializer):
    """A PCI device the guest holds, as the last sync read its XML."""

    pci_address = serializers.CharField(help_text="the host's address of the device")
    kind = serializers.CharField(help_text="hostdev (<hostdev>) or interface (<interface type='hostdev'>)")
    managed = serializers.BooleanField()
    mac = serializers.CharField(help_text="interface only")
    vlan = serializers.IntegerField(allow_null=True)
    virtualport = serializers.CharField()
    profileid = serializers.CharField()


class HostdevAttachSerializer(serializers.Serializer):
    pci_address = serializers.CharField(help_text="0000:01:10.2 (a PCI device of the guest's host)")
    kind = serializers.CharField(required=False, help_text="hostdev (default, any PCI device) or interface (a VF)")
    managed = serializers.BooleanField(required=False, help_text="default true")
    mac = serializers.CharField(required=False, allow_blank=True, help_text="interface: empty for a free one")
    vlan = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=4095)
    profileid = serializers.CharField(required=False, allow_blank=True, help_text="interface: 802.1Qbh port profile")
    virtualport = serializers.CharField(required=False, allow_blank=True, help_text="802.1Qbh only (802.1Qbg: 400)")
    scope = serializers.ChoiceField(choices=SCOPES, required=False, help_text="default: both (stopped: config)")
    message = serializers.CharField(required=False, allow_blank=True, max_length=MESSAGE_MAX)


class HostdevDetachSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=SCOPES, required=False)
    message = serializers.CharField(required=False, allow_blank=True, max_length=MESSAGE_MAX)


class HostdevPreviewSerializer(serializers.Serializer):
    action = serializers.CharField()
    pci_address = serializers.CharField()
    kind = serializers.CharField()
    scope = serializers.CharField()
    mac = serializers.CharField()
    summary = serializers.CharField()
    effect = serializers.CharField(help_text="what the running guest notices")
    device_xml = serializers.CharField()
    warnings = serializers.ListField(child=serializers.CharField())


class HostdevAcceptedSerializer(s.OperationAcceptedSerializer):
    warnings = serializers.ListField(child=serializers.CharField(), help_text="e.g. a VF as a bare hostdev")


def _write(request, guest, action: str, values: dict, message: str, pci: str = ""):
    try:
        if request.query_params.get("dry_run") in ("1", "true"):
            authorize(actor=request.user, action=ACTIONS[action], host=guest.host, source=AuditSource.API,
                      object_name=guest.name)  # fmt: skip
            plan = hostdev_plan(action=action, guest=guest, values=values, pci_address=pci, actor=request.user)
            return Response(_preview_json(plan))
        operation = guest_hostdev_request(
            action=action, guest=guest, values=values, pci_address=pci, actor=request.user, source=AuditSource.API,
            message=message,
        )  # fmt: skip
    except DjangoValidationError as error:
        raise ValidationError(field_errors(error)) from None
    body = {"operation": s.OperationRefSerializer(operation).data, "warnings": operation.params["warnings"]}
    return Response(body, status=status.HTTP_202_ACCEPTED)


def _preview_json(plan) -> dict:
    return {
        "action": plan.action, "pci_address": plan.pci_address, "kind": plan.kind, "scope": str(plan.scope),
        "mac": plan.mac, "summary": plan.summary, "effect": plan.effect, "device_xml": plan.device_xml,
        "warnings": list(plan.warnings),
    }  # fmt: skip


def _device_json(device) -> dict:
    fields = ("pci_address", "kind", "managed", "mac", "vlan", "virtualport", "profileid")
    return {name: getattr(device, name) for name in fields}


@extend_schema(parameters=[GUEST_PK])
class GuestHostdevsView(APIView):
    """GET lists the PCI devices the guest holds (as last synced); POST assigns one (202)."""

    schema = ErrorDocumentingAutoSchema()

    @extend_schema(operation_id="guest_hostdev_list", responses={200: HostdevSerializer(many=True)})
    def get(self, request, pk):
        devices = hv_hostdevs.assigned_devices(scoped_guest(request, pk).xml)
        return Response([_device_json(device) for device in devices])

    @extend_schema(
        operation_id="guest_hostdev_attach",
        parameters=[DRY_RUN],
        request=HostdevAttachSerializer,
        responses={200: HostdevPreviewSerializer, 202: HostdevAcceptedSerializer},
    )
    def post(self, request, pk):
        guest = scoped_guest(request, pk)
        values, message = write_body(request.data, "the device's fields")
        return _write(request, guest, ATTACH, values, message)


@extend_schema(parameters=[GUEST_PK, PCI])
class GuestHostdevView(APIView):
    """DELETE returns the device at host address {pci} from the guest (202 with the operation)."""

    schema = ErrorDocumentingAutoSchema()

    @extend_schema(
        operation_id="guest_hostdev_detach",
        parameters=[DRY_RUN, OpenApiParameter("scope", enum=list(SCOPES), required=False)],
        request=HostdevDetachSerializer,
        responses={200: HostdevPreviewSerializer, 202: HostdevAcceptedSerializer},
    )
    def delete(self, request, pk, pci):
        guest = scoped_guest(request, pk)
        values, message = write_body(request.data, "the device's fields")
        if "scope" in request.query_params:
            values.setdefault("scope", request.query_params["scope"])
        return _write(request, guest, DETACH, values, message, pci)
