"""`POST /api/audit/{id}/undo/`: undo the change an audit event records (202 with the
operation and its plan), or with `?dry_run=1` only the plan (200, nothing changes)."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from networks.choices import AuditSource
from networks.models import AuditEvent
from networks.services.operations import OperationRejected
from networks.services.permissions import scoped
from networks.services.undo import MESSAGE_MAX, GuestUndoPlan, UndoPlan, undo_preview, undo_request_planned

from . import serializers as s
from .schema import ErrorDocumentingAutoSchema

EVENT_PK = OpenApiParameter("id", {"type": "integer", "minimum": 0}, OpenApiParameter.PATH)
DRY_RUN_VALUES = {"1": True, "true": True, "0": False, "false": False}
DRY_RUN = OpenApiParameter(
    "dry_run", {"type": "string", "enum": list(DRY_RUN_VALUES)}, OpenApiParameter.QUERY,
    description="1: answer the plan only; nothing changes",
)  # fmt: skip


class UndoBodySerializer(serializers.Serializer):
    message = serializers.CharField(max_length=MESSAGE_MAX, required=False, allow_blank=True,
                                    help_text="Why (kept in the audit log after 'Undoes event #N')")  # fmt: skip


class UndoEntrySerializer(serializers.Serializer):
    section = serializers.CharField()
    command = serializers.CharField(help_text="add-last, delete, modify, or replace (delete then add)")
    fragment = serializers.CharField()
    parent_index = serializers.IntegerField()
    old_fragment = serializers.CharField(help_text="replace: the entry deleted first")


class UndoGuestSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class UndoRestartSerializer(serializers.Serializer):
    guests = UndoGuestSerializer(many=True, help_text="running guests re-plugged after the restart")
    interruption = serializers.CharField(help_text="what they notice")


class UndoInterfaceSerializer(serializers.Serializer):
    guest = serializers.CharField()
    action = serializers.CharField(help_text="add, update or remove: the interface request the undo makes")
    mac = serializers.CharField()
    values = serializers.DictField(help_text="the request's values")
    summary = serializers.CharField()
    effect = serializers.CharField(help_text="what the running guest notices")
    before_xml = serializers.CharField(help_text="the interface now ('' when it is added back)")
    after_xml = serializers.CharField(help_text="the interface after the undo ('' when it is removed)")
    warnings = serializers.ListField(child=serializers.CharField())


class UndoPlanSerializer(serializers.Serializer):
    undoes = serializers.IntegerField(help_text="the audit event undone")
    network = serializers.IntegerField(allow_null=True, help_text="null: an undefined network, defined again")
    network_name = serializers.CharField()
    host_name = serializers.CharField()
    # Text in the schema: an enum would collide with another "method" enum's name.
    method = serializers.CharField(help_text="live: net-update (on the configs of scope); restart: define and "
                                   "restart, guests re-plugged; define: the persistent config only; create: "
                                   "an undefined network defined again; interface: a guest interface "
                                   "request (see interface)")  # fmt: skip
    scope = serializers.CharField(help_text="what the undo changes, as the event did: live (the running network "
                                  "only), config (the persistent config only) or both")  # fmt: skip
    actions = serializers.ListField(child=serializers.CharField(), help_text="the permissions it needs")
    live_updates = UndoEntrySerializer(many=True)
    restart = UndoRestartSerializer(allow_null=True)
    changed_since = serializers.BooleanField(help_text="the network changed after the event: only its entries go")
    diff = serializers.CharField(help_text="today's XML to the XML after the undo")
    diff_then_event = serializers.CharField(help_text="changed_since: the event's own change")
    diff_event_now = serializers.CharField(help_text="changed_since: what changed after it")
    notes = serializers.ListField(child=serializers.CharField())
    target_xml = serializers.CharField()
    interface = UndoInterfaceSerializer(required=False, help_text="method interface: the request and its preview")


class UndoAcceptedSerializer(s.OperationAcceptedSerializer):
    plan = UndoPlanSerializer(read_only=True)


def plan_json(plan: UndoPlan | GuestUndoPlan) -> dict:
    if isinstance(plan, GuestUndoPlan):
        return _guest_plan_json(plan)
    restart = plan.restart and {
        "guests": [{"id": guest.pk, "name": guest.name} for guest in plan.restart.guests],
        "interruption": plan.restart.interruption,
    }
    return {
        "undoes": plan.event.pk,
        "network": plan.network.pk,
        "network_name": plan.network.name,
        "host_name": plan.network.host.name,
        "method": plan.method,
        "scope": plan.scope,
        "actions": list(plan.actions),
        "live_updates": [
            {
                "section": u.section,
                "command": u.command,
                "fragment": u.fragment,
                "parent_index": u.parent_index,
                "old_fragment": u.old_fragment,
            }
            for u in plan.live_updates
        ],  # fmt: skip
        "restart": restart or None,
        "changed_since": plan.changed_since,
        "diff": plan.diff,
        "diff_then_event": plan.diff_then_event,
        "diff_event_now": plan.diff_event_now,
        "notes": list(plan.notes),
        "target_xml": plan.target_xml,
    }


def _guest_plan_json(plan: GuestUndoPlan) -> dict:
    preview = plan.interface
    return {
        "undoes": plan.event.pk, "network": None, "network_name": "", "host_name": plan.guest.host.name,
        "method": plan.method, "scope": plan.scope, "actions": list(plan.actions), "live_updates": [],
        "restart": None, "changed_since": False, "diff": plan.diff, "diff_then_event": "", "diff_event_now": "",
        "notes": list(plan.notes), "target_xml": preview.after_xml,
        "interface": {
            "guest": plan.guest.name, "action": plan.action, "mac": plan.mac, "values": plan.values,
            "summary": preview.summary, "effect": preview.effect, "before_xml": preview.before_xml,
            "after_xml": preview.after_xml, "warnings": list(preview.warnings),
        },
    }  # fmt: skip


def _message(data) -> str:
    """The body's message; any other JSON type, an unknown field or a wrong value is a 400."""
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["Send a JSON object (it may be empty, or hold a message)."]})
    unknown = sorted(set(data) - {"message"})
    if unknown:
        raise ValidationError({"non_field_errors": [f"Unknown field: {unknown[0][:50]!r}; only message is taken."]})
    message = data.get("message", "")
    if not isinstance(message, str):  # a number or a list is not quietly turned into text
        raise ValidationError({"message": ["Send the message as text."]})
    body = UndoBodySerializer(data={"message": message})
    body.is_valid(raise_exception=True)
    return body.validated_data["message"]


