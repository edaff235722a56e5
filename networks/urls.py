from django.urls import path, re_path

from .views import (
    accounts,
    audit,
    dashboard,
    desired,
    guests,
    hosts,
    interfaces,
    ipam,
    netupdate,
    networks,
    operations,
    passthrough,
    users,
)
from .views import forwards as forward_views
from .views import hostdevs as hostdev_views
from .views import topology as topology_views
from .views import undo as undo_views

app_name = "networks"

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("hosts/", hosts.host_list, name="host_list"),
    path("hosts/add/", hosts.host_add, name="host_add"),
    path("hosts/<int:pk>/", hosts.host_detail, name="host_detail"),
    path("hosts/<int:pk>/sync/", hosts.host_sync, name="host_sync"),
    path("hosts/<int:pk>/delete/", hosts.host_delete, name="host_delete"),
    path("hosts/<int:pk>/passthrough/", passthrough.host_passthrough, name="host_passthrough"),
    path("hosts/<int:pk>/topology/", topology_views.host_topology, name="host_topology"),
    path("topology/", topology_views.fleet_topology, name="fleet_topology"),
    path("hosts/<int:host_pk>/networks/create/", networks.network_create, name="network_create"),
    path(
        "hosts/<int:host_pk>/networks/create-default/", networks.network_create_default, name="network_create_default"
    ),
    # desired state: export, plan, apply, copy a network to other hosts
    path("hosts/<int:pk>/networks/export.yaml", desired.host_networks_export, name="host_networks_export"),
    path("hosts/<int:pk>/networks/plan/", desired.host_network_plan, name="host_network_plan"),
    path("networks/<int:pk>/copy/", desired.network_copy, name="network_copy"),
    path("network-plans/apply/", desired.network_plan_apply, name="network_plan_apply"),
    path("networks/", networks.network_list, name="network_list"),
    path("networks/<int:pk>/", networks.network_detail, name="network_detail"),
    path("networks/<int:pk>/start/", networks.network_start, name="network_start"),
    path("networks/<int:pk>/stop/", networks.network_stop, name="network_stop"),
    path("networks/<int:pk>/autostart/", networks.network_autostart, name="network_autostart"),
    path("networks/<int:pk>/undefine/", networks.network_undefine, name="network_undefine"),
    path("networks/<int:pk>/restart/", networks.network_restart, name="network_restart"),
    path("networks/<int:pk>/xml/", networks.network_edit_xml, name="network_edit_xml"),
    path("networks/<int:pk>/rename/", networks.network_rename, name="network_rename"),
    path("networks/<int:pk>/edit/<slug:section>/", netupdate.network_edit, name="network_edit"),
    path("networks/<int:pk>/reservations/import/", netupdate.network_import, name="network_import"),
    path("networks/<int:pk>/reservations.csv", netupdate.network_reservations_csv, name="network_reservations_csv"),
    path("guests/", guests.guest_list, name="guest_list"),
    path("guests/<int:pk>/", guests.guest_detail, name="guest_detail"),
    path("guests/<int:pk>/interfaces/add/", interfaces.guest_interface_add, name="guest_interface_add"),
    path("guests/<int:pk>/interfaces/<str:mac>/edit/", interfaces.guest_interface_edit, name="guest_interface_edit"),
    path(
        "guests/<int:pk>/interfaces/<str:mac>/remove/", interfaces.guest_interface_remove, name="guest_interface_remove"
    ),
    path("guests/<int:pk>/hostdevs/add/", hostdev_views.guest_hostdev_add, name="guest_hostdev_add"),
    path("guests/<int:pk>/hostdevs/<str:pci>/remove/", hostdev_views.guest_hostdev_remove, name="guest_hostdev_remove"),
    path("port-forwards/", forward_views.port_forward_list, name="port_forward_list"),
    path("port-forwards/<int:pk>/", forward_views.port_forward_detail, name="port_forward_detail"),
    path("port-forwards/<int:pk>/edit/", forward_views.port_forward_edit, name="port_forward_edit"),
    path("port-forwards/<int:pk>/delete/", forward_views.port_forward_delete, name="port_forward_delete"),
    path("port-forwards/<int:pk>/reapply/", forward_views.port_forward_reapply, name="port_forward_reapply"),
    path("hosts/<int:host_pk>/port-forwards/add/", forward_views.port_forward_create, name="port_forward_create"),
    path(
        "hosts/<int:host_pk>/port-forwards/reapply/",
        forward_views.host_port_forwards_reapply,
        name="host_port_forwards_reapply",
    ),
    path("devices/", guests.device_list, name="device_list"),
    path("operations/", operations.operation_list, name="operation_list"),
    path("operations/<int:pk>/", operations.operation_detail, name="operation_detail"),
    path("operations/<int:pk>/progress/", operations.operation_progress, name="operation_progress"),
    path("operations/<int:pk>/cancel/", operations.operation_cancel_view, name="operation_cancel"),
    path("addresses/", ipam.ipam, name="ipam"),
    path("search/", ipam.global_search, name="search"),
    path("users/", users.user_list, name="user_list"),
    path("users/role/", users.user_role_set, name="user_role_set"),
    path("account/tokens/", accounts.token_list, name="token_list"),
    path("account/tokens/create/", accounts.token_create_view, name="token_create"),
    path("account/tokens/<int:pk>/rotate/", accounts.token_rotate_view, name="token_rotate"),
    path("account/tokens/<int:pk>/revoke/", accounts.token_revoke_view, name="token_revoke"),
    path("audit/", audit.audit_list, name="audit_list"),
    path("audit/<int:pk>/", audit.audit_detail, name="audit_detail"),
    path("audit/<int:pk>/undo/", undo_views.undo_confirm, name="audit_undo"),
    re_path(r"^audit/export\.(?P<export_format>csv|jsonl)$", audit.audit_export_view, name="audit_export"),
]
