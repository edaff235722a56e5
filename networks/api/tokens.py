"""API tokens over the API: a user's own, and (admins) everyone's."""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from networks.choices import AuditSource
from networks.models import ApiToken
from networks.services.permissions import authorize, can
from networks.services.tokens import token_create, token_revoke, token_rotate

from .pagination import BoundedLimitOffsetPagination
from .schema import ErrorDocumentingAutoSchema

API = AuditSource.API
USERNAME_MAX = 150


class ApiTokenSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "user", "name", "prefix", "created_at", "last_used_at"]
        read_only_fields = fields


class ApiTokenKeySerializer(ApiTokenSerializer):
    key = serializers.CharField(read_only=True, help_text="Shown in this answer only; kvmweb keeps a digest")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "key"]
        read_only_fields = fields


class ApiTokenCreateSerializer(serializers.Serializer):
    """For the schema only: the service checks the name itself (type included)."""

    name = serializers.CharField(max_length=100)


def _with_key(token: ApiToken, key: str) -> dict:
    return {**ApiTokenSerializer(token).data, "key": key}


USER_PARAMETER = OpenApiParameter("user", str, description="Another user's tokens (admins only)")


class ApiTokenViewSet(mixins.ListModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Your tokens; admins also reach every user's (to list with ?user= and revoke)."""

    serializer_class = ApiTokenSerializer
    pagination_class = BoundedLimitOffsetPagination
    schema = ErrorDocumentingAutoSchema()
    queryset = ApiToken.objects.select_related("user").order_by("user__username", "name")

    def get_queryset(self):
        tokens = super().get_queryset()
        if self.action == "list":
            return tokens.filter(user__username=self._listed_username())
        if self.action == "destroy" and can(self.request.user, "token.manage_others"):
            return tokens
        return tokens.filter(user=self.request.user)

    def _listed_username(self) -> str:
        own = self.request.user.get_username()
        username = self.request.query_params.get("user") or own
        if len(username) > USERNAME_MAX or not username.isprintable():
            raise ValidationError({"user": ["Not a username."]})
        if username != own:
            authorize(actor=self.request.user, action="token.manage_others", source=API, object_name=username)
        return username

    @extend_schema(parameters=[USER_PARAMETER])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=ApiTokenCreateSerializer, responses={201: ApiTokenKeySerializer})
    def create(self, request):
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ['Send an object: {"name": "…"}.']})
        try:
            token, key = token_create(user=request.user, name=request.data.get("name"), actor=request.user, source=API)
        except DjangoValidationError as error:
            raise ValidationError(error.message_dict) from None
        return Response(_with_key(token, key), status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        token_revoke(token=instance, actor=self.request.user, source=API)

    @extend_schema(request=None, responses={200: ApiTokenKeySerializer})
    @action(detail=True, methods=["post"])
    def rotate(self, request, pk=None):
        """A new key for one of your tokens; the old key stops working at once."""
        token, key = token_rotate(token=self.get_object(), actor=request.user, source=API)
        return Response(_with_key(token, key))
