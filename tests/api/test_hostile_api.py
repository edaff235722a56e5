"""Hostile input through the API: each gets a short, clear 400 and changes nothing."""

import json

import pytest

from networks.models import AuditEvent, Network, Operation

SECTION_WRITES = [
    ("post", "dhcp-hosts/"),
    ("patch", "dhcp-hosts/52:54:00:0a:00:11/"),
    ("delete", "dhcp-hosts/52:54:00:0a:00:11/"),
    ("post", "dns-txt/"),
    ("post", "dns-srv/"),
    ("post", "portgroups/"),
    ("patch", "portgroups/engineering/"),
    ("delete", "forward-interfaces/eth0/"),
]


@pytest.fixture
def default(demo_host):
    return Network.objects.get(host=demo_host, name="default")


@pytest.fixture
def nothing_changes(default):
    """After the test: no operation was requested, no audit event says one was, the mirror is as it was."""
    xml_before = default.live_xml
    yield
    assert not Operation.objects.exclude(kind="host.sync").exists()
    assert not AuditEvent.objects.filter(action__endswith=".requested").exclude(action="host.sync.requested").exists()
    default.refresh_from_db()
    assert default.live_xml == xml_before


def _send(api, method, url, body: bytes):
    return api.generic(method.upper(), url, body, content_type="application/json")


@pytest.mark.parametrize("body", [b"[]", b'"dhcp"', b"5", b"null", b'[{"mac": "52:54:00:00:00:09"}]'])
@pytest.mark.parametrize(("method", "path"), SECTION_WRITES)
def test_a_body_that_is_not_an_object_is_a_400(api, default, nothing_changes, method, path, body):
    response = _send(api, method, f"/api/networks/{default.pk}/{path}", body)
    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["Send a JSON object of the entry's fields."]}


@pytest.mark.parametrize(
    "path",
    ["start/", "stop/", "restart/", "undefine/", "autostart/", "rename/", "xml/", "dhcp-hosts/import/", ""],
)
@pytest.mark.parametrize("body", [b"[]", b'"x"', b"5", b"null"])
def test_every_other_write_refuses_a_body_that_is_not_an_object(api, default, nothing_changes, path, body):
    method = "put" if path == "xml/" else "post"
    url = f"/api/networks/{default.pk}/{path}" if path else "/api/networks/"
    assert _send(api, method, url, body).status_code == 400


