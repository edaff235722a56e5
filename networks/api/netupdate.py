"""`/api/networks/{id}/<section>/[{key}/]`: the mirror's entries, and net-update writes."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from networks.choices import AuditSource
from networks.models import DhcpRange, Network
from networks.search import BadQuery, clean_query, ipam_search
from networks.services.netupdate import (
    SCOPES,
    SECTIONS,
    bulk,
    network_bulk_preview,
    network_request_bulk_import,
    network_request_update,
)
from networks.services.netupdate.common import section_values
from networks.services.permissions import authorize, scoped, visible_host_ids

from . import serializers as s
from .errors import field_errors
from .schema import ErrorDocumentingAutoSchema
from .views import accepted

# URL collection name → (libvirt section, serializer of the mirror's rows, rows of a network)
COLLECTIONS = {
    "dhcp-hosts": ("ip-dhcp-host", s.DhcpHostSerializer, lambda n: n.dhcp_reservations.all()),
    "dhcp-ranges": ("ip-dhcp-range", s.DhcpRangeSerializer, lambda n: DhcpRange.objects.filter(ip__network=n)),
    "dns-hosts": ("dns-host", s.DnsRecordSerializer, lambda n: n.dns_records.filter(kind="host")),
    "dns-txt": ("dns-txt", s.DnsRecordSerializer, lambda n: n.dns_records.filter(kind="txt")),
    "dns-srv": ("dns-srv", s.DnsRecordSerializer, lambda n: n.dns_records.filter(kind="srv")),
    "portgroups": ("portgroup", s.PortgroupSerializer, lambda n: n.portgroups.all()),
    "forward-interfaces": ("forward-interface", s.ForwardInterfaceSerializer, lambda n: n.forward_interfaces.all()),
}


class UpdateOptionsSerializer(serializers.Serializer):
    """Fields every write takes; the section's own fields (mac, ip, name…) travel beside them."""

    command = serializers.ChoiceField(choices=["add-first", "add-last"], default="add-last")
    scope = serializers.ChoiceField(choices=SCOPES, default="both")
    message = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


# The entries of a section: their fields depend on the section (see the section serializers).
ENTRY_LIST_SCHEMA = {"type": "array", "items": {"type": "object"}}
# The path parameters as the URL patterns take them, so that the schema promises no URL that is not routed.
NETWORK_PK = OpenApiParameter("id", {"type": "integer", "minimum": 0}, OpenApiParameter.PATH)  # {pk} is shown as {id}
COLLECTION = OpenApiParameter("collection", str, OpenApiParameter.PATH, enum=list(COLLECTIONS))
ENTRY_KEY = OpenApiParameter(
    "key", {"type": "string", "pattern": "^[^/]+$"}, OpenApiParameter.PATH, description="MAC, address or name"
)


@extend_schema(parameters=[NETWORK_PK, COLLECTION])
class SectionView(APIView):
    """GET lists the section's entries; POST adds one (202 with the operation)."""

    schema = ErrorDocumentingAutoSchema()

    @extend_schema(operation_id="network_section_list", responses={200: ENTRY_LIST_SCHEMA})
    def get(self, request, pk, collection):
        network = get_object_or_404(scoped(Network.objects, request.user), pk=pk)
        _section, serializer_class, rows = COLLECTIONS[collection]
        return Response(serializer_class(rows(network), many=True).data)

    @extend_schema(
        operation_id="network_section_add",
        request=UpdateOptionsSerializer,
        responses={202: s.OperationAcceptedSerializer},
    )
    def post(self, request, pk, collection):
        options = _options(request, {"command", "scope", "message"})
        return _request_update(request, pk, collection, options["command"], options, key="")


@extend_schema(parameters=[NETWORK_PK, COLLECTION, ENTRY_KEY])
class EntryView(APIView):
    """PATCH modifies the entry named by `key` (where libvirt can), DELETE removes it."""

    schema = ErrorDocumentingAutoSchema()

    @extend_schema(
        operation_id="network_section_modify",
        request=UpdateOptionsSerializer,
        responses={202: s.OperationAcceptedSerializer},
    )
    def patch(self, request, pk, collection, key):
        options = _options(request, {"scope", "message"})
        return _request_update(request, pk, collection, "modify", options, key=key)

    @extend_schema(
        operation_id="network_section_delete",
        parameters=[OpenApiParameter("scope", enum=list(SCOPES), required=False)],
        responses={202: s.OperationAcceptedSerializer},
    )
    def delete(self, request, pk, collection, key):
        data = {**request.query_params.dict(), **_body(request)}
        options = _options(request, {"scope", "message"}, data)
        return _request_update(request, pk, collection, "delete", options, key=key, values=data)


