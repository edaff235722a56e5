"""The passthrough page of a host, on the demo fleet (test driver: the page reads the mirror only,
so nothing here depends on hardware; what the sync could not learn shows as "unknown")."""

import re

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from networks.models import Guest, Host, NodeDevice, UserRole
from tests.factories import UserFactory


def _page(client, host) -> str:
    response = client.get(reverse("networks:host_passthrough", args=[host.pk]))
    assert response.status_code == 200
    return response.content.decode()


def _row(page: str, pci: str) -> str:
    match = re.search(rf'<tr class="pci-device" data-pci="{re.escape(pci)}">(.*?)</tr>', page, re.S)
    assert match, f"no row for {pci}"
    return match.group(1)


def _table(page: str, table_id: str) -> str:
    return page.split(f'<table id="{table_id}">', 1)[1].split("</table>", 1)[0]


def test_the_host_page_links_to_its_passthrough_page(logged_in, demo_host):
    page = logged_in.get(demo_host.get_absolute_url()).content.decode()
    assert f'href="/hosts/{demo_host.pk}/passthrough/"' in page


def test_it_says_whether_the_host_can_assign_devices_and_why(logged_in, demo_host):
    page = _page(logged_in, demo_host)
    # The demo's node devices list IOMMU groups; the test driver has no domain capabilities.
    assert '<span class="badge warn" id="verdict">unknown</span>' in page
    assert "IOMMU yes: the node devices list IOMMU groups." in page
    assert "VFIO unknown: this driver cannot report its domain capabilities." in page


def test_a_host_without_iommu_says_no(logged_in, demo_host):
    Host.objects.filter(pk=demo_host.pk).update(iommu_support="no", passthrough_note="IOMMU no: off in firmware.")
    page = _page(logged_in, demo_host)
    assert '<span class="badge bad" id="verdict">no</span> IOMMU no: off in firmware.' in page


def test_network_devices_come_first_then_the_others(logged_in, demo_host):
    page = _page(logged_in, demo_host)
    network = _table(page, "network-devices")
    others = _table(page, "other-devices")
    for pci in ("0000:00:19.0", "0000:01:00.0", "0000:01:00.1", "0000:01:10.0", "0000:02:00.0", "0000:06:00.0"):
        assert f'data-pci="{pci}"' in network and f'data-pci="{pci}"' not in others
    for pci in ("0000:03:00.0", "0000:05:00.0", "0000:41:00.0"):
        assert f'data-pci="{pci}"' in others


def test_each_device_shows_its_group_sriov_relations_and_interface(logged_in, demo_host):
    page = _page(logged_in, demo_host)
    pf = _row(page, "0000:01:00.0")
    assert "82599ES 10-Gigabit SFI/SFP+ Network Connection" in pf and "interface <code>ens1f0</code>" in pf
    assert "PF: 4 VFs of 63 at most" in pf
    for vf in ("0000:01:10.0", "0000:01:10.2", "0000:01:10.4", "0000:01:10.6"):
        assert f"<code>{vf}</code>" in pf
    assert 'VF of <code>0000:01:00.0</code><br><span class="muted">in pool</span> sriov-pool' in _row(
        page, "0000:01:10.4"
    )
    assert "PF: 0 VFs of 63 at most" in _row(page, "0000:01:00.1")
    spare_nic = _row(page, "0000:06:00.0")
    assert '<td class="group">12<br><span class="muted">with</span> <code>0000:05:00.0</code></td>' in spare_nic
    assert "alone" in _row(page, "0000:41:00.0")


def test_each_device_says_who_holds_it(logged_in, demo_host):
    page = _page(logged_in, demo_host)
    gpu01 = Guest.objects.get(host=demo_host, name="gpu01")
    pool = demo_host.networks.get(name="sriov-pool")
    guest_link = f'<a href="/guests/{gpu01.pk}/">'
    assert f"{guest_link}hostdev of gpu01</a>" in _row(page, "0000:41:00.0")
    assert f"{guest_link}hostdev NIC of gpu01</a>" in _row(page, "0000:01:10.0")
    assert f'<a href="/networks/{pool.pk}/">PF of pool sriov-pool</a>' in _row(page, "0000:01:00.0")
    assert "host NIC eth0 with address 198.51.100.10/24" in _row(page, "0000:00:19.0")
    assert "host NIC eth1 used by network macvtap" in _row(page, "0000:02:00.0")
    assert "host disk controller (PCI class 0x010802)" in _row(page, "0000:03:00.0")
    for free in ("0000:01:10.2", "0000:06:00.0", "0000:01:00.1"):
        assert '<span class="muted">free</span>' in _row(page, free)