@pytest.mark.parametrize(
    ("collection", "body", "field"),
    [
        ("dns-txt", {"name": "fleet2", "value": "a\x00b"}, "value"),
        ("dns-txt", {"name": "fleet2", "value": "a\ndhcp-script=/bin/sh"}, "value"),  # libvirt takes it as is
        ("dns-txt", {"name": "fleet2", "value": "a\x1fb"}, "value"),
        ("dns-txt", {"name": "fleet2", "value": "a\u2028b"}, "value"),
        ("dns-txt", {"name": "fleet2", "value": "a\ufffeb"}, "value"),  # not an XML character
        ("dns-txt", {"name": "fleet2\x00", "value": "x"}, "name"),
        ("dns-txt", {"name": "fleet2", "value": ["x"]}, "value"),
        ("dns-txt", {"name": {"a": 1}, "value": "x"}, "name"),
        ("dns-hosts", {"ip": "192.168.122.80", "hostnames": "nas\x07"}, "hostnames"),
        ("dns-srv", {"service": "ldap\x00", "protocol": "tcp"}, "service"),
        ("dns-srv", {"service": "ldap", "protocol": "tcp", "target": "ldap\r", "port": "389"}, "target"),
        ("dns-srv", {"service": "ldap", "protocol": "tcp", "domain": "demo.lan\x0b"}, "domain"),
        ("portgroups", {"name": "ops\x00"}, "name"),
        ("portgroups", {"name": "ops", "is_default": "maybe"}, "is_default"),
        ("dhcp-hosts", {"mac": "52:54:00:00:00:09", "ip": "192.168.122.9", "name": "db\x00"}, "name"),
    ],
)
def test_control_characters_and_wrong_types_are_refused(api, default, nothing_changes, collection, body, field):
    response = api.post(f"/api/networks/{default.pk}/{collection}/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_a_lone_surrogate_in_json_is_refused(api, default, nothing_changes):
    body = b'{"name": "fleet2", "value": "a\\ud800b"}'
    response = _send(api, "post", f"/api/networks/{default.pk}/dns-txt/", body)
    assert response.status_code == 400 and "value" in response.json()


@pytest.mark.parametrize(
    "mac",
    ["0", "+1", "1", "52:54:00:aa:bb", "52:54:00:aa:bb:cc:dd", "52:54:00-aa:bb:cc", "5254.00aa.bbc", "525400aabbcc",
     "52:54:00:aa:bb:c", " 52:54:00:aa:bb:cc:", "00:00:00:00:00:00", "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff",
     "52:54:00:aa:bb:cc\n", "５２:54:00:aa:bb:cc"],
)  # fmt: skip
def test_only_a_six_octet_unicast_mac_is_taken(api, default, nothing_changes, mac):
    body = {"mac": mac, "ip": "192.168.122.90"}
    response = api.post(f"/api/networks/{default.pk}/dhcp-hosts/", body, format="json")
    assert response.status_code == 400 and "mac" in response.json()


@pytest.mark.parametrize("mac", ["52:54:00:AA:00:90", "52-54-00-aa-00-90", "5254.00aa.0090"])
def test_the_mac_forms_taken_all_mean_the_same_mac(api, default, mac):
    response = api.post(f"/api/networks/{default.pk}/dhcp-hosts/", {"mac": mac, "ip": "192.168.122.90"}, format="json")
    assert response.status_code == 202
    assert Operation.objects.get(pk=response.json()["operation"]["id"]).params["values"]["mac"] == mac
    assert "52:54:00:aa:00:90" in Operation.objects.get(pk=response.json()["operation"]["id"]).params["summary"]


@pytest.mark.parametrize(
    "ip", ["fd00::1%eth0", "192.168.122.5%1", "010.0.0.1", "192.168.122.050", "192.168.122. 5", "192.168.122.5/32",
           "١٩٢.١٦٨.١٢٢.٥", "0x7f.0.0.1", "3232266757"],
)  # fmt: skip
def test_addresses_that_would_be_read_as_something_else_are_refused(api, default, nothing_changes, ip):
    response = api.post(f"/api/networks/{default.pk}/dns-hosts/", {"ip": ip, "hostnames": "nas"}, format="json")
    assert response.status_code == 400 and "ip" in response.json()


@pytest.mark.parametrize("port", ["١٢", "+5", "5_000", "0x50", "5.0", 5.5, True, "4e2", "-1", "٣٨٩", "99999999999"])
def test_a_port_is_ascii_digits_only(api, default, nothing_changes, port):
    body = {"service": "ldap", "protocol": "tcp", "target": "ldap.demo.lan", "port": port}
    response = api.post(f"/api/networks/{default.pk}/dns-srv/", body, format="json")
    assert response.status_code == 400 and "port" in response.json()


def test_a_port_as_a_json_number_or_digits_is_taken(api, default):
    for port, target in ((389, "ldap1"), ("636", "ldap2")):
        body = {"service": "ldap", "protocol": "tcp", "target": target, "port": port}
        assert api.post(f"/api/networks/{default.pk}/dns-srv/", body, format="json").status_code == 202


def test_a_huge_value_comes_back_as_a_short_prefix(api, default, nothing_changes):
    base = f"/api/networks/{default.pk}/dhcp-hosts/"
    for body in ({"mac": "x" * 1000, "ip": "192.168.122.9"}, {"mac": "52:54:00:00:00:09", "ip": "9" * 900}):
        response = api.post(base, body, format="json")
        assert response.status_code == 400 and len(response.content) < 200, response.content
    response = api.post(base, {"mac": "x" * 1_000_000, "ip": "192.168.122.9"}, format="json")
    assert response.status_code == 400 and len(response.content) < 200
    key = "k" * 100_000
    response = api.delete(f"{base}{key}/")
    assert response.status_code == 400 and len(response.content) < 300


def test_unknown_and_too_many_fields_are_refused(api, default, nothing_changes):
    base = f"/api/networks/{default.pk}/dhcp-hosts/"
    body = {"mac": "52:54:00:00:00:09", "ip": "192.168.122.9", "x" * 10_000: "y"}
    response = api.post(base, body, format="json")
    assert response.status_code == 400 and len(response.content) < 300
    assert "Unknown field" in response.json()["non_field_errors"][0]
    response = api.post(base, {f"f{i}": "v" for i in range(10_000)}, format="json")
    assert response.status_code == 400 and len(response.content) < 300


def test_a_write_field_has_a_length_limit(api, default, demo_host, nothing_changes):
    for url, body in [
        ("/api/networks/", {"host": demo_host.pk, "name": "n", "domain_name": "d" * 10_000}),
        ("/api/networks/", {"host": demo_host.pk, "name": "n", "interfaces": "e " * 10_000}),
        ("/api/networks/", {"host": demo_host.pk, "name": "n", "ipv4_dhcp_start": "1" * 10_000}),
        (f"/api/networks/{default.pk}/stop/", {"message": "m" * 10_000}),
        (f"/api/networks/{default.pk}/dhcp-hosts/import/", {"csv": "a" * 2_100_000, "dry_run": True}),
    ]:
        response = api.post(url, body, format="json")
        assert response.status_code == 400, (url, response.content[:200])
        assert len(response.content) < 300 and b"no more than" in response.content  # the serializer's own limit


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("52:54:00:00:00:09,192.168.122.9," + "n" * 200_000, "not CSV"),  # over the csv module's field limit
        ("52:54:00:00:00:09,192.168.122.9,a\rb", "not CSV"),  # a bare carriage return
        ("52:54:00:00:00:09,192.168.122.9,a,extra", "4 columns"),
        ("52:54:00:00:00:09,192.168.122.9,web,x,y", "5 columns"),
        ("52:54:00:00:00:09,192.168.122.9," + "n" * 300, "at most 253"),
    ],
)
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_csv_import_that_is_not_mac_ip_name_is_refused_whole(
    api, default, nothing_changes, csv_text, message, dry_run
):
    body = {"csv": f"52:54:00:00:00:08,192.168.122.8,ok\n{csv_text}", "dry_run": dry_run}
    response = api.post(f"/api/networks/{default.pk}/dhcp-hosts/import/", body, format="json")
    assert response.status_code == 400
    assert message in response.json()["csv"][0] and "Line 2" in response.json()["csv"][0]
    assert len(response.content) < 300


