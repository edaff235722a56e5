"""`GET /api/hosts/{id}/pci-devices/` and the pool fields of `GET /api/networks/{id}/`, on the
demo fleet (read from the mirror: the test driver's PCI node devices come from demo/fleet.xml;
no hardware path is exercised)."""

from rest_framework.test import APIClient

from networks.models import Guest, Host, UserRole
from tests.factories import UserFactory


def _devices(api, host) -> dict[str, dict]:
    response = api.get(f"/api/hosts/{host.pk}/pci-devices/")
    assert response.status_code == 200, response.content
    return {device["pci_address"]: device for device in response.json()}


def test_it_lists_every_pci_device_network_ones_first(api, demo_host):
    response = api.get(f"/api/hosts/{demo_host.pk}/pci-devices/")
    addresses = [device["pci_address"] for device in response.json()]
    assert addresses == [
        "0000:00:19.0", "0000:01:00.0", "0000:01:00.1", "0000:01:10.0", "0000:01:10.2", "0000:01:10.4",
        "0000:01:10.6", "0000:02:00.0", "0000:06:00.0",
        "0000:03:00.0", "0000:05:00.0", "0000:41:00.0",
    ]  # fmt: skip


def test_a_pf_lists_its_vfs_and_a_vf_names_its_pf(api, demo_host):
    devices = _devices(api, demo_host)
    pf = devices["0000:01:00.0"]
    assert pf == {
        "name": "pci_0000_01_00_0",
        "pci_address": "0000:01:00.0",
        "driver": "",  # the test driver drops <driver>
        "vendor": "Intel Corporation",
        "product": "82599ES 10-Gigabit SFI/SFP+ Network Connection",
        "pci_class": "0x020000",
        "iommu_group": 14,
        "group_members": [],
        "physical_function": None,
        "virtual_functions": ["0000:01:10.0", "0000:01:10.2", "0000:01:10.4", "0000:01:10.6"],
        "vf_max": 63,
        "net_interface": "ens1f0",
        "holder": {"kind": "pool", "guest": None, "guest_name": None, "network": "sriov-pool",
                   "detail": "PF of pool sriov-pool"},
        "pool": None,
    }  # fmt: skip
    vf = devices["0000:01:10.2"]
    assert vf["physical_function"] == "0000:01:00.0" and vf["virtual_functions"] == []
    assert vf["iommu_group"] == 41 and vf["holder"] is None and vf["pool"] == "sriov-pool"


def test_each_holder_names_the_guest_pool_or_host_use(api, demo_host):
    devices = _devices(api, demo_host)
    gpu01 = Guest.objects.get(host=demo_host, name="gpu01")
    assert devices["0000:41:00.0"]["holder"] == {
        "kind": "guest-hostdev", "guest": gpu01.pk, "guest_name": "gpu01", "network": None,
        "detail": "hostdev of gpu01",
    }  # fmt: skip
    assert devices["0000:01:10.0"]["holder"]["kind"] == "guest-interface"
    assert devices["0000:00:19.0"]["holder"]["detail"] == "host NIC eth0 with address 198.51.100.10/24"
    assert devices["0000:05:00.0"]["holder"]["detail"] == "host disk controller (PCI class 0x010601)"
    spare = devices["0000:06:00.0"]
    assert spare["holder"] is None and spare["iommu_group"] == 12 and spare["group_members"] == ["0000:05:00.0"]


def test_the_pool_network_shows_its_pf_and_vfs(api, demo_host):
    pool = demo_host.networks.get(name="sriov-pool")
    body = api.get(f"/api/networks/{pool.pk}/").json()
    assert body["pf"] == "ens1f0"
    held = {vf["pci_address"]: vf["held_by"] for vf in body["vfs"]}
    assert list(held) == ["0000:01:10.0", "0000:01:10.2", "0000:01:10.4", "0000:01:10.6"]
    assert held["0000:01:10.0"]["detail"] == "hostdev NIC of gpu01"
    assert held["0000:01:10.2"] is None
    other = demo_host.networks.get(name="default")
    assert api.get(f"/api/networks/{other.pk}/").json()["pf"] is None


def test_a_user_of_another_host_gets_404(demo_host):
    other = Host.objects.create(name="elsewhere", uri="test:///default")
    user = UserFactory(username="otto", role="viewer")
    UserRole.objects.filter(user=user).update(all_hosts=False)
    user.kvmweb_role.hosts.set([other])
    client = APIClient()
    client.force_authenticate(user)
    assert client.get(f"/api/hosts/{demo_host.pk}/pci-devices/").status_code == 404
    assert client.get(f"/api/hosts/{other.pk}/pci-devices/").json() == []


def test_it_needs_a_login(demo_host):
    assert APIClient().get(f"/api/hosts/{demo_host.pk}/pci-devices/").status_code in (401, 403)


def test_an_unknown_host_is_404(api, demo_host):
    assert api.get("/api/hosts/999999/pci-devices/").status_code == 404
