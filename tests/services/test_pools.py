"""SR-IOV VF pool networks on the demo fleet (the test driver): creating one, its refusals,
what the pool's page counts, and the warnings before a guest takes one of its VFs.

The demo host has the PF ens1f0 with 4 VFs (0000:01:10.0, .2, .4, .6) behind the pool
sriov-pool, the PF ens1f1 (SR-IOV capable, 0 VFs enabled), and gpu01 running with the VF
0000:01:10.0 as its own hostdev NIC plus one interface on sriov-pool. The test driver starts a
hostdev network without looking at the PF and never says which VF a guest got, so no VF is
ever bound to vfio-pci here: the hardware path (libvirt picking and binding a VF at guest
start) is not exercised by these tests.
"""

import pytest
from django.core.exceptions import ValidationError

from networks.choices import AuditSource, OperationStatus
from networks.hypervisor import client
from networks.models import Guest, Network, Operation
from networks.services import create, pools
from networks.services.interfaces import ADD, guest_interface_request, interface_plan
from tests.conftest import run_to_end

WEB = AuditSource.WEB


def _refused_create(host, field, **values):
    before = Operation.objects.count()
    with pytest.raises(ValidationError) as refused:
        create.network_request_create(host=host, actor=None, source="system", **values)
    assert field in refused.value.message_dict, refused.value.message_dict
    assert Operation.objects.count() == before
    return " ".join(refused.value.message_dict[field])


def _guest(host, name):
    return Guest.objects.select_related("host").get(host=host, name=name)


def _hold(host, guest_name, *addresses):
    """Record in the mirror that a stopped guest's config holds these VFs as <hostdev>s, as a
    sync of such a guest would."""
    Guest.objects.filter(host=host, name=guest_name).update(hostdev_addresses=list(addresses))


def _pool(host):
    return Network.objects.get(host=host, name="sriov-pool")


# ---------------------------------------------------------------- creating a pool: refusals


def test_a_pool_needs_a_pf(demo_host):
    message = _refused_create(demo_host, "pf", name="pool2", mode="hostdev")
    assert "Pick the SR-IOV physical function" in message


def test_a_pool_on_an_interface_that_is_not_an_sriov_pf_is_refused(demo_host):
    message = _refused_create(demo_host, "pf", name="pool2", mode="hostdev", pf="eth0")
    assert message == "'eth0' is not an SR-IOV physical function of demo (its SR-IOV PFs: ens1f0, ens1f1)."


def test_a_pool_on_a_pf_the_host_does_not_have_is_refused(demo_host):
    message = _refused_create(demo_host, "pf", name="pool2", mode="hostdev", pf="ens9f9")
    assert "'ens9f9' is not an SR-IOV physical function of demo" in message


def test_a_pool_on_a_pf_another_pool_uses_is_refused_naming_that_pool(demo_host):
    message = _refused_create(demo_host, "pf", name="pool2", mode="hostdev", pf="ens1f0")
    assert message == "ens1f0 already backs the VF pool sriov-pool on demo: one pool per PF."


def test_a_pool_on_a_pf_a_guest_holds_is_refused_naming_the_guest(demo_host):
    _hold(demo_host, "build01", "0000:01:00.1")  # ens1f1, as build01's <hostdev>
    message = _refused_create(demo_host, "pf", name="pool2", mode="hostdev", pf="ens1f1")
    assert message == (
        "ens1f1 (0000:01:00.1) is assigned to a guest: hostdev of build01 (not running). Its VFs cannot be handed "
        "out while the guest holds the PF; return it first."
    )


def test_a_pf_that_is_not_an_interface_name_is_refused(demo_host):
    message = _refused_create(demo_host, "pf", name="pool2", mode="hostdev", pf="ens1f0'/><x")
    assert "is not a network interface name" in message


# ---------------------------------------------------------------- creating a pool


