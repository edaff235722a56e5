"""SR-IOV VF pools on the pages, on the demo fleet (test driver: no VF is ever bound to a guest
here, the hardware path is not exercised). sriov-pool has the PF ens1f0 and its 4 VFs; gpu01
holds 0000:01:10.0 directly and one more through its pool interface, so 2 are free."""

import re

from django.urls import reverse

from networks.models import Guest, Network


def _pool_page(client, host) -> str:
    network = Network.objects.get(host=host, name="sriov-pool")
    response = client.get(reverse("networks:network_detail", args=[network.pk]))
    assert response.status_code == 200
    return response.content.decode()


def _section(page: str) -> str:
    match = re.search(r'<div class="card" id="pool-vfs">(.*?)</table>', page, re.S)
    assert match, "no pool section"
    return match.group(1)


def test_the_pool_page_shows_its_pf_vfs_holders_and_free_count(logged_in, demo_host):
    section = _section(_pool_page(logged_in, demo_host))
    assert "<dt>Physical function</dt><dd>ens1f0</dd>" in section
    assert '<dd id="pool-free">2 of 4</dd>' in section
    for address in ("0000:01:10.0", "0000:01:10.2", "0000:01:10.4", "0000:01:10.6"):
        assert f"<code>{address}</code>" in section
    gpu01 = Guest.objects.get(host=demo_host, name="gpu01")
    assert f'<a href="{reverse("networks:guest_detail", args=[gpu01.pk])}">hostdev NIC of gpu01</a>' in section
    assert section.count('<span class="badge ok">free</span>') == 3
    assert 'id="pool-unplaced"' in section and "gpu01" in section
    assert 'id="pool-exhausted"' not in section


def test_the_pool_page_warns_when_no_vf_is_free(logged_in, demo_host):
    Guest.objects.filter(host=demo_host, name="web01").update(hostdev_addresses=["0000:01:10.2", "0000:01:10.4"])
    section = _section(_pool_page(logged_in, demo_host))
    assert '<dd id="pool-free">0 of 4</dd>' in section
    assert 'id="pool-exhausted"' in section


def test_other_networks_have_no_pool_section(logged_in, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    page = logged_in.get(reverse("networks:network_detail", args=[network.pk])).content.decode()
    assert 'id="pool-vfs"' not in page


def test_the_create_page_offers_the_hosts_sriov_pfs_and_disables_the_one_in_use(logged_in, demo_host):
    page = logged_in.get(reverse("networks:network_create", args=[demo_host.pk])).content.decode()
    select = re.search(r'<select id="id_pf" name="pf">(.*?)</select>', page, re.S).group(1)
    options = re.findall(r'<option value="([^"]*)"[^>]*?( disabled)?>([^<]*)</option>', select)
    assert [(value, bool(disabled)) for value, disabled, _label in options] == [
        ("", False), ("ens1f0", True), ("ens1f1", False),
    ]  # fmt: skip
    assert options[1][2] == "ens1f0 (0000:01:00.0, 4 of 63 VFs enabled): used by sriov-pool"
    assert "eth0" not in select


def test_the_create_preview_of_a_pool_shows_its_xml_and_warning(logged_in, demo_host):
    url = reverse("networks:network_create", args=[demo_host.pk])
    page = logged_in.post(url, {"name": "pool2", "mode": "hostdev", "pf": "ens1f1"}).content.decode()
    preview = re.search(r'<div class="card" id="create-preview">(.*?)</div>', page, re.S).group(1)
    assert "&lt;pf dev=&quot;ens1f1&quot;/&gt;" in preview
    assert "ens1f1 has no VFs enabled" in preview


def test_the_create_page_names_the_pf_it_refuses(logged_in, demo_host):
    url = reverse("networks:network_create", args=[demo_host.pk])
    page = logged_in.post(url, {"name": "pool2", "mode": "hostdev", "pf": "ens1f0"}).content.decode()
    errors = re.search(r'<div class="card errorlist" id="create-errors">(.*?)</div>\s*<form', page, re.S).group(1)
    assert "<strong>pf</strong>: ens1f0 already backs the VF pool sriov-pool on demo" in errors
    assert not Network.objects.filter(host=demo_host, name="pool2").exists()


def test_a_stopped_guest_on_a_full_pool_is_warned_on_its_page(logged_in, demo_host):
    """build01's config gets an interface on sriov-pool (as a sync would mirror it); then no VF is free."""
    build01 = Guest.objects.get(host=demo_host, name="build01")
    pool = Network.objects.get(host=demo_host, name="sriov-pool")
    build01.interfaces.create(position=1, type="network", mac="52:54:00:0c:00:42", source="sriov-pool", network=pool)
    Guest.objects.filter(host=demo_host, name="web01").update(hostdev_addresses=["0000:01:10.2", "0000:01:10.4"])
    page = logged_in.get(reverse("networks:guest_detail", args=[build01.pk])).content.decode()
    assert re.search(r'class="badge warn pool-start-warning">Pool sriov-pool has no free VF \(0 of 4\): build01', page)


def test_a_stopped_guest_on_a_pool_with_free_vfs_gets_no_warning(logged_in, demo_host):
    build01 = Guest.objects.get(host=demo_host, name="build01")
    pool = Network.objects.get(host=demo_host, name="sriov-pool")
    build01.interfaces.create(position=1, type="network", mac="52:54:00:0c:00:42", source="sriov-pool", network=pool)
    page = logged_in.get(reverse("networks:guest_detail", args=[build01.pk])).content.decode()
    assert "pool-start-warning" not in page


def test_the_interface_form_attaches_a_stopped_guest_to_a_pool_without_a_model(logged_in, demo_host):
    """The form offers "none" as the model; the preview carries the pool warning (no VF free)."""
    build01 = Guest.objects.get(host=demo_host, name="build01")
    Guest.objects.filter(host=demo_host, name="web01").update(hostdev_addresses=["0000:01:10.2", "0000:01:10.4"])
    url = reverse("networks:guest_interface_add", args=[build01.pk])
    assert '<option value="">none (SR-IOV pool)</option>' in logged_in.get(url).content.decode()
    form = {"source_type": "network", "source": "sriov-pool", "model": "", "link": "up", "scope": "config"}
    page = logged_in.post(url, form).content.decode()
    assert "Pool sriov-pool has no free VF (0 of 4)" in page
    assert "&lt;model" not in page


def test_the_interface_form_names_the_model_it_refuses_for_a_pool(logged_in, demo_host):
    build01 = Guest.objects.get(host=demo_host, name="build01")
    url = reverse("networks:guest_interface_add", args=[build01.pk])
    form = {"source_type": "network", "source": "sriov-pool", "model": "virtio", "link": "up", "scope": "config"}
    page = logged_in.post(url, form).content.decode()
    assert "A VF pool gives the guest the VF itself" in page
