"""The OpenAPI schema: every operation also documents the errors the API answers."""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse

from . import serializers as s

ERROR_RESPONSES = {
    "400": OpenApiResponse(s.FIELD_ERRORS_SCHEMA, description="Invalid input; nothing was changed"),
    "401": OpenApiResponse(s.ErrorDetailSerializer, description="Not authenticated"),
    "403": OpenApiResponse(s.ErrorDetailSerializer, description="The user's role does not allow this"),
    "404": OpenApiResponse(s.ErrorDetailSerializer, description="No such object in the user's hosts"),
    "415": OpenApiResponse(s.ErrorDetailSerializer, description="A body that is not JSON, a form or multipart"),
}


class ErrorDocumentingAutoSchema(AutoSchema):
    """drf-spectacular's schema, plus the error bodies (400, 401, 403, 404, 415) every endpoint can answer."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction == "response":
            for code, response in ERROR_RESPONSES.items():
                responses.setdefault(code, self._get_response_for_code(response, code, direction=direction))
        return responses