def test_the_plan_of_a_pool_on_a_pf_without_vfs_warns_that_it_cannot_start(demo_host):
    plan = create.network_create_plan(host=demo_host, values={"name": "pool2", "mode": "hostdev", "pf": "ens1f1"})
    assert '<forward mode="hostdev" managed="yes">' in plan.xml and '<pf dev="ens1f1"/>' in plan.xml
    assert plan.warnings == (
        "ens1f1 has no VFs enabled: the network is defined but libvirt cannot start it until VFs are enabled "
        "on demo (sriov_numvfs).",
    )


def test_the_plan_warns_of_vfs_that_guests_hold_directly(demo_host):
    """Without sriov-pool, ens1f0 is free for a new pool; gpu01 holds its VF 0000:01:10.0."""
    _pool(demo_host).delete()
    plan = create.network_create_plan(host=demo_host, values={"name": "pool2", "mode": "hostdev", "pf": "ens1f0"})
    assert len(plan.warnings) == 1
    assert plan.warnings[0].startswith("1 of ens1f0's VFs (0000:01:10.0) are already held by guests directly")


def test_a_pool_is_created_and_mirrored_with_its_pf(demo_host, admin, demo_uri):
    """The test driver starts it without checking the PF (a real daemon would refuse: see
    tests/realvirt/test_hostdev_pool_real.py)."""
    operation = create.network_request_create(host=demo_host, actor=admin, source=WEB, name="pool2", mode="hostdev",
                                              pf="ens1f1")  # fmt: skip
    assert operation.params["keep_defined"] is True
    finished = run_to_end(operation.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    network = Network.objects.get(host=demo_host, name="pool2")
    assert network.forward_mode == "hostdev" and network.bridge == ""
    assert list(network.forward_interfaces.values_list("kind", "dev")) == [("pf", "ens1f1")]
    assert "<pf dev='ens1f1'/>" in client.connect(demo_uri).networkLookupByName("pool2").XMLDesc(0)
    assert pools.pool_of_pf(demo_host, "ens1f1") == network


def test_the_create_form_lists_only_sriov_pfs_and_marks_the_one_in_use(demo_host):
    choices = pools.pf_choices(demo_host)
    assert [(c.name, c.pool) for c in choices] == [("ens1f0", "sriov-pool"), ("ens1f1", "")]
    assert choices[0].label == "ens1f0 (0000:01:00.0, 4 of 63 VFs enabled)"


# ---------------------------------------------------------------- the pool's state


def test_the_pool_counts_the_vf_gpu01_holds_directly_and_the_one_its_pool_interface_has(demo_host):
    state = pools.pool_state(_pool(demo_host))
    assert state.pf == "ens1f0"
    assert [vf.pci_address for vf in state.vfs] == ["0000:01:10.0", "0000:01:10.2", "0000:01:10.4", "0000:01:10.6"]
    assert state.vfs[0].holder.guest_name == "gpu01" and state.vfs[0].holder.detail == "hostdev NIC of gpu01"
    assert [vf.free for vf in state.vfs[1:]] == [True, True, True]
    # gpu01's pool interface holds one of the three, the test driver does not say which.
    assert state.unplaced_guests == ("gpu01",)
    assert (state.total, state.unassigned, state.free) == (4, 3, 2)
    assert state.from_live_xml is False


# ---------------------------------------------------------------- a guest joins the pool


POOL_NIC = {"source_type": "network", "source": "sriov-pool"}


def test_a_pool_interface_has_no_model_and_no_warning_while_two_vfs_are_free(demo_host):
    plan = interface_plan(action=ADD, guest=_guest(demo_host, "build01"), values=dict(POOL_NIC))
    assert "<model" not in plan.after_xml and '<source network="sriov-pool"/>' in plan.after_xml
    assert not [w for w in plan.warnings if "VF" in w]


def test_taking_the_last_free_vf_warns(demo_host):
    _hold(demo_host, "build01", "0000:01:10.2")
    plan = interface_plan(action=ADD, guest=_guest(demo_host, "build01"), values=dict(POOL_NIC))
    assert "This takes the pool's last free VF (sriov-pool: 1 of 4 free)." in plan.warnings


def test_joining_a_pool_without_a_free_vf_warns_that_the_guest_will_not_start(demo_host):
    _hold(demo_host, "build01", "0000:01:10.2", "0000:01:10.4")
    plan = interface_plan(action=ADD, guest=_guest(demo_host, "build01"), values=dict(POOL_NIC))
    assert (
        "Pool sriov-pool has no free VF (0 of 4): libvirt assigns a VF when the guest starts, so build01 will "
        "fail to start with this interface (a hot-plug fails at once)."
    ) in plan.warnings


def test_a_model_on_a_pool_interface_is_refused(demo_host):
    guest = _guest(demo_host, "build01")
    with pytest.raises(ValidationError) as refused:
        guest_interface_request(action=ADD, guest=guest, values={**POOL_NIC, "model": "virtio"}, actor=None,
                                source="system")  # fmt: skip
    assert "VF pool gives the guest the VF itself" in refused.value.message_dict["model"][0]
    assert not Operation.objects.filter(kind="guest.interface_add").exists()


def test_a_bandwidth_limit_on_a_pool_interface_is_refused(demo_host):
    guest = _guest(demo_host, "build01")
    with pytest.raises(ValidationError) as refused:
        guest_interface_request(action=ADD, guest=guest, values={**POOL_NIC, "inbound": {"average": 1000}},
                                actor=None, source="system")  # fmt: skip
    assert "bandwidth settings are not supported for hostdev interfaces" in refused.value.message_dict["inbound"][0]
    assert not Operation.objects.filter(kind="guest.interface_add").exists()


def test_moving_an_interface_onto_a_full_pool_warns(demo_host):
    _hold(demo_host, "build01", "0000:01:10.2", "0000:01:10.4")
    build01 = _guest(demo_host, "build01")
    mac = build01.interfaces.get().mac
    plan = interface_plan(action="update", guest=build01, values={"source": "sriov-pool"}, mac=mac)
    assert any(w.startswith("Pool sriov-pool has no free VF (0 of 4)") for w in plan.warnings)


def test_moving_an_interface_onto_a_pool_drops_its_model(demo_host):
    """build01's NIC on default is a virtio one; on the pool the guest drives the VF itself."""
    build01 = _guest(demo_host, "build01")
    mac = build01.interfaces.get().mac
    assert build01.interfaces.get().model == "virtio"
    plan = interface_plan(action="update", guest=build01, values={"source": "sriov-pool"}, mac=mac)
    assert "<model" not in plan.after_xml and '<source network="sriov-pool"/>' in plan.after_xml
    assert plan.changes["model"] == ""


def test_a_stopped_guest_is_added_to_the_pool_by_redefinition(demo_host, admin, demo_uri):
    operation = guest_interface_request(action=ADD, guest=_guest(demo_host, "build01"), values=dict(POOL_NIC),
                                        actor=admin, source=WEB)  # fmt: skip
    finished = run_to_end(operation.pk)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    config = client.connect(demo_uri).lookupByName("build01").XMLDesc(0)
    assert "<source network='sriov-pool'/>" in config
    row = _guest(demo_host, "build01").interfaces.get(mac=finished.params["mac"])
    assert (row.network.name, row.model) == ("sriov-pool", "")


def test_a_stopped_guest_on_a_full_pool_is_warned_about_on_its_page_data(demo_host, admin):
    run_to_end(
        guest_interface_request(action=ADD, guest=_guest(demo_host, "build01"), values=dict(POOL_NIC),
                                actor=admin, source=WEB).pk
    )  # fmt: skip
    _hold(demo_host, "web01", "0000:01:10.2", "0000:01:10.4")
    assert pools.start_warnings(_guest(demo_host, "build01")) == (
        "Pool sriov-pool has no free VF (0 of 4): build01 has an interface on it and will fail to start until "
        "a VF is returned.",
    )
    assert pools.start_warnings(_guest(demo_host, "gpu01")) == ()  # running: it already has its VF
