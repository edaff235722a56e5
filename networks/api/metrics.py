"""`GET /metrics`: Prometheus exposition of the mirror, for an API token (or a logged-in session)."""

from drf_spectacular.utils import extend_schema
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from networks.metrics import metrics_text
from networks.services.permissions import visible_host_ids

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PrometheusTextRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, bytes):
            return data
        # an error (401, 403) rendered as text: Prometheus shows it as the scrape error
        return str(data.get("detail", data) if isinstance(data, dict) else data).encode()


class MetricsView(APIView):
    renderer_classes = [PrometheusTextRenderer]

    @extend_schema(exclude=True)
    def get(self, request):
        body = metrics_text(visible_host_ids(request.user))
        return Response(body, content_type=CONTENT_TYPE)