def test_an_admin_gets_assign_links_for_free_devices_only(logged_in, demo_host):
    page = _page(logged_in, demo_host)
    build01 = Guest.objects.get(host=demo_host, name="build01")
    gpu01 = Guest.objects.get(host=demo_host, name="gpu01")
    free = _row(page, "0000:01:00.1")
    assert f'<a class="assign" href="/guests/{build01.pk}/hostdevs/add/?pci=0000:01:00.1">build01</a>' in free
    # free, but sriov-pool hands it out: assigning it directly is refused
    pooled = _row(page, "0000:01:10.2")
    assert '<span class="muted">free</span>' in pooled and "Assign to" not in pooled
    gpu = _row(page, "0000:41:00.0")
    assert "Assign to" not in gpu
    assert f'<a class="return" href="/guests/{gpu01.pk}/hostdevs/0000:41:00.0/remove/">Return…</a>' in gpu
    # held by the host: neither assignable nor returnable here
    disk = _row(page, "0000:03:00.0")
    assert "Assign to" not in disk and "Return…" not in disk


def test_an_assign_link_opens_the_form_with_its_device_chosen(logged_in, demo_host):
    page = _page(logged_in, demo_host)
    build01 = Guest.objects.get(host=demo_host, name="build01")
    link = re.search(r'<a class="assign" href="([^"]+)">build01</a>', _row(page, "0000:01:00.1")).group(1)
    form = logged_in.get(link.replace("&amp;", "&"))
    assert form.status_code == 200 and form.request["PATH_INFO"] == f"/guests/{build01.pk}/hostdevs/add/"
    assert '<option value="0000:01:00.1" selected>' in form.content.decode()


def test_a_viewer_sees_the_page_without_any_action(client, demo_host):
    client.force_login(UserFactory(username="vera", role="viewer"))
    page = _page(client, demo_host)
    assert "hostdev of gpu01" in page
    assert "Assign to" not in page and "Return…" not in page


def test_a_user_of_another_host_gets_404(client, demo_host):
    other = Host.objects.create(name="elsewhere", uri="test:///default")
    user = UserFactory(username="otto", role="admin")
    UserRole.objects.filter(user=user).update(all_hosts=False)
    user.kvmweb_role.hosts.set([other])
    client.force_login(user)
    assert client.get(reverse("networks:host_passthrough", args=[demo_host.pk])).status_code == 404
    assert client.get(reverse("networks:host_passthrough", args=[other.pk])).status_code == 200


def test_an_operator_sees_no_assign_links_since_assignment_is_for_admins(client, demo_host):
    client.force_login(UserFactory(username="olga", role="operator"))
    page = _page(client, demo_host)
    assert '<span class="muted">free</span>' in _row(page, "0000:01:10.2")
    assert "Assign to" not in page and "Return…" not in page


def test_the_page_changes_nothing_and_takes_no_post(logged_in, demo_host):
    response = logged_in.post(reverse("networks:host_passthrough", args=[demo_host.pk]))
    assert response.status_code == 405


def test_the_page_costs_the_same_queries_whatever_the_device_count(logged_in, demo_host):
    url = reverse("networks:host_passthrough", args=[demo_host.pk])
    with CaptureQueriesContext(connection) as before:
        logged_in.get(url)
    for i in range(20):
        NodeDevice.objects.create(
            host=demo_host, name=f"pci_0000_70_{i:02x}_0", capability="pci", pci_address=f"0000:70:{i:02x}.0"
        )
    with CaptureQueriesContext(connection) as after:
        logged_in.get(url)
    assert len(after.captured_queries) == len(before.captured_queries)
