from django.urls import path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter()
router.register("hosts", views.HostViewSet, basename="host")
router.register("networks", views.NetworkViewSet, basename="network")
router.register("guests", views.GuestViewSet, basename="guest")
router.register("devices", views.NodeDeviceViewSet, basename="device")
router.register("operations", views.OperationViewSet, basename="operation")
router.register("audit", views.AuditEventViewSet, basename="audit")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    *router.urls,
]
