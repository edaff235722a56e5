"""Desired state over the API: export a host's networks, plan a document, apply it."""

import json

import yaml
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from networks.choices import AuditSource
from networks.models import Host
from networks.services.desired import DocumentRejected, export_networks
from networks.services.desired_plan import apply_document, plan_document, resolve_hosts
from networks.services.permissions import scoped

from .schema import ErrorDocumentingAutoSchema

YAML = "application/yaml"
HOST_PK = OpenApiParameter("id", {"type": "integer", "minimum": 0}, OpenApiParameter.PATH)
NAMES = OpenApiParameter("names", str, OpenApiParameter.QUERY, required=False, description="Comma-separated")


class YamlRenderer(BaseRenderer):
    """Lets a client ask for application/yaml; errors then come as YAML too."""

    media_type = YAML
    format = "yaml"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, str):
            return data
        # An error body holds DRF's ErrorDetail (a str subclass) that the safe dumper refuses:
        # plain JSON types first, as the JSON renderer would write them.
        return yaml.safe_dump(json.loads(JSONRenderer().render(data)), sort_keys=False, allow_unicode=True)


class PlanRequestSerializer(serializers.Serializer):
    """The body of a plan or an apply (documented here; read strictly by `_body`)."""

    document = serializers.CharField(help_text="The YAML document (`kvmweb: networks/v1`)")
    hosts = serializers.ListField(child=serializers.CharField(), help_text="Target host names")
    prune = serializers.BooleanField(default=False, help_text="Delete networks the document does not hold")


class PlanItemSerializer(serializers.Serializer):
    host = serializers.CharField()
    network = serializers.CharField()
    action = serializers.ChoiceField(
        choices=["unchanged", "live", "define", "restart", "create", "delete", "start", "autostart",
                 "conflict", "refused", "kept"]
    )  # fmt: skip
    detail = serializers.CharField()
    updates = serializers.ListField(child=serializers.CharField())
    guests = serializers.ListField(child=serializers.CharField())
    then = serializers.ListField(child=serializers.CharField())


class PlanSerializer(serializers.Serializer):
    items = PlanItemSerializer(many=True)
    changes = serializers.IntegerField()
    summary = serializers.CharField()


class ItemOperationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    url = serializers.CharField()


class ApplyItemSerializer(PlanItemSerializer):
    status = serializers.ChoiceField(choices=["requested", "unchanged", "skipped", "refused"])
    reason = serializers.CharField(required=False)
    operations = ItemOperationSerializer(many=True)


class ApplySerializer(serializers.Serializer):
    items = ApplyItemSerializer(many=True)
    changes = serializers.IntegerField()
    summary = serializers.CharField()


class NetworkExportView(APIView):
    """The host's networks (or `?names=a,b`) as a desired-state document, from the mirror."""

    schema = ErrorDocumentingAutoSchema()
    renderer_classes = [JSONRenderer, YamlRenderer]

    @extend_schema(parameters=[HOST_PK, NAMES], responses={(200, YAML): OpenApiTypes.STR})
    def get(self, request, pk):
        host = get_object_or_404(scoped(Host.objects, request.user, "pk"), pk=pk)
        names = request.query_params.get("names")
        wanted = None if names is None else [name.strip() for name in names.split(",") if name.strip()]
        try:
            text = export_networks(host, wanted)
        except DocumentRejected as error:
            raise ValidationError({"names": [str(error)]}) from None
        response = HttpResponse(text, content_type=f"{YAML}; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{host.pk}-networks.yaml"'
        return response


def _body(request) -> tuple:
    """(document, hosts, prune), each of the type it must have: anything else is a 400."""
    data = request.data
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["Send a JSON object with document, hosts and prune."]})
    unknown = sorted(set(data) - {"document", "hosts", "prune"})
    if unknown:
        raise ValidationError({unknown[0][:60]: ["Unknown field."]})
    if not isinstance(data.get("document"), str):
        raise ValidationError({"document": ["Send the document as a string."]})
    prune = data.get("prune", False)
    if not isinstance(prune, bool):
        raise ValidationError({"prune": ["Must be true or false."]})
    try:
        hosts = resolve_hosts(request.user, data.get("hosts"))
    except DocumentRejected as error:
        raise ValidationError({"hosts": [str(error)]}) from None
    return data["document"], hosts, prune


class NetworkPlanView(APIView):
    """What applying `document` to `hosts` would do, per network and host; changes nothing."""

    schema = ErrorDocumentingAutoSchema()

    @extend_schema(operation_id="network_plan", request=PlanRequestSerializer, responses={200: PlanSerializer})
    def post(self, request):
        document, hosts, prune = _body(request)
        try:
            plan = plan_document(document, hosts, prune)
        except DocumentRejected as error:
            raise ValidationError({"document": [str(error)]}) from None
        items = [item.as_dict() for item in plan.items]
        return Response({"items": items, "changes": plan.changes, "summary": plan.summary})


class NetworkPlanApplyView(APIView):
    """Apply `document` to `hosts`: network.apply on each host (admin), then one operation per
    network and host through its own request service; 202 with each item's operations or reason."""

    schema = ErrorDocumentingAutoSchema()

    @extend_schema(operation_id="network_plan_apply", request=PlanRequestSerializer, responses={202: ApplySerializer})
    def post(self, request):
        document, hosts, prune = _body(request)
        try:
            result = apply_document(document, hosts, prune=prune, actor=request.user, source=AuditSource.API)
        except DocumentRejected as error:
            raise ValidationError({"document": [str(error)]}) from None
        body = {"items": result.results, "changes": result.plan.changes, "summary": result.summary}
        return Response(body, status=status.HTTP_202_ACCEPTED)