def _dry_run(request) -> bool:
    raw = request.query_params.get("dry_run", "0")
    if raw not in DRY_RUN_VALUES:
        raise ValidationError({"dry_run": ["Use dry_run=1 for the plan only, or leave it out."]})
    return DRY_RUN_VALUES[raw]


@extend_schema(parameters=[EVENT_PK])
class UndoView(APIView):
    schema = ErrorDocumentingAutoSchema()

    @extend_schema(
        operation_id="audit_undo",
        parameters=[DRY_RUN],
        request=UndoBodySerializer,
        responses={200: UndoPlanSerializer, 202: UndoAcceptedSerializer},
        description="Undo the change this event records, the least disruptive way (net-update entries, "
        "else a define and restart with the guests re-plugged). An event whose network changed since is "
        "undone entry by entry, or refused (400) saying which entry moved. The undo changes only what the event "
        "changed (scope: the running network, the persistent config, or both); an undefine is undone by "
        "defining the network again. Needs network.undo and the permission of the change itself.",
    )
    def post(self, request, pk):
        event = get_object_or_404(scoped(AuditEvent.objects, request.user), pk=pk)
        dry_run, message = _dry_run(request), _message(request.data)
        try:
            if dry_run:
                return Response(plan_json(undo_preview(event, request.user, AuditSource.API)))
            operation, plan = undo_request_planned(event, request.user, AuditSource.API, message)
        except OperationRejected as error:
            raise ValidationError({"non_field_errors": [str(error)]}) from None
        body = {"operation": s.OperationRefSerializer(operation).data, "plan": plan_json(plan)}
        return Response(body, status=status.HTTP_202_ACCEPTED)
