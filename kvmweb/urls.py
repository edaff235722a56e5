from django.contrib import admin
from django.urls import include, path

from networks.api.metrics import MetricsView

urlpatterns = [
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("api/", include(("networks.api.urls", "api"))),
    path("metrics", MetricsView.as_view(), name="metrics"),
    path("", include("networks.urls")),
]