OPTION_NAMES = ("command", "scope", "message")


def _body(request) -> dict:
    """The request body as an object: a list, a string, a number or null is a 400, never a 500."""
    if not isinstance(request.data, dict):
        raise ValidationError({"non_field_errors": ["Send a JSON object of the entry's fields."]})
    return request.data


def _options(request, names: set[str], data=None) -> dict:
    data = _body(request) if data is None else data
    serializer = UpdateOptionsSerializer(data={k: v for k, v in data.items() if k in names})
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _request_update(request, pk, collection, command, options, key, values=None):
    network = get_object_or_404(scoped(Network.objects.select_related("host"), request.user), pk=pk)
    section = COLLECTIONS[collection][0]
    try:
        operation = network_request_update(
            network=network,
            section=section,
            command=command,
            values=section_values(_body(request) if values is None else values, SECTIONS[section].fields, OPTION_NAMES),
            key=key,
            scope=options["scope"],
            message=options.get("message", ""),
            actor=request.user,
            source=AuditSource.API,
        )
    except DjangoValidationError as error:
        raise ValidationError(field_errors(error)) from None
    return accepted(operation)


class BulkImportSerializer(serializers.Serializer):
    csv = serializers.CharField(help_text="Lines of mac,ip,name", max_length=bulk.MAX_CSV_CHARS)
    strategy = serializers.ChoiceField(choices=["live", "config", "restart"], default="live")
    dry_run = serializers.BooleanField(default=False)
    message = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


@extend_schema(parameters=[NETWORK_PK])
class BulkImportView(APIView):
    """POST CSV: with dry_run the per-row checks and predicted cost; otherwise 202 with the operation."""

    schema = ErrorDocumentingAutoSchema()

    @extend_schema(
        request=BulkImportSerializer,
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, "dry_run: the checked rows"),
            202: s.OperationAcceptedSerializer,
        },
    )
    def post(self, request, pk):
        network = get_object_or_404(scoped(Network.objects.select_related("host"), request.user), pk=pk)
        authorize(actor=request.user, action="network.bulk_import", host=network.host, source=AuditSource.API)
        data = BulkImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        options = data.validated_data
        try:
            if options["dry_run"]:
                return Response(_bulk_preview_json(network_bulk_preview(network=network, csv_text=options["csv"])))
            operation = network_request_bulk_import(
                network=network,
                csv_text=options["csv"],
                strategy=options["strategy"],
                message=options["message"],
                actor=request.user,
                source=AuditSource.API,
            )
        except DjangoValidationError as error:
            raise ValidationError(field_errors(error)) from None
        return accepted(operation)


def _bulk_preview_json(preview) -> dict:
    return {
        "valid": preview.valid,
        "invalid": preview.invalid,
        "present": preview.present,
        "predicted_seconds": preview.seconds_by_strategy,
        "rows": [
            {
                "line": row.line,
                **row.values,
                "ok": row.ok,
                "present": row.present,
                "errors": row.errors,
                "warnings": row.plan.warnings if row.ok else [],
            }
            for row in preview.rows
        ],
    }


class IpamView(APIView):
    """GET ?q=MAC, IP or name: where it is used across the fleet (at most 50 rows of each kind;
    MACs and addresses match exactly, names from their start in any case)."""

    schema = ErrorDocumentingAutoSchema()

    @extend_schema(parameters=[OpenApiParameter("q", required=True)], responses=OpenApiTypes.OBJECT)
    def get(self, request):
        try:
            query = clean_query(request.query_params.get("q", ""))
        except BadQuery as error:
            raise ValidationError({"q": [str(error)]}) from None
        found = ipam_search(query, host_ids=visible_host_ids(request.user))
        return Response(
            {
                "reservations": s.IpamReservationSerializer(found.reservations.rows, many=True).data,
                "leases": [
                    {"network": lease.network_id, "mac": lease.mac, "ip": lease.address, "hostname": lease.hostname}
                    for lease in found.leases
                ],
                "interfaces": [
                    {"guest": i.guest_id, "guest_name": i.guest.name, "mac": i.mac, "network": i.network_id}
                    for i in found.interfaces
                ],
                "dns_records": [{"network": d.network_id, **s.DnsRecordSerializer(d).data} for d in found.dns_records],
                "subnets": [
                    {"network": ip.network_id, "address": ip.address, "prefix": ip.prefix} for ip in found.subnets
                ],
            }
        )
