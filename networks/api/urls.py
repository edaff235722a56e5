from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from . import desired, forwards, hostdevs, interfaces, netupdate, pci, tokens, views
from . import undo as undo_api

router = DefaultRouter()
router.register("hosts", views.HostViewSet, basename="host")
router.register("networks", views.NetworkViewSet, basename="network")
router.register("guests", views.GuestViewSet, basename="guest")
router.register("devices", views.NodeDeviceViewSet, basename="device")
router.register("operations", views.OperationViewSet, basename="operation")
router.register("audit", views.AuditEventViewSet, basename="audit")
router.register("tokens", tokens.ApiTokenViewSet, basename="token")
router.register("port-forwards", forwards.PortForwardViewSet, basename="port-forward")

collections = "|".join(netupdate.COLLECTIONS)

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("ipam/", netupdate.IpamView.as_view(), name="ipam"),
    # Before the router: its format-suffix routes would read export.csv as audit event "export".
    re_path(r"^audit/export\.(?P<export_format>csv|jsonl)$", views.AuditExportView.as_view(), name="audit-export"),
    path("networks/<int:pk>/dhcp-hosts/import/", netupdate.BulkImportView.as_view(), name="network-bulk-import"),
    re_path(
        rf"^networks/(?P<pk>[0-9]+)/(?P<collection>{collections})/$",
        netupdate.SectionView.as_view(),
        name="network-section",
    ),
    re_path(
        rf"^networks/(?P<pk>[0-9]+)/(?P<collection>{collections})/(?P<key>[^/]+)/$",
        netupdate.EntryView.as_view(),
        name="network-section-entry",
    ),
    path("hosts/<int:pk>/pci-devices/", pci.HostPciDevicesView.as_view(), name="host-pci-devices"),
    path("guests/<int:pk>/interfaces/", interfaces.GuestInterfacesView.as_view(), name="guest-interfaces"),
    path("guests/<int:pk>/interfaces/<str:mac>/", interfaces.GuestInterfaceView.as_view(), name="guest-interface"),
    path("guests/<int:pk>/hostdevs/", hostdevs.GuestHostdevsView.as_view(), name="guest-hostdevs"),
    path("guests/<int:pk>/hostdevs/<str:pci>/", hostdevs.GuestHostdevView.as_view(), name="guest-hostdev"),
    # desired state (export, plan, apply)
    path("hosts/<int:pk>/networks/export/", desired.NetworkExportView.as_view(), name="host-networks-export"),
    path("network-plans/", desired.NetworkPlanView.as_view(), name="network-plan"),
    path("network-plans/apply/", desired.NetworkPlanApplyView.as_view(), name="network-plan-apply"),
    # undo from the audit log (before the router, which would read it as an event action)
    path("audit/<int:pk>/undo/", undo_api.UndoView.as_view(), name="audit-undo"),
    *router.urls,
]
