"""Hostile input through the pages: a page with the error, never a 500, and nothing requested."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from networks.models import Network, Operation


@pytest.fixture
def default(demo_host):
    return Network.objects.get(host=demo_host, name="default")


@pytest.fixture
def nothing_requested(default):
    yield
    assert not Operation.objects.exclude(kind="host.sync").exists()


@pytest.mark.parametrize(
    "url",
    ["/guests/?host=abc", "/guests/?host=99999999999999999999", "/guests/?host=-1",
     "/guests/?q=" + "x" * 5000, "/guests/?page=abc", "/guests/?page=99999999999999999999",
     "/devices/?host=abc", "/devices/?host=99999999999999999999", "/devices/?host=١", "/networks/?host=abc&page=-1",
     "/networks/?host=99999999999999999999&mode=nat%20x", "/operations/?host=abc&status=nosuch",
     "/operations/?page=99999999999999999999", "/audit/?host=abc&page=x"],
)  # fmt: skip
def test_bad_query_parameters_show_the_page(logged_in, demo_host, url):
    assert logged_in.get(url).status_code == 200


def test_a_host_filter_that_cannot_be_read_is_no_filter(logged_in, demo_host):
    everything = logged_in.get("/guests/").content.decode()
    assert logged_in.get("/guests/?host=abc").content.decode().count("<tr") == everything.count("<tr")
    assert logged_in.get(f"/guests/?host={demo_host.pk}").content.decode().count("<tr") == everything.count("<tr")


@pytest.mark.parametrize(
    ("section", "form", "field_message"),
    [
        ("dns-txt", {"name": "fleet2", "value": "a\x00b"}, "Control characters"),
        ("dns-txt", {"name": "fleet2", "value": "a\ndhcp-script=/bin/sh"}, "Control characters"),
        ("dns-txt", {"name": "fleet2\x1f", "value": "x"}, "Control characters"),
        ("dns-host", {"ip": "192.168.122.80", "hostnames": "nas\x00"}, "Control characters"),
        ("dns-srv", {"service": "ldap", "protocol": "tcp", "target": "ldap", "port": "٣٨٩"}, "digits 0-9"),
        ("portgroup", {"name": "ops\x00"}, "Control characters"),
        ("ip-dhcp-host", {"mac": "0", "ip": "192.168.122.90"}, "not a MAC address"),
        ("ip-dhcp-host", {"mac": "52:54:00:00:00:90", "ip": "192.168.122.90\x00"}, "Control characters"),
    ],
)
@pytest.mark.parametrize("confirm", [{}, {"confirm": "1"}])
def test_a_hostile_value_in_a_section_form_shows_the_error(
    logged_in, default, nothing_requested, section, form, field_message, confirm
):
    url = reverse("networks:network_edit", args=[default.pk, section])
    response = logged_in.post(url, {"command": "add-last", "scope": "both", **form, **confirm})
    assert response.status_code == 200
    assert 'id="edit-errors"' in response.content.decode() and field_message in response.content.decode()


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("52:54:00:00:00:09,192.168.122.9," + "n" * 200_000, "not CSV"),
        ("52:54:00:00:00:09,192.168.122.9,a\rb", "not CSV"),
        ("52:54:00:00:00:09,192.168.122.9,web,extra", "4 columns"),
    ],
)
@pytest.mark.parametrize("confirm", [{}, {"confirm": "1"}])
def test_a_pasted_csv_that_is_not_mac_ip_name_shows_the_error(
    logged_in, default, nothing_requested, csv_text, message, confirm
):
    url = reverse("networks:network_import", args=[default.pk])
    response = logged_in.post(url, {"csv_text": csv_text, "strategy": "config", **confirm})
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="import-errors"' in page and message in page


def test_a_nul_in_a_pasted_csv_refuses_its_row(logged_in, default, nothing_requested):
    url = reverse("networks:network_import", args=[default.pk])
    form = {"csv_text": "52:54:00:00:00:09,192.168.122.9,a\x00b", "strategy": "config"}
    assert "Control characters" in logged_in.post(url, form).content.decode()
    assert "No row of this file can be imported" in logged_in.post(url, {**form, "confirm": "1"}).content.decode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"52:54:00:00:00:09,192.168.122.9,caf\xe9", "not UTF-8"),  # Latin-1, not read as something else
        (b"52:54:00:00:00:09,192.168.122.9,a\rb", "not CSV"),
        (b"x" * 2_000_001, "At most"),
    ],
)
def test_an_uploaded_csv_that_cannot_be_read_shows_the_error(logged_in, default, nothing_requested, content, message):
    url = reverse("networks:network_import", args=[default.pk])
    upload = SimpleUploadedFile("hosts.csv", content, content_type="text/csv")
    response = logged_in.post(url, {"csv_file": upload, "strategy": "config", "confirm": "1"})
    assert response.status_code == 200 and message in response.content.decode()


@pytest.mark.parametrize(
    "url",
    [
        "/addresses/?q=ab%00cd",
        "/networks/?q=%00",
        "/guests/?q=x%00",
        "/guests/?host=1%00",
        "/audit/?actor=%00",
        "/operations/?status=%00",
        "/api/ipam/?q=ab%00",
        "/api/networks/?name=%00",
    ],  # fmt: skip
)
def test_a_nul_in_a_query_parameter_is_a_clear_400(logged_in, demo_host, url):
    # PostgreSQL cannot compare a string holding NUL: without the check these are 500s there.
    response = logged_in.get(url)
    assert response.status_code == 400 and b"NUL" in response.content
