"""The PCI assignment pages: the form (free devices only), the preview with its warnings, the
confirm, the guest page's device list with "Return", and the return page.

The demo fleet runs on the test driver: a stopped guest's config changes by redefinition; no
hardware path (IOMMU, vfio-pci, VF programming) is exercised.
"""

import pytest
from django.urls import reverse

from networks.models import Guest, Network, Operation
from tests.conftest import run_to_end
from tests.factories import UserFactory

FREE_VF = "0000:01:10.2"


def _guest(host, name):
    return Guest.objects.get(host=host, name=name)


def _add_url(guest):
    return reverse("networks:guest_hostdev_add", args=[guest.pk])


def _options(page: str) -> list[str]:
    """The values of the device select's options."""
    select = page.split('name="pci_address"', 1)[1].split("</select>", 1)[0]
    return [chunk.split('"', 1)[0] for chunk in select.split('<option value="')[1:]]


@pytest.fixture
def no_pool(demo_host):
    """The demo host without its VF pool (sriov-pool gone from the mirror): ens1f0's VFs are
    then free to give a guest directly. While a pool uses them, they are refused."""
    Network.objects.filter(host=demo_host, name="sriov-pool").delete()


def test_the_form_offers_only_free_devices(logged_in, demo_host):
    page = logged_in.get(_add_url(_guest(demo_host, "build01"))).content.decode()
    # ens1f1 and the spare Realtek NIC; not the VFs sriov-pool hands out, the pool's PF, the GPU
    # gpu01 holds, the host's NICs in use, its NVMe and SATA controllers.
    assert _options(page) == ["", "0000:01:00.1", "0000:06:00.0"]
    assert "Free SR-IOV VFs" not in page and "Other free PCI devices" in page


def test_without_the_pool_the_form_offers_its_free_vfs_first(logged_in, demo_host, no_pool):
    page = logged_in.get(_add_url(_guest(demo_host, "build01"))).content.decode()
    # 10.0 is gpu01's; ens1f0 itself is free once no pool uses it
    assert _options(page) == ["", "0000:01:10.2", "0000:01:10.4", "0000:01:10.6", "0000:01:00.0", "0000:01:00.1",
                              "0000:06:00.0"]  # fmt: skip
    assert "Free SR-IOV VFs" in page and "Other free PCI devices" in page
    assert "the persistent config (the guest is not running)" in page and "running guest only" not in page


def test_a_vf_of_the_pool_sent_by_hand_is_refused_on_the_page(logged_in, demo_host):
    response = logged_in.post(_add_url(_guest(demo_host, "build01")), {"pci_address": FREE_VF, "kind": "interface"})
    assert response.status_code == 200
    assert response.context["errors"]["pci_address"] == [
        "0000:01:10.2 is a VF of the pool sriov-pool: the pool hands it to the next guest that starts on it, which "
        "would then fail to start. Give the guest an interface on the network sriov-pool instead, or a VF of a PF "
        "no pool uses."
    ]
    assert not Operation.objects.filter(kind__startswith="guest.").exists()


def test_the_form_is_prefilled_from_the_query(logged_in, demo_host, no_pool):
    page = logged_in.get(_add_url(_guest(demo_host, "build01")), {"pci": FREE_VF, "kind": "interface"})
    text = page.content.decode()
    assert f'<option value="{FREE_VF}" selected>' in text
    assert '<option value="interface" selected>' in text


def test_assigning_a_vf_previews_then_applies_with_the_previewed_mac(logged_in, demo_host, no_pool):
    """Test driver: the stopped guest's config is redefined; no VF is programmed."""
    build01 = _guest(demo_host, "build01")
    form = {"pci_address": FREE_VF, "kind": "interface", "managed": "on", "vlan": "42", "scope": "config"}
    preview = logged_in.post(_add_url(build01), form)
    page = preview.content.decode()
    assert preview.status_code == 200 and "Persistent config only: the guest sees it at its next start." in page
    mac = preview.context["plan"].mac
    assert f'name="previewed_mac" value="{mac}"' in page and "&lt;tag id=&quot;42&quot;/&gt;" in page
    assert not Operation.objects.filter(kind__startswith="guest.").exists()
    confirmed = logged_in.post(_add_url(build01), {**form, "confirm": "1", "previewed_mac": mac})
    operation = Operation.objects.get(kind="guest.hostdev_attach")
    assert confirmed.status_code == 302 and confirmed["Location"] == operation.get_absolute_url()
    assert run_to_end(operation.pk).status == "succeeded"
    assert build01.interfaces.get(mac=mac).source == FREE_VF