def test_a_csv_row_padded_with_empty_cells_is_taken(api, default):
    body = {"csv": "52:54:00:00:00:08,192.168.122.8,ok,,\r\n", "dry_run": True}
    response = api.post(f"/api/networks/{default.pk}/dhcp-hosts/import/", body, format="json")
    assert response.status_code == 200 and response.json()["valid"] == 1


@pytest.mark.parametrize(
    "query",
    ["host=abc", "host=99999999999999999999999", "host=-1", "name=%00", "limit=-1", "limit=abc",
     "limit=99999999999999999999999999", "offset=abc", "offset=-5", "offset=99999999999999999999999", "active=maybe",
     "page=abc", "host=1%00"],
)  # fmt: skip
@pytest.mark.parametrize("collection", ["networks", "guests", "devices", "operations", "audit", "hosts"])
def test_bad_query_parameters_are_a_400_or_ignored(api, demo_host, collection, query):
    response = api.get(f"/api/{collection}/?{query}")
    assert response.status_code in (200, 400), response.content[:300]
    if response.status_code == 200:
        assert len(response.json()["results"]) <= 1000


def test_an_offset_past_any_database_integer_is_a_400(api, demo_host):
    response = api.get("/api/networks/?offset=99999999999999999999999")
    assert response.status_code == 400 and "offset" in response.json()


def test_a_huge_limit_is_capped(api, demo_host):
    assert api.get("/api/networks/?limit=99999999999999999999999999").status_code == 200  # was an overflow
    response = api.get("/api/networks/?limit=5000&offset=1")
    assert response.json()["previous"].endswith("limit=1000")  # the page size the server really used


@pytest.mark.parametrize("query", ["%00%00", "ab%0Acd", "a" * 300])
def test_an_address_search_for_unprintable_or_huge_text_is_a_400(api, demo_host, query):
    response = api.get(f"/api/ipam/?q={query}")
    body = response.json()
    assert response.status_code == 400 and ("q" in body or "NUL" in body.get("detail", ""))


def test_error_bodies_are_json_even_for_a_body_that_is_not_json(api, default, nothing_changes):
    response = _send(api, "post", f"/api/networks/{default.pk}/dhcp-hosts/", b"\xe3(\x00")
    assert response.status_code == 400
    assert json.loads(response.content)["detail"].startswith("JSON parse error")


BAD_RESERVATION = "52:54:00:00:00:09,10.99.0.9,a\x07"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("", {"name": "lab\x01", "mode": "isolated"}),
        ("", {"name": "lab", "mode": "isolated", "domain_name": "lab\x00.lan"}),
        ("", {"name": "lab", "mode": "isolated", "ipv4": "10.99.0.1/24\x0b10.99.1.1/24"}),
        ("", {"name": "lab", "mode": "isolated", "ipv4": "10.99.0.1/24", "reservations": BAD_RESERVATION}),
        ("", {"name": "lab", "mode": "macvtap-bridge", "interfaces": "eth1\x00"}),
        ("", {"name": "lab", "mode": "isolated", "mtu": "١٥٠٠"}),
        ("", {"name": "lab", "mode": "isolated", "mtu": True}),
        ("", {"host": "١", "name": "lab", "mode": "isolated"}),
        ("{pk}/rename/", {"name": "default\x01"}),
        ("{pk}/rename/", {"name": "x" * 10_000}),
    ],
)  # fmt: skip
def test_control_characters_in_a_new_network_or_name_are_refused(api, default, nothing_changes, path, body):
    body = {"host": default.host_id, **body} if not path else body  # a body's own "host" wins
    response = api.post(f"/api/networks/{path.format(pk=default.pk)}", body, format="json")
    assert response.status_code == 400, response.content[:300]
    assert len(response.content) < 400
