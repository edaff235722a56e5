"""Every write endpoint, pages and API, against every role.

The table below is the rule as an admin reads it, written out by hand (not read from the
permissions module). `test_every_write_endpoint_has_a_rule` walks the URL patterns: an
endpoint that accepts a write and is missing from the table fails the suite, so a new
write path cannot ship without a decision about who may use it.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from lxml import etree

from networks.models import AuditEvent, Guest, Host, Network, Operation, PortForward
from networks.services.audit import audit_record
from tests.factories import HostFactory, UserFactory

ROLES = ("viewer", "operator", "admin")
RANK = {role: rank for rank, role in enumerate(ROLES)}

# Endpoints that any logged-in user may use on their own account, and what is not kvmweb's.
NOT_ROLE_BOUND = {"login", "logout", "password_change", "password_change_done", "password_reset",
                  "password_reset_done", "password_reset_confirm", "password_reset_complete",
                  # a user's own API tokens (another user's need token.manage_others: tests/*/test_tokens*.py)
                  "networks:token_list", "networks:token_create", "networks:token_rotate", "networks:token_revoke",
                  "api:token-list", "api:token-detail", "api:token-rotate"}  # fmt: skip
READ_ONLY_PAGES = {
    "networks:dashboard", "networks:host_list", "networks:host_detail", "networks:network_list",
    "networks:network_detail", "networks:network_reservations_csv", "networks:guest_list", "networks:guest_detail",
    "networks:device_list", "networks:operation_list", "networks:operation_detail", "networks:operation_progress",
    "networks:ipam", "networks:search", "networks:audit_list", "networks:audit_detail", "networks:audit_export",
    "networks:user_list",
    "networks:port_forward_list", "networks:port_forward_detail",
    "networks:host_passthrough",
    "networks:host_topology", "networks:fleet_topology",
    "networks:host_networks_export",
}  # fmt: skip
WRITE_METHODS = ("post", "put", "patch", "delete")


class World:
    """The objects the requests act on: the demo fleet, a second host, a queued operation."""

    def __init__(self, demo_host):
        self.host = demo_host
        self.other = HostFactory(name="other")
        self.network = Network.objects.get(host=demo_host, name="default")
        self.routed = Network.objects.get(host=demo_host, name="routed")
        self.queued = Operation.objects.create(
            kind="host.sync", host=demo_host, host_name=demo_host.name, lock_key=f"host:{demo_host.pk}"
        )

    def net(self, name, network=None, **kwargs):
        return reverse(name, kwargs={"pk": (network or self.network).pk, **kwargs})


def _section(collection, body, role="operator", network="network", key=None):
    def build(w):
        target = getattr(w, network)
        if key is None:
            return reverse("api:network-section", kwargs={"pk": target.pk, "collection": collection}), body
        url = reverse("api:network-section-entry", kwargs={"pk": target.pk, "collection": collection, "key": key})
        return url, body

    return role, build


def _page_section(section, body, role="operator", network="network"):
    return role, lambda w: (reverse("networks:network_edit", args=[getattr(w, network).pk, section]), body)


RESERVATION = {"mac": "52:54:00:99:00:01", "ip": "192.168.122.99", "name": "new99"}


def _nic(w, name, url_name, mac=None):
    """A guest interface URL of the demo fleet (build01 is stopped, web01 runs)."""
    guest = Guest.objects.get(host=w.host, name=name)
    return reverse(url_name, args=[guest.pk] if mac is None else [guest.pk, mac])


def _with_host_worker(w):
    """The demo host with a host worker queue: port forwards need one."""
    Host.objects.filter(pk=w.host.pk).update(queue="demo-host")
    return w.host


def _forward(w):
    web01 = Guest.objects.get(host=_with_host_worker(w), name="web01")
    return PortForward.objects.create(host=w.host, guest=web01, guest_name="web01", guest_mac="52:54:00:0a:00:11",
                                      host_port_start=8080, host_port_end=8080, guest_port_start=80,
                                      guest_port_end=80)  # fmt: skip


def _forward_form(w, **values):
    web01 = Guest.objects.get(host=w.host, name="web01")
    return {"guest": web01.pk, "protocol": "tcp", "host_ports": "9000", "guest_ports": "80", "enabled": "on", **values}


NEW_NETWORK = {"name": "new1", "mode": "isolated", "ipv4": "10.99.0.1/24"}


def _undoable(w):
    """The outcome event of web02's reservation added: its undo is one live delete (an operator's)."""
    before = etree.fromstring(w.network.inactive_xml.encode())
    web02 = before.find("ip/dhcp/host[@mac='52:54:00:0a:00:12']")
    web02.getparent().remove(web02)
    return audit_record(action="network.update.succeeded", source="web", object_type="network",
                        object_name=w.network.name, host=w.host, after_xml=w.network.inactive_xml,
                        before_xml=etree.tostring(before, encoding="unicode"))  # fmt: skip


_LAB = "<network><name>lab</name><ip address='10.99.0.1' prefix='24'/></network>"
_DOC = f'kvmweb: networks/v1\nnetworks:\n- name: lab\n  xml: "{_LAB}"\n'

# (url name, method) -> (the least role that may use it, request builder: world -> (url, body))
PAGES = {
    ("networks:host_add", "POST"): ("admin", lambda w: (reverse("networks:host_add"),
                                                        {"name": "kvm9", "uri": "qemu+ssh://root@kvm9/system"})),
    ("networks:host_sync", "POST"): ("operator", lambda w: (reverse("networks:host_sync", args=[w.host.pk]), {})),
    ("networks:host_delete", "POST"): ("admin", lambda w: (reverse("networks:host_delete", args=[w.host.pk]), {})),
    ("networks:network_create", "POST"): ("admin", lambda w: (reverse("networks:network_create", args=[w.host.pk]),
                                                              NEW_NETWORK)),
    ("networks:network_create_default", "POST"): (
        "admin", lambda w: (reverse("networks:network_create_default", args=[w.host.pk]), {})),
    ("networks:network_start", "POST"): ("operator", lambda w: (w.net("networks:network_start"), {})),
    ("networks:network_stop", "POST"): ("admin", lambda w: (w.net("networks:network_stop"), {"message": "x"})),
    ("networks:network_autostart", "POST"): ("admin", lambda w: (w.net("networks:network_autostart"), {})),
    ("networks:network_undefine", "POST"): ("admin", lambda w: (w.net("networks:network_undefine"), {})),
    ("networks:network_restart", "POST"): ("operator", lambda w: (w.net("networks:network_restart"), {})),
    ("networks:network_edit_xml", "POST"): ("admin", lambda w: (w.net("networks:network_edit_xml"),
                                                                {"xml": w.network.inactive_xml})),
    ("networks:network_rename", "POST"): ("admin", lambda w: (w.net("networks:network_rename"),
                                                              {"new_name": "renamed", "move_guests": "on"})),
    ("networks:network_import", "POST"): ("operator", lambda w: (w.net("networks:network_import"),
                                                                 {"csv_text": "52:54:00:99:00:01,192.168.122.99,x"})),
    ("networks:user_role_set", "POST"): ("admin", lambda w: (reverse("networks:user_role_set"),
                                                             {"username": "newbie", "role": "operator"})),
    ("networks:operation_cancel", "POST"): (
        "operator", lambda w: (reverse("networks:operation_cancel", args=[w.queued.pk]), {})),
    ("networks:port_forward_create", "POST"): ("operator", lambda w: (
        reverse("networks:port_forward_create", args=[_with_host_worker(w).pk]), _forward_form(w))),
    ("networks:port_forward_edit", "POST"): ("operator", lambda w: (
        reverse("networks:port_forward_edit", args=[_forward(w).pk]), _forward_form(w, comment="x"))),
    ("networks:port_forward_delete", "POST"): ("operator", lambda w: (
        reverse("networks:port_forward_delete", args=[_forward(w).pk]), {})),
    ("networks:port_forward_reapply", "POST"): ("operator", lambda w: (
        reverse("networks:port_forward_reapply", args=[_forward(w).pk]), {})),
    ("networks:host_port_forwards_reapply", "POST"): ("operator", lambda w: (
        reverse("networks:host_port_forwards_reapply", args=[_with_host_worker(w).pk]), {})),
    ("networks:guest_hostdev_add", "POST"): ("admin", lambda w: (
        _nic(w, "build01", "networks:guest_hostdev_add"), {"pci_address": "0000:01:10.2", "kind": "interface"})),
    ("networks:guest_hostdev_remove", "POST"): ("admin", lambda w: (
        _nic(w, "gpu01", "networks:guest_hostdev_remove", "0000:41:00.0"), {"scope": "both"})),
    ("networks:guest_interface_add", "POST"): ("operator", lambda w: (
        _nic(w, "build01", "networks:guest_interface_add"), {"source": "default", "scope": "config"})),
    ("networks:guest_interface_edit", "POST"): ("operator", lambda w: (
        _nic(w, "web01", "networks:guest_interface_edit", "52:54:00:0a:00:11"), {"link": "down"})),
    ("networks:guest_interface_remove", "POST"): ("operator", lambda w: (
        _nic(w, "web01", "networks:guest_interface_remove", "52:54:00:0a:00:11"), {"scope": "both"})),
    ("networks:audit_undo", "POST"): ("operator", lambda w: (
        reverse("networks:audit_undo", args=[_undoable(w).pk]), {"message": "x"})),
    # planning changes nothing (any role); applying needs network.apply (admin)
    ("networks:host_network_plan", "POST"): ("viewer", lambda w: (
        reverse("networks:host_network_plan", args=[w.host.pk]), {"document": _DOC, "hosts": ["demo"]})),
    ("networks:network_copy", "POST"): ("viewer", lambda w: (
        w.net("networks:network_copy", w.routed), {"hosts": ["other"]})),
    ("networks:network_plan_apply", "POST"): ("admin", lambda w: (
        reverse("networks:network_plan_apply"), {"document": _DOC, "hosts": ["demo"]})),
}  # fmt: skip
# The section editor is one URL pattern; each section has its own rule.
SECTION_PAGES = {
    "ip-dhcp-host": _page_section("ip-dhcp-host", RESERVATION),
    "ip-dhcp-range": _page_section("ip-dhcp-range", {"start": "10.20.0.10", "end": "10.20.0.20"}, network="routed"),
    "dns-host": _page_section("dns-host", {"ip": "192.168.122.6", "hostnames": "new6"}),
    "dns-txt": _page_section("dns-txt", {"name": "new", "value": "text"}),
    "dns-srv": _page_section("dns-srv", {"service": "ldap", "protocol": "tcp"}),
    "portgroup": _page_section("portgroup", {"name": "new"}),
    "forward-interface": _page_section("forward-interface", {"dev": "eth9"}, role="admin", network="routed"),
}
API = {
    ("api:host-list", "POST"): ("admin", lambda w: (reverse("api:host-list"),
                                                    {"name": "kvm9", "uri": "qemu+ssh://root@kvm9/system"})),
    ("api:host-detail", "DELETE"): ("admin", lambda w: (reverse("api:host-detail", args=[w.host.pk]), None)),
    ("api:host-sync", "POST"): ("operator", lambda w: (reverse("api:host-sync", args=[w.host.pk]), {})),
    ("api:network-list", "POST"): ("admin", lambda w: (reverse("api:network-list"),
                                                       {**NEW_NETWORK, "host": w.host.pk})),
    ("api:network-start", "POST"): ("operator", lambda w: (w.net("api:network-start"), {})),
    ("api:network-stop", "POST"): ("admin", lambda w: (w.net("api:network-stop"), {})),
    ("api:network-restart", "POST"): ("operator", lambda w: (w.net("api:network-restart"), {})),
    ("api:network-undefine", "POST"): ("admin", lambda w: (w.net("api:network-undefine"), {})),
    ("api:network-autostart", "POST"): ("admin", lambda w: (w.net("api:network-autostart"), {"enabled": True})),
    ("api:network-rename", "POST"): ("admin", lambda w: (w.net("api:network-rename"),
                                                         {"name": "renamed", "move_guests": True})),
    ("api:network-xml", "PUT"): ("admin", lambda w: (w.net("api:network-xml"), {
        "xml": w.network.inactive_xml.replace("</dhcp>", "<host mac='52:54:00:99:00:02' ip='192.168.122.98'/></dhcp>"),
        "apply": "define"})),
    ("api:network-bulk-import", "POST"): ("operator", lambda w: (w.net("api:network-bulk-import"),
                                                                 {"csv": "52:54:00:99:00:01,192.168.122.99,x"})),
    ("api:port-forward-list", "POST"): ("operator", lambda w: (reverse("api:port-forward-list"), {
        "host": _with_host_worker(w).pk, "guest": Guest.objects.get(host=w.host, name="web01").pk,
        "host_port": 9000, "guest_port": 80})),
    ("api:port-forward-detail", "PATCH"): ("operator", lambda w: (
        reverse("api:port-forward-detail", args=[_forward(w).pk]), {"comment": "x"})),
    ("api:port-forward-detail", "DELETE"): ("operator", lambda w: (
        reverse("api:port-forward-detail", args=[_forward(w).pk]), None)),
    ("api:port-forward-reapply", "POST"): ("operator", lambda w: (
        reverse("api:port-forward-reapply", args=[_forward(w).pk]), {})),
    ("api:port-forward-reapply-host", "POST"): ("operator", lambda w: (
        reverse("api:port-forward-reapply-host"), {"host": _with_host_worker(w).pk})),
    ("api:guest-interfaces", "POST"): ("operator", lambda w: (
        _nic(w, "build01", "api:guest-interfaces"), {"source": "default", "scope": "config"})),
    ("api:guest-interface", "PATCH"): ("operator", lambda w: (
        _nic(w, "web01", "api:guest-interface", "52:54:00:0a:00:11"), {"link": "down"})),
    ("api:guest-interface", "DELETE"): ("operator", lambda w: (
        _nic(w, "web01", "api:guest-interface", "52:54:00:0a:00:11"), None)),
    ("api:guest-hostdevs", "POST"): ("admin", lambda w: (
        _nic(w, "build01", "api:guest-hostdevs"), {"pci_address": "0000:01:10.2", "kind": "interface"})),
    ("api:guest-hostdev", "DELETE"): ("admin", lambda w: (
        _nic(w, "gpu01", "api:guest-hostdev", "0000:41:00.0"), None)),
    ("api:audit-undo", "POST"): ("operator", lambda w: (
        reverse("api:audit-undo", args=[_undoable(w).pk]), {"message": "x"})),
    ("api:network-plan", "POST"): ("viewer", lambda w: (
        reverse("api:network-plan"), {"document": _DOC, "hosts": ["demo"]})),
    ("api:network-plan-apply", "POST"): ("admin", lambda w: (
        reverse("api:network-plan-apply"), {"document": _DOC, "hosts": ["demo"]})),
}  # fmt: skip
# The section endpoints are two URL patterns covering every collection; each has its own rule.
SECTION_API = {
    ("dhcp-hosts", "POST"): _section("dhcp-hosts", RESERVATION),
    ("dhcp-hosts", "PATCH"): _section("dhcp-hosts", {"ip": "192.168.122.97"}, key="52:54:00:0a:00:12"),
    ("dhcp-hosts", "DELETE"): _section("dhcp-hosts", None, key="52:54:00:0a:00:12"),
    ("dhcp-ranges", "POST"): _section("dhcp-ranges", {"start": "10.20.0.10", "end": "10.20.0.20"}, network="routed"),
    ("dhcp-ranges", "DELETE"): _section("dhcp-ranges", None, key="192.168.122.2"),
    ("dns-hosts", "POST"): _section("dns-hosts", {"ip": "192.168.122.6", "hostnames": "new6"}),
    ("dns-hosts", "DELETE"): _section("dns-hosts", None, key="192.168.122.5"),
    ("dns-txt", "POST"): _section("dns-txt", {"name": "new", "value": "text"}),
    ("dns-txt", "DELETE"): _section("dns-txt", None, key="fleet"),
    ("dns-srv", "POST"): _section("dns-srv", {"service": "ldap", "protocol": "tcp"}),
    ("dns-srv", "DELETE"): _section("dns-srv", None, key="http"),
    ("portgroups", "POST"): _section("portgroups", {"name": "new"}),
    ("portgroups", "PATCH"): _section("portgroups", {"name": "dev", "inbound_average": 1000}, key="dev"),
    ("portgroups", "DELETE"): _section("portgroups", None, key="dev"),
    ("forward-interfaces", "POST"): _section("forward-interfaces", {"dev": "eth9"}, "admin", "routed"),
    ("forward-interfaces", "DELETE"): _section("forward-interfaces", None, "admin", "routed", key="eth0"),
}


def _patterns(resolver: URLResolver, namespace: str = ""):
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _patterns(entry, inner)
        elif isinstance(entry, URLPattern) and entry.name:
            yield f"{namespace}{entry.name}", entry.callback


def _write_methods(callback) -> set[str]:
    """The write methods a view accepts: DRF views say so; a plain Django view may take POST."""
    if hasattr(callback, "actions"):  # a DRF viewset route
        return {method.upper() for method in callback.actions if method in WRITE_METHODS}
    if hasattr(callback, "cls"):  # a DRF APIView
        return {method.upper() for method in WRITE_METHODS if hasattr(callback.cls, method)}
    return {"POST"}


def test_every_write_endpoint_has_a_rule():
    found = set()
    for name, callback in _patterns(get_resolver()):
        if name.startswith("admin:") or name in NOT_ROLE_BOUND or name in READ_ONLY_PAGES:
            continue
        found |= {(name, method) for method in _write_methods(callback)}
    ruled = set(PAGES) | set(API) | {("networks:network_edit", "POST")}
    ruled |= {("api:network-section", "POST")} | {("api:network-section-entry", m) for m in ("PATCH", "DELETE")}
    assert found - ruled == set(), "write endpoints without a role rule in this table"
    assert ruled - found == set(), "rules for endpoints that no longer exist"


def test_every_section_collection_has_a_rule():
    from networks.api.netupdate import COLLECTIONS
    from networks.forms import SECTION_FIELDS

    assert set(SECTION_PAGES) == set(SECTION_FIELDS)
    assert {collection for collection, _method in SECTION_API} == set(COLLECTIONS)


def _cases():
    for key, (role, build) in PAGES.items():
        yield f"{key[0]} {key[1]}", key[1], role, build, "form"
    for section, (role, build) in SECTION_PAGES.items():
        yield f"networks:network_edit[{section}] POST", "POST", role, build, "form"
    for key, (role, build) in API.items():
        yield f"{key[0]} {key[1]}", key[1], role, build, "json"
    for (collection, method), (role, build) in SECTION_API.items():
        yield f"api:{collection} {method}", method, role, build, "json"


CASES = list(_cases())


def _send(client, method: str, url: str, body, encoding: str):
    if encoding == "form":
        return client.post(url, body)
    if body is None:
        return getattr(client, method.lower())(url)
    return getattr(client, method.lower())(url, json.dumps(body), content_type="application/json")


def _state():
    users = get_user_model().objects
    return Operation.objects.count(), Host.objects.count(), Network.objects.count(), users.count()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("label", "method", "least", "build", "encoding"), CASES, ids=[c[0] for c in CASES])
def test_each_role_gets_the_expected_answer(client, demo_host, role, label, method, least, build, encoding):
    world = World(demo_host)
    user = UserFactory(username=f"{role}-user", role=role)
    client.force_login(user)
    url, body = build(world)
    before = _state()
    response = _send(client, method, url, body, encoding)
    if RANK[role] >= RANK[least]:
        assert response.status_code not in (403, 404, 500), (label, response.status_code, response.content[:300])
        return
    assert response.status_code == 403, (label, response.status_code, response.content[:300])
    assert _state() == before, "a refused request changed something"
    denied = AuditEvent.objects.filter(action__endswith=".denied", actor_name=user.username)
    assert denied.count() == 1, f"the refusal of {label} was not audited once"
    if encoding == "json":
        assert least in response.json()["detail"], "the API says which role is needed"


@pytest.mark.parametrize(("label", "method", "least", "build", "encoding"), CASES, ids=[c[0] for c in CASES])
def test_an_operator_of_another_host_cannot_reach_this_one(client, demo_host, label, method, least, build, encoding):
    world = World(demo_host)
    user = UserFactory(username="scoped", role="viewer")
    from networks.services.permissions import role_set

    role_set(user=user, role="admin", host_names=["other"], actor=None, source="system")
    client.force_login(user)
    url, body = build(world)
    before = _state()
    response = _send(client, method, url, body, encoding)
    # 404 for an object of a hidden host; 400 where a body names it ("does not exist"); 403 for the fleet
    assert response.status_code in (400, 403, 404), (label, response.status_code)
    assert _state() == before


def test_a_scoped_user_sees_only_its_hosts(client, demo_host):
    HostFactory(name="other")
    user = UserFactory(username="scoped", role="viewer")
    from networks.services.permissions import role_set

    role_set(user=user, role="operator", host_names=["other"], actor=None, source="system")
    client.force_login(user)
    assert "demo" not in [h["name"] for h in client.get(reverse("api:host-list")).json()["results"]]
    assert client.get(reverse("api:network-list")).json()["results"] == []
    assert client.get(reverse("api:guest-list")).json()["results"] == []
    network = Network.objects.get(host=demo_host, name="default")
    assert client.get(network.get_absolute_url()).status_code == 404
    assert client.get(reverse("api:network-detail", args=[network.pk])).status_code == 404
    page = client.get(reverse("networks:network_list")).content.decode()
    assert "virbr0" not in page
    assert ">demo<" not in page, "the host filter lists only the user's hosts"
    assert ">demo<" not in client.get(reverse("networks:operation_list")).content.decode()
    assert "192.168.122.11" not in client.get(reverse("networks:ipam"), {"q": "web01"}).content.decode()


def test_a_viewer_sees_no_change_buttons(client, demo_host):
    client.force_login(UserFactory(username="watcher", role="viewer"))
    network = Network.objects.get(host=demo_host, name="default")
    page = client.get(network.get_absolute_url()).content.decode()
    for action in ("Restart…", "Stop…", "Edit XML…", "Rename…", "Undefine…", "Add reservation", "Import CSV…"):
        assert action not in page
    assert "52:54:00:0a:00:11" in page, "the viewer still reads everything"
    assert "Sync now" not in client.get(demo_host.get_absolute_url()).content.decode()
    assert "Add host" not in client.get(reverse("networks:host_list")).content.decode()


def test_an_operator_sees_operator_buttons_only(client, demo_host):
    client.force_login(UserFactory(username="op", role="operator"))
    network = Network.objects.get(host=demo_host, name="default")
    page = client.get(network.get_absolute_url()).content.decode()
    assert "Restart…" in page and "Add reservation" in page
    assert "Stop…" not in page and "Edit XML…" not in page and "Undefine…" not in page


def test_setrole_creates_the_user_and_scopes_it(demo_host, capsys):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from networks.services.permissions import can

    call_command("setrole", "carol", "operator", "--hosts", "demo")
    out = capsys.readouterr().out
    carol = get_user_model().objects.get(username="carol")
    assert "operator" in out and not carol.has_usable_password()
    assert can(carol, "network.restart", demo_host) and not can(carol, "network.stop", demo_host)
    assert not can(carol, "network.restart", HostFactory(name="elsewhere"))
    with pytest.raises(CommandError):
        call_command("setrole", "dave", "operator", "--hosts", "nosuchhost")
    assert not get_user_model().objects.filter(username="dave").exists()
    assert AuditEvent.objects.filter(action="user.role_set", object_name="carol").exists()


def test_an_admin_gives_a_new_user_a_scoped_role_from_the_users_page(client, demo_host):
    client.force_login(UserFactory(username="boss", role="admin"))
    assert "Users" in client.get(reverse("networks:dashboard")).content.decode()
    response = client.post(
        reverse("networks:user_role_set"), {"username": "erin", "role": "operator", "hosts": [demo_host.pk]}
    )
    assert response.status_code == 302
    page = client.get(reverse("networks:user_list")).content.decode()
    assert "erin" in page and "operator" in page
    erin = get_user_model().objects.get(username="erin")
    role = erin.kvmweb_role
    assert (role.role, role.all_hosts, list(role.hosts.all())) == ("operator", False, [demo_host])
    event = AuditEvent.objects.get(action="user.role_set", object_name="erin")
    assert event.actor_name == "boss" and "demo" in event.detail


def test_a_role_set_in_the_django_admin_is_audited(client, demo_host):
    root = get_user_model().objects.create_superuser("root", password="x")
    target = UserFactory(username="frank", role="viewer")
    client.force_login(root)
    row = target.kvmweb_role
    url = reverse("admin:networks_userrole_change", args=[row.pk])
    response = client.post(url, {"user": target.pk, "role": "operator", "hosts": [demo_host.pk]})
    assert response.status_code == 302, response.content[:500]
    row.refresh_from_db()
    assert (row.role, row.all_hosts, list(row.hosts.all())) == ("operator", False, [demo_host])
    assert AuditEvent.objects.get(action="user.role_set", object_name="frank").actor_name == "root"


def test_a_preview_warns_of_the_same_mac_only_on_hosts_the_user_may_see(client, demo_host, default_uri):
    from networks.services import hosts as host_services
    from tests.conftest import run_to_end

    other = host_services.host_create(name="other", uri=default_uri, actor=None, source="system")
    run_to_end(other.operations.get().pk)
    elsewhere = Network.objects.get(host=other, name="default")
    elsewhere.dhcp_reservations.create(ip=elsewhere.ips.get(), address="192.168.122.77", mac="52:54:00:77:77:77")
    url = reverse(
        "networks:network_edit", args=[Network.objects.get(host=demo_host, name="isolated").pk, "ip-dhcp-host"]
    )
    body = {"mac": "52:54:00:77:77:77", "ip": "10.10.0.77", "name": "dup"}

    client.force_login(UserFactory(username="everywhere", role="operator"))
    assert "default@other" in client.post(url, body).content.decode()
    from networks.services.permissions import role_set

    scoped_user = UserFactory(username="demo-only", role="viewer")
    role_set(user=scoped_user, role="operator", host_names=["demo"], actor=None, source="system")
    client.force_login(scoped_user)
    page = client.post(url, body).content.decode()
    assert "Reserve 52:54:00:77:77:77" in page and "other" not in page


def test_a_scoped_user_cannot_tell_a_hidden_host_from_a_missing_one(client, demo_host):
    from networks.services.permissions import role_set

    HostFactory(name="other")
    user = UserFactory(username="scoped", role="viewer")
    role_set(user=user, role="admin", host_names=["other"], actor=None, source="system")
    client.force_login(user)
    for hidden, missing in ((demo_host.pk, 99999),):
        for url in ("/api/networks/?host={}", "/api/guests/?host={}", "/api/operations/?host={}"):
            assert client.get(url.format(hidden)).status_code == client.get(url.format(missing)).status_code == 400
        create = {"host": hidden, "name": "x1", "mode": "isolated", "ipv4": "10.98.0.1/24"}
        answers = [client.post("/api/networks/", {**create, "host": pk}, content_type="application/json")
                   for pk in (hidden, missing)]  # fmt: skip
        assert [a.status_code for a in answers] == [400, 400]
        texts = [json.dumps(a.json()).replace(str(pk), "ID") for a, pk in zip(answers, (hidden, missing), strict=True)]
        assert texts[0] == texts[1], "the answer for a hidden host is the answer for a missing one"


def test_the_django_admin_is_for_superusers_only(client, db):
    staff = UserFactory(username="staffer", role="admin")
    get_user_model().objects.filter(pk=staff.pk).update(is_staff=True)
    client.force_login(get_user_model().objects.get(pk=staff.pk))
    assert client.get("/admin/networks/auditevent/").status_code == 302  # to the admin's login page
    client.force_login(get_user_model().objects.create_superuser("root", password="x"))
    assert client.get("/admin/networks/auditevent/").status_code == 200
