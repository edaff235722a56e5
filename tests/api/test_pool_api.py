"""SR-IOV VF pools through the API on the demo fleet (test driver: the PF is never checked by
libvirt here and no VF is bound to vfio-pci; the hardware path is not exercised).

Demo facts the expected values come from: sriov-pool on PF ens1f0 with VFs 0000:01:10.0, .2,
.4 and .6; gpu01 (running) holds 0000:01:10.0 as its own hostdev NIC and has one interface on
sriov-pool whose VF the test driver does not name; ens1f1 is an SR-IOV PF with no VFs enabled.
"""

import pytest

from networks.models import Guest, Network, Operation
from tests.conftest import run_to_end


def _post(api, host, **body):
    return api.post("/api/networks/", {"host": host.pk, "name": "pool2", "mode": "hostdev", **body}, format="json")


def test_a_pool_is_created_with_mode_hostdev_and_a_pf(api, demo_host):
    response = _post(api, demo_host, pf="ens1f1")
    assert response.status_code == 202, response.json()
    operation = Operation.objects.get(pk=response.json()["operation"]["id"])
    assert run_to_end(operation.pk).status == "succeeded"
    network = Network.objects.get(host=demo_host, name="pool2")
    body = api.get(f"/api/networks/{network.pk}/").json()
    assert (body["forward_mode"], body["pf"], body["vfs"], body["free_vfs"]) == ("hostdev", "ens1f1", [], 0)


def test_a_pool_without_a_pf_is_a_400_naming_pf(api, demo_host):
    response = _post(api, demo_host)
    assert response.status_code == 400
    assert "Pick the SR-IOV physical function" in response.json()["pf"][0]
    assert not Operation.objects.filter(kind="network.create").exists()


def test_a_pf_that_is_not_an_sriov_pf_is_a_400(api, demo_host):
    response = _post(api, demo_host, pf="eth0")
    assert response.status_code == 400
    assert response.json()["pf"] == [
        "'eth0' is not an SR-IOV physical function of demo (its SR-IOV PFs: ens1f0, ens1f1)."
    ]


def test_a_pf_in_use_by_another_pool_is_a_400_naming_it(api, demo_host):
    response = _post(api, demo_host, pf="ens1f0")
    assert response.status_code == 400
    assert response.json()["pf"] == ["ens1f0 already backs the VF pool sriov-pool on demo: one pool per PF."]


@pytest.mark.parametrize("pf", [["ens1f1"], {"dev": "ens1f1"}, 7, None, True])
def test_a_pf_of_another_json_type_is_a_400(api, demo_host, pf):
    response = _post(api, demo_host, pf=pf)
    assert response.status_code == 400 and "pf" in response.json()
    assert not Operation.objects.filter(kind="network.create").exists()


def test_the_pool_shows_its_pf_its_vfs_and_who_holds_them(api, demo_host):
    network = Network.objects.get(host=demo_host, name="sriov-pool")
    body = api.get(f"/api/networks/{network.pk}/").json()
    assert body["pf"] == "ens1f0"
    assert [vf["pci_address"] for vf in body["vfs"]] == ["0000:01:10.0", "0000:01:10.2", "0000:01:10.4", "0000:01:10.6"]
    held = body["vfs"][0]["held_by"]
    gpu01 = Guest.objects.get(host=demo_host, name="gpu01")
    assert (held["guest"], held["guest_name"], held["kind"]) == (gpu01.pk, "gpu01", "guest-interface")
    assert held["detail"] == "hostdev NIC of gpu01"
    assert [vf["held_by"] for vf in body["vfs"][1:]] == [None, None, None]
    # Three VFs nobody is known to hold, one of which gpu01's pool interface has: two free.
    assert body["free_vfs"] == 2


def test_other_networks_have_no_pool_fields(api, demo_host):
    network = Network.objects.get(host=demo_host, name="default")
    body = api.get(f"/api/networks/{network.pk}/").json()
    assert (body["pf"], body["vfs"], body["free_vfs"]) == (None, None, None)


def test_the_schema_says_the_pool_fields_may_be_null(api, db):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    fields = schema["components"]["schemas"]["NetworkDetail"]["properties"]
    assert [fields[name].get("nullable") for name in ("pf", "vfs", "free_vfs")] == [True, True, True]


def test_the_preview_of_attaching_a_guest_to_a_full_pool_carries_the_warning(api, demo_host):
    """build01 is stopped; web01's config is made to hold two more VFs (as a sync of <hostdev>s
    would record them), so no VF is free."""
    Guest.objects.filter(host=demo_host, name="web01").update(hostdev_addresses=["0000:01:10.2", "0000:01:10.4"])
    url = f"/api/guests/{Guest.objects.get(host=demo_host, name='build01').pk}/interfaces/"
    body = {"source_type": "network", "source": "sriov-pool"}
    preview = api.post(url + "?dry_run=1", body, format="json")
    assert preview.status_code == 200, preview.json()
    expected = (
        "Pool sriov-pool has no free VF (0 of 4): libvirt assigns a VF when the guest starts, so build01 will fail "
        "to start with this interface (a hot-plug fails at once)."
    )
    assert expected in preview.json()["warnings"]
    assert "<model" not in preview.json()["after_xml"]
    accepted = api.post(url, body, format="json")
    assert accepted.status_code == 202
    assert expected in Operation.objects.get(pk=accepted.json()["operation"]["id"]).params["warnings"]


def test_a_model_for_a_pool_interface_is_a_400_naming_model(api, demo_host):
    url = f"/api/guests/{Guest.objects.get(host=demo_host, name='build01').pk}/interfaces/"
    response = api.post(url, {"source_type": "network", "source": "sriov-pool", "model": "e1000"}, format="json")
    assert response.status_code == 400 and "VF pool gives the guest the VF itself" in response.json()["model"][0]