def test_a_vf_as_a_bare_hostdev_warns_and_links_to_the_interface_form(logged_in, demo_host, no_pool):
    build01 = _guest(demo_host, "build01")
    page = logged_in.post(_add_url(build01), {"pci_address": FREE_VF, "kind": "hostdev", "managed": "on"})
    text = page.content.decode()
    assert "new random MAC after each host reboot" in text
    link = f"{_add_url(build01)}?pci={FREE_VF.replace(':', '%3A')}&amp;kind=interface"
    assert f'id="use-interface" href="{link}"' in text


def test_a_refusal_is_shown_and_nothing_is_queued(logged_in, demo_host):
    page = logged_in.post(_add_url(_guest(demo_host, "build01")), {"pci_address": "0000:41:00.0", "kind": "hostdev"})
    assert page.status_code == 200
    assert "already held: hostdev of gpu01" in page.content.decode()
    assert not Operation.objects.filter(kind__startswith="guest.").exists()


def test_802_1qbg_sent_by_hand_is_refused_on_the_page_too(logged_in, demo_host, no_pool):
    form = {"pci_address": FREE_VF, "kind": "interface", "virtualport": "802.1Qbg", "profileid": "p"}
    page = logged_in.post(_add_url(_guest(demo_host, "build01")), form).content.decode()
    assert "libvirt does not support 802.1Qbg" in page


def test_the_guest_page_lists_its_devices_with_return_links_for_an_admin(logged_in, demo_host):
    gpu01 = _guest(demo_host, "gpu01")
    page = logged_in.get(gpu01.get_absolute_url()).content.decode()
    assert 'id="hostdevs"' in page and 'data-pci="0000:41:00.0"' in page and 'data-pci="0000:01:10.0"' in page
    assert reverse("networks:guest_hostdev_remove", args=[gpu01.pk, "0000:41:00.0"]) in page
    assert 'id="hostdev-add"' in page


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_the_guest_page_offers_no_device_actions_below_admin(client, demo_host, role):
    client.force_login(UserFactory(username="u", role=role))
    gpu01 = _guest(demo_host, "gpu01")
    page = client.get(gpu01.get_absolute_url()).content.decode()
    assert 'data-pci="0000:41:00.0"' in page  # shown to everyone
    assert "/hostdevs/" not in page
    assert client.get(_add_url(gpu01)).status_code == 403


def test_returning_a_device_previews_then_queues(logged_in, demo_host):
    build01 = _guest(demo_host, "build01")
    logged_in.post(_add_url(build01), {"pci_address": "0000:01:00.1", "kind": "hostdev", "confirm": "1"})
    run_to_end(Operation.objects.get(kind="guest.hostdev_attach").pk)
    url = reverse("networks:guest_hostdev_remove", args=[build01.pk, "0000:01:00.1"])
    preview = logged_in.get(url)
    assert preview.status_code == 200
    assert "Return PCI device 0000:01:00.1 from build01 (config)" in preview.content.decode()
    confirmed = logged_in.post(url, {"scope": "config", "confirm": "1"})
    operation = Operation.objects.get(kind="guest.hostdev_detach")
    assert confirmed.status_code == 302 and run_to_end(operation.pk).status == "succeeded"
    build01.refresh_from_db()
    assert build01.hostdev_addresses == []


def test_returning_a_device_the_guest_does_not_hold_says_so(logged_in, demo_host):
    build01 = _guest(demo_host, "build01")
    page = logged_in.get(reverse("networks:guest_hostdev_remove", args=[build01.pk, FREE_VF]))
    assert page.status_code == 200 and "build01 holds no PCI device 0000:01:10.2" in page.content.decode()
