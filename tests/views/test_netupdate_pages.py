from django.urls import reverse

from networks.models import Network, Operation


def _edit_url(network, section):
    return reverse("networks:network_edit", args=[network.pk, section])


def test_the_network_page_offers_every_section_editor(logged_in, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    page = logged_in.get(network.get_absolute_url()).content.decode()
    for section in ["ip-dhcp-host", "ip-dhcp-range", "dns-host", "dns-txt", "dns-srv", "portgroup"]:
        assert _edit_url(network, section) in page


def test_adding_a_reservation_previews_its_effect_then_requests_an_operation(logged_in, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    url = _edit_url(network, "ip-dhcp-host")
    assert logged_in.get(url).status_code == 200
    form = {"command": "add-last", "scope": "both", "mac": "52:54:00:AB:CD:EF", "ip": "192.168.122.40", "name": "bob"}
    preview = logged_in.post(url, form).content.decode()
    assert "Reserve 52:54:00:ab:cd:ef → 192.168.122.40" in preview
    assert "SIGHUP" in preview and "dynamic range" in preview
    assert not Operation.objects.filter(kind="network.update").exists()
    response = logged_in.post(url, {**form, "confirm": "1", "message": "new build box"})
    assert response.status_code == 302 and response.url == network.get_absolute_url()
    operation = Operation.objects.get(kind="network.update")
    assert operation.params["values"]["mac"] == "52:54:00:AB:CD:EF" and operation.message == "new build box"


def test_a_bad_reservation_shows_field_errors_and_requests_nothing(logged_in, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    form = {"command": "add-last", "scope": "both", "mac": "52:54:00:0a:00:11", "ip": "192.168.122.400"}
    for extra in ({}, {"confirm": "1"}):
        page = logged_in.post(_edit_url(network, "ip-dhcp-host"), {**form, **extra}).content.decode()
        assert 'id="edit-errors"' in page and "not an IP address" in page
    assert not Operation.objects.filter(kind="network.update").exists()


def test_editing_a_reservation_starts_from_its_current_values(logged_in, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    page = logged_in.get(_edit_url(network, "ip-dhcp-host"), {"command": "modify", "key": "52:54:00:0a:00:11"})
    assert 'value="192.168.122.11"' in page.content.decode()


def test_deleting_asks_for_confirmation_first(logged_in, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    url = _edit_url(network, "dns-srv")
    page = logged_in.post(url, {"command": "delete", "key": "http", "scope": "both"}).content.decode()
    assert "Delete SRV _http._tcp" in page and "dnsmasq restarts" in page
    logged_in.post(url, {"command": "delete", "key": "http", "scope": "both", "confirm": "1"})
    assert Operation.objects.get(kind="network.update").params["command"] == "delete"


def test_an_unknown_section_is_404(logged_in, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    assert logged_in.get(_edit_url(network, "bridge")).status_code == 404


def test_a_guest_still_on_its_old_address_is_marked_until_it_renews(logged_in, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    Network.objects.filter(pk=network.pk).update(leases_known=True)
    network.dhcp_leases.create(mac="52:54:00:0a:00:11", address="192.168.122.77", hostname="web01")
    network.dhcp_leases.create(mac="52:54:00:0a:00:12", address="192.168.122.12", hostname="web02")
    page = logged_in.get(network.get_absolute_url()).content.decode()
    assert "reserved 192.168.122.11: renews at" in page
    assert page.count("badge ok") == 1


def test_export_and_import_pages(logged_in, demo_host):
    default = Network.objects.get(host=demo_host, name="default")
    csv_page = logged_in.get(f"/networks/{default.pk}/reservations.csv")
    assert csv_page["Content-Type"] == "text/csv" and b"52:54:00:0a:00:11" in csv_page.content
    preview = logged_in.post(
        f"/networks/{default.pk}/reservations/import/", {"csv_text": "52:54:00:20:00:09,192.168.122.209,z"}
    )
    assert b"1 row can be imported" in preview.content
    response = logged_in.post(
        f"/networks/{default.pk}/reservations/import/",
        {"csv_text": "52:54:00:20:00:09,192.168.122.209,z", "strategy": "config", "confirm": "1"},
    )
    operation = Operation.objects.get(kind="network.bulk_import")
    assert response.url == operation.get_absolute_url() and operation.params["scope"] == "config"


def test_the_address_search_finds_a_mac_everywhere_it_is_used(logged_in, demo_host):
    page = logged_in.get("/addresses/", {"q": "52-54-00-0A-00-11"}).content.decode()
    assert 'id="ipam-reservations"' in page and "web01" in page and "Guest interfaces" in page
    page = logged_in.get("/addresses/", {"q": "192.168.122.200"}).content.decode()
    assert "Subnets containing 192.168.122.200" in page and "default" in page


def test_the_xml_editor_shows_a_diff_and_whether_a_restart_is_needed(logged_in, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    url = reverse("networks:network_edit_xml", args=[network.pk])
    assert "&lt;network" in logged_in.get(url).content.decode()
    changed = network.inactive_xml.replace("stp='off'", "stp='on'").replace('stp="off"', 'stp="on"')
    page = logged_in.post(url, {"xml": changed}).content.decode()
    assert "needs a restart" in page and 'value="restart"' in page
    logged_in.post(url, {"xml": changed, "apply": "define", "message": "enable STP"})
    assert Operation.objects.get(kind="network.define").message == "enable STP"


def test_creating_a_network_previews_its_xml_then_requests_it(logged_in, demo_host):
    url = reverse("networks:network_create", args=[demo_host.pk])
    assert logged_in.get(url).status_code == 200
    form = {"mode": "nat", "name": "web-lab", "ipv4": "10.60.0.1/24", "dhcp": "on", "start": "on"}
    page = logged_in.post(url, form).content.decode()
    assert 'id="create-preview"' in page and "10.60.0.254" in page
    assert not Operation.objects.filter(kind="network.create").exists()
    response = logged_in.post(url, {**form, "confirm": "1"})
    operation = Operation.objects.get(kind="network.create")
    assert response.url == operation.get_absolute_url() and operation.target_name == "web-lab"
    page = logged_in.post(url, {**form, "ipv4": "nonsense"}).content.decode()
    assert 'id="create-errors"' in page


def test_the_default_network_button_reports_that_it_exists(logged_in, demo_host):
    response = logged_in.post(reverse("networks:network_create_default", args=[demo_host.pk]), follow=True)
    assert "already exists" in response.content.decode()


def test_the_rename_page_refuses_to_strand_running_guests(logged_in, demo_host):
    network = Network.objects.get(host=demo_host, name="isolated")
    url = reverse("networks:network_rename", args=[network.pk])
    assert "running guest" in logged_in.get(url).content.decode()
    page = logged_in.post(url, {"new_name": "iso-b"}).content.decode()
    assert 'id="rename-error"' in page and "web01" in page
    response = logged_in.post(url, {"new_name": "iso-b", "move_guests": "on"})
    assert response.status_code == 302 and Operation.objects.get(kind="network.rename").params["new_name"] == "iso-b"
