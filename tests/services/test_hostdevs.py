"""Assigning host PCI devices to guests and returning them, on the demo fleet (the test driver).

The hardware path is never exercised here: there is no IOMMU, VFIO or SR-IOV NIC on these
machines, and the test driver cannot attach or detach devices on a running guest. What these
tests prove is kvmweb's side: every check and refusal against the mirror, the XML sent, a
stopped guest's config changed by redefinition, a live change refused with libvirt's own
message, the operation, the audit trail and the mirror afterwards.
"""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from networks.choices import OperationStatus, PassthroughSupport
from networks.hypervisor import client
from networks.models import (
    AuditEvent,
    ForwardInterface,
    Guest,
    GuestInterface,
    Host,
    Network,
    NodeDevice,
    Operation,
)
from networks.services.hostdevs import ATTACH, CONFIG_ONLY, DETACH, guest_hostdev_request, hostdev_plan
from networks.services.hostdevs.checks import assignable_devices
from networks.services.operations import operation_recover_lost
from networks.services.permissions import PermissionDenied
from tests.conftest import run_to_end
from tests.factories import UserFactory

WEB = "web"
GPU = "0000:41:00.0"  # the Tesla T4 gpu01 holds
GPU01_VF = "0000:01:10.0"  # the VF gpu01 holds as an interface
FREE_VF = "0000:01:10.2"
PF_OF_POOL = "0000:01:00.0"  # ens1f0, the PF of sriov-pool
SPARE_PF = "0000:01:00.1"  # ens1f1: no VFs, no network, free
NVME = "0000:03:00.0"  # the host's disk controller
ETH0 = "0000:00:19.0"  # the host NIC the routed network uses
SPARE_NIC = "0000:06:00.0"  # a Realtek NIC in IOMMU group 12 ...
SATA = "0000:05:00.0"  # ... with the host's SATA controller


@pytest.fixture
def no_pool(demo_host):
    """The demo host without its VF pool (sriov-pool gone from the mirror): ens1f0's VFs are
    then free to give a guest directly. While a pool uses them, they are refused."""
    Network.objects.filter(host=demo_host, name="sriov-pool").delete()


def _guest(host, name):
    return Guest.objects.select_related("host").get(host=host, name=name)


def _refused(guest, values, field, action=ATTACH, pci=""):
    """The request is refused on `field` and creates no Operation; returns the message."""
    before = Operation.objects.count()
    with pytest.raises(ValidationError) as refused:
        guest_hostdev_request(action=action, guest=guest, values=values, pci_address=pci, actor=None, source="system")
    assert field in refused.value.message_dict, refused.value.message_dict
    assert Operation.objects.count() == before
    return " ".join(refused.value.message_dict[field])


def _run(guest, values, actor, action=ATTACH, pci=""):
    operation = guest_hostdev_request(action=action, guest=guest, values=values, pci_address=pci, actor=actor,
                                      source=WEB)  # fmt: skip
    return run_to_end(operation.pk)


def _config(demo_uri, name):
    return client.connect(demo_uri).lookupByName(name).XMLDesc(2).replace('"', "'")  # 2: VIR_DOMAIN_XML_INACTIVE


# ---------------------------------------------------------------- a stopped guest, by redefinition


def test_a_stopped_guest_gets_a_vf_as_an_interface_in_its_config(demo_host, no_pool, admin, demo_uri):
    """Test driver: the config is redefined; no VF is programmed (no hardware here)."""
    build01 = _guest(demo_host, "build01")
    values = {"pci_address": FREE_VF, "kind": "interface", "mac": "52:54:00:77:00:01", "vlan": 42}
    finished = _run(build01, values, admin)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    assert finished.result["method"] == "redefine"
    config = _config(demo_uri, "build01")
    assert "<interface type='hostdev' managed='yes'>" in config
    assert "<address type='pci' domain='0x0000' bus='0x01' slot='0x10' function='0x2'/>" in config
    assert "<mac address='52:54:00:77:00:01'/>" in config and "<tag id='42'/>" in config
    row = build01.interfaces.get(mac="52:54:00:77:00:01")
    assert (row.type, row.source, row.vlan_tags) == ("hostdev", FREE_VF, [42])
    done = AuditEvent.objects.get(operation=finished, action="guest.hostdev_attach.succeeded")
    assert done.object_type == "guest" and done.object_name == "build01"
    assert "function='0x2'" not in done.before_xml.replace('"', "'")
    assert "function='0x2'" in done.after_xml.replace('"', "'")


def test_a_stopped_guest_gets_a_hostdev_in_its_config_and_returns_it(demo_host, admin, demo_uri):
    """Test driver: assignment and return by redefinition; no device is bound to vfio-pci."""
    build01 = _guest(demo_host, "build01")
    finished = _run(build01, {"pci_address": SPARE_PF, "managed": False}, admin)
    assert finished.status == OperationStatus.SUCCEEDED, finished.error
    assert "<hostdev mode='subsystem' type='pci' managed='no'>" in _config(demo_uri, "build01")
    build01.refresh_from_db()
    assert build01.hostdev_addresses == [SPARE_PF]

    returned = _run(build01, {}, admin, action=DETACH, pci=SPARE_PF)
    assert returned.status == OperationStatus.SUCCEEDED, returned.error
    assert returned.result["method"] == "redefine"
    assert "<hostdev" not in _config(demo_uri, "build01")
    build01.refresh_from_db()
    assert build01.hostdev_addresses == []
    events = AuditEvent.objects.filter(operation=returned).order_by("pk")
    assert [e.action for e in events] == ["guest.hostdev_detach.requested", "guest.hostdev_detach.succeeded"]
    assert "<hostdev" in events[0].before_xml and "<hostdev" not in events[1].after_xml


def test_a_vf_interface_is_returned_by_its_pci_address(demo_host, no_pool, admin, demo_uri):
    build01 = _guest(demo_host, "build01")
    _run(build01, {"pci_address": FREE_VF, "kind": "interface"}, admin)
    build01.refresh_from_db()  # as its page loads it after the assignment
    returned = _run(build01, {"scope": "config"}, admin, action=DETACH, pci="01:10.2")
    assert returned.status == OperationStatus.SUCCEEDED, returned.error
    assert "type='hostdev'" not in _config(demo_uri, "build01")
    assert not build01.interfaces.filter(type="hostdev").exists()


def test_a_stopped_guest_changes_only_its_config(demo_host, no_pool):
    build01 = _guest(demo_host, "build01")
    for scope in ("live", "both"):
        assert "not running" in _refused(build01, {"pci_address": FREE_VF, "scope": scope}, "scope")
    plan = hostdev_plan(action=ATTACH, guest=build01, values={"pci_address": FREE_VF, "kind": "interface"})
    assert plan.scope == "config" and plan.effect == CONFIG_ONLY


def test_a_live_assignment_on_the_test_driver_fails_with_libvirts_message(demo_host, no_pool, admin, demo_uri):
    """Test driver: it has no device hot-plug at all, so the running guest stays as it was."""
    gpu01 = _guest(demo_host, "gpu01")
    finished = _run(gpu01, {"pci_address": FREE_VF, "kind": "interface"}, admin)
    assert finished.status == OperationStatus.FAILED
    assert "not supported by the connection driver: virDomainAttachDeviceFlags" in finished.error
    assert "function='0x2'" not in client.connect(demo_uri).lookupByName("gpu01").XMLDesc(0)
    assert not gpu01.interfaces.filter(source=FREE_VF).exists()


def test_a_live_return_on_the_test_driver_fails_with_libvirts_message(demo_host, admin):
    gpu01 = _guest(demo_host, "gpu01")
    finished = _run(gpu01, {}, admin, action=DETACH, pci=GPU)
    assert finished.status == OperationStatus.FAILED
    assert "virDomainDetachDeviceFlags" in finished.error
    gpu01.refresh_from_db()
    assert gpu01.hostdev_addresses == [GPU]


# ---------------------------------------------------------------- refusals


def test_a_device_another_guest_holds_is_refused_naming_it(demo_host):
    message = _refused(_guest(demo_host, "build01"), {"pci_address": GPU}, "pci_address")
    assert "already held" in message and "gpu01" in message


def test_a_vf_another_guest_holds_as_an_interface_is_refused(demo_host):
    message = _refused(_guest(demo_host, "build01"), {"pci_address": GPU01_VF, "kind": "interface"}, "pci_address")
    assert "hostdev NIC of gpu01" in message


def test_the_pf_of_a_vf_pool_is_refused_naming_the_pool(demo_host):
    message = _refused(_guest(demo_host, "build01"), {"pci_address": PF_OF_POOL}, "pci_address")
    assert "pool sriov-pool" in message


POOL_REFUSAL = (
    "0000:01:10.2 is a VF of the pool sriov-pool: the pool hands it to the next guest that starts on it, which "
    "would then fail to start. Give the guest an interface on the network sriov-pool instead, or a VF of a PF no "
    "pool uses."
)


@pytest.mark.parametrize("kind", ["interface", "hostdev"])
def test_a_free_vf_of_a_pool_is_refused_naming_the_pool(demo_host, kind):
    """No guest has 10.2 yet, but sriov-pool would give it to the next guest starting on it."""
    message = _refused(_guest(demo_host, "build01"), {"pci_address": FREE_VF, "kind": kind}, "pci_address")
    assert message == POOL_REFUSAL


def test_the_form_leaves_out_a_pools_vfs_and_offers_them_without_the_pool(demo_host):
    vfs, others = assignable_devices(demo_host)
    assert [d.pci_address for d in vfs] == []
    assert [d.pci_address for d in others] == [SPARE_PF, "0000:06:00.0"]
    Network.objects.filter(host=demo_host, name="sriov-pool").delete()
    vfs, others = assignable_devices(demo_host)
    assert [d.pci_address for d in vfs] == ["0000:01:10.2", "0000:01:10.4", "0000:01:10.6"]
    assert [d.pci_address for d in others] == [PF_OF_POOL, SPARE_PF, "0000:06:00.0"]


def test_the_form_reads_which_devices_are_vfs_in_a_fixed_number_of_queries(demo_host, no_pool):
    """Whether a device is a VF is read once for the host, not once per device."""
    with CaptureQueriesContext(connection) as before:
        assignable_devices(demo_host)
    for n in range(5):
        NodeDevice.objects.create(host=demo_host, name=f"pci_0000_0b_00_{n}", capability="pci",
                                  pci_address=f"0000:0b:00.{n}")  # fmt: skip
    with CaptureQueriesContext(connection) as after:
        vfs, others = assignable_devices(demo_host)
    assert len(others) == 8 and len(vfs) == 3
    assert len(after.captured_queries) == len(before.captured_queries)


def test_a_pf_whose_vf_another_guest_holds_is_refused(demo_host):
    # Not a pool's PF any more (the mirror forgets sriov-pool's <pf>): its VF 10.0 is still gpu01's.
    ForwardInterface.objects.filter(network__host=demo_host, network__name="sriov-pool").delete()
    message = _refused(_guest(demo_host, "build01"), {"pci_address": PF_OF_POOL}, "pci_address")
    assert "SR-IOV PF whose VFs go with it" in message and f"{GPU01_VF} (hostdev NIC of gpu01)" in message


def test_a_device_the_guest_holds_already_is_refused(demo_host):
    message = _refused(_guest(demo_host, "gpu01"), {"pci_address": GPU, "scope": "config"}, "pci_address")
    assert "gpu01 already holds" in message


def test_the_hosts_disk_controller_and_nic_are_refused(demo_host):
    build01 = _guest(demo_host, "build01")
    assert "host disk controller" in _refused(build01, {"pci_address": NVME}, "pci_address")
    assert "host NIC eth0" in _refused(build01, {"pci_address": ETH0}, "pci_address")


def test_an_iommu_group_shared_with_the_hosts_disk_controller_is_refused(demo_host):
    # The demo's spare Realtek NIC shares IOMMU group 12 with the host's SATA controller.
    message = _refused(_guest(demo_host, "build01"), {"pci_address": SPARE_NIC}, "pci_address")
    assert "IOMMU group" in message and SATA in message and "host disk controller" in message


def test_an_iommu_group_shared_with_another_guests_device_is_refused(demo_host, no_pool):
    NodeDevice.objects.filter(host=demo_host, pci_address=FREE_VF).update(iommu_group=60)  # the GPU's group
    message = _refused(_guest(demo_host, "build01"), {"pci_address": FREE_VF, "kind": "interface"}, "pci_address")
    assert GPU in message and "gpu01" in message


def test_a_host_without_iommu_is_refused_with_the_reason_before_any_check_of_the_device(demo_host):
    Host.objects.filter(pk=demo_host.pk).update(
        iommu_support=PassthroughSupport.NO, passthrough_note="the kernel runs without intel_iommu=on"
    )
    build01 = _guest(demo_host, "build01")
    message = _refused(build01, {"pci_address": FREE_VF, "kind": "interface"}, "non_field_errors")
    assert "cannot assign PCI devices" in message and "intel_iommu=on" in message


def test_a_pci_address_of_no_device_of_the_host_is_refused(demo_host):
    other = Host.objects.create(name="kvm2", uri="test:///default")
    NodeDevice.objects.create(host=other, name="pci_0000_0a_00_0", capability="pci", pci_address="0000:0a:00.0")
    message = _refused(_guest(demo_host, "build01"), {"pci_address": "0000:0a:00.0"}, "pci_address")
    assert "Host demo has no PCI device 0000:0a:00.0" in message


@pytest.mark.parametrize("bad", ["05:00", "0000:01:10.8", "0000:01:20.0", "eth0", ["0000:01:10.2"], 7, True])
def test_a_malformed_pci_address_is_refused(demo_host, bad):
    assert _refused(_guest(demo_host, "build01"), {"pci_address": bad}, "pci_address")


def test_kind_interface_on_a_device_that_is_not_a_vf_is_refused(demo_host):
    message = _refused(_guest(demo_host, "build01"), {"pci_address": SPARE_PF, "kind": "interface"}, "kind")
    assert "not an SR-IOV virtual function" in message


def test_an_unknown_kind_is_refused(demo_host):
    assert "hostdev, interface" in _refused(_guest(demo_host, "build01"), {"pci_address": FREE_VF, "kind": "nic"},
                                            "kind")  # fmt: skip


def test_802_1qbg_is_refused_saying_libvirt_does_not_support_it_there(demo_host, no_pool):
    values = {"pci_address": FREE_VF, "kind": "interface", "virtualport": "802.1Qbg", "profileid": "x"}
    message = _refused(_guest(demo_host, "build01"), values, "virtualport")
    assert "libvirt does not support 802.1Qbg" in message


def test_an_802_1qbh_profile_is_written(demo_host, no_pool):
    values = {"pci_address": FREE_VF, "kind": "interface", "virtualport": "802.1Qbh", "profileid": "finance"}
    plan = hostdev_plan(action=ATTACH, guest=_guest(demo_host, "build01"), values=values)
    assert '<virtualport type="802.1Qbh">' in plan.device_xml and 'profileid="finance"' in plan.device_xml


def test_a_port_profile_needs_its_profileid(demo_host, no_pool):
    values = {"pci_address": FREE_VF, "kind": "interface", "virtualport": "802.1Qbh"}
    assert "profileid" in _refused(_guest(demo_host, "build01"), values, "profileid")


def test_a_virtualport_other_than_802_1qbh_is_refused(demo_host, no_pool):
    values = {"pci_address": FREE_VF, "kind": "interface", "virtualport": "openvswitch", "profileid": "x"}
    message = _refused(_guest(demo_host, "build01"), values, "virtualport")
    assert message == "'openvswitch': only 802.1Qbh is accepted here."


def test_a_profileid_that_is_not_ascii_is_refused(demo_host, no_pool):
    values = {"pci_address": FREE_VF, "kind": "interface", "virtualport": "802.1Qbh", "profileid": "finanzbüro"}
    assert _refused(_guest(demo_host, "build01"), values, "profileid") == "A port profile id is ASCII text."


def test_a_profileid_longer_than_libvirts_39_characters_is_refused(demo_host, no_pool):
    values = {"pci_address": FREE_VF, "kind": "interface", "virtualport": "802.1Qbh", "profileid": "p" * 40}
    assert _refused(_guest(demo_host, "build01"), values, "profileid") == "At most 39 characters."
    values["profileid"] = "p" * 39
    plan = hostdev_plan(action=ATTACH, guest=_guest(demo_host, "build01"), values=values)
    assert f'profileid="{"p" * 39}"' in plan.device_xml


@pytest.mark.parametrize("field", ["mac", "vlan", "profileid"])
def test_interface_settings_on_a_bare_hostdev_are_refused(demo_host, field):
    values = {"pci_address": FREE_VF, "kind": "hostdev", field: {"mac": "52:54:00:00:00:09"}.get(field, "7")}
    assert "kind interface" in _refused(_guest(demo_host, "build01"), values, field)


@pytest.mark.parametrize(("vlan", "field"), [(4096, "vlan"), ("x", "vlan"), ([1], "vlan"), ({}, "vlan")])
def test_a_bad_vlan_is_refused(demo_host, no_pool, vlan, field):
    values = {"pci_address": FREE_VF, "kind": "interface", "vlan": vlan}
    assert _refused(_guest(demo_host, "build01"), values, field)


def test_a_bad_managed_value_and_unknown_fields_are_refused(demo_host):
    build01 = _guest(demo_host, "build01")
    assert _refused(build01, {"pci_address": FREE_VF, "managed": "maybe"}, "managed")
    assert "Unknown field" in _refused(build01, {"pci_address": FREE_VF, "colour": "red"}, "non_field_errors")
    assert _refused(build01, [FREE_VF], "non_field_errors")


def test_returning_a_device_the_guest_does_not_hold_is_refused(demo_host):
    message = _refused(_guest(demo_host, "build01"), {}, "pci_address", action=DETACH, pci=FREE_VF)
    assert "build01 holds no PCI device 0000:01:10.2" in message


# ---------------------------------------------------------------- MACs and the VF warning


def test_an_empty_mac_gets_a_free_one_in_52_54_00(demo_host, no_pool):
    plan = hostdev_plan(action=ATTACH, guest=_guest(demo_host, "build01"),
                        values={"pci_address": FREE_VF, "kind": "interface", "mac": ""})  # fmt: skip
    assert plan.mac.startswith("52:54:00:") and len(plan.mac) == 17
    assert not GuestInterface.objects.filter(mac=plan.mac).exists()
    assert f'<mac address="{plan.mac}"/>' in plan.device_xml


def test_a_typed_mac_is_normalised(demo_host, no_pool):
    plan = hostdev_plan(action=ATTACH, guest=_guest(demo_host, "build01"),
                        values={"pci_address": FREE_VF, "kind": "interface", "mac": "52-54-00-AB-CD-EF"})  # fmt: skip
    assert plan.mac == "52:54:00:ab:cd:ef"


def test_a_mac_another_guest_uses_is_refused(demo_host, no_pool):
    values = {"pci_address": FREE_VF, "kind": "interface", "mac": "52:54:00:0E:00:51"}
    assert "gpu01" in _refused(_guest(demo_host, "build01"), values, "mac")


def test_a_multicast_mac_is_refused(demo_host, no_pool):
    values = {"pci_address": FREE_VF, "kind": "interface", "mac": "01:00:5e:00:00:01"}
    assert "multicast" in _refused(_guest(demo_host, "build01"), values, "mac")


def test_a_typed_vf_mac_that_a_dhcp_reservation_names_is_accepted_with_a_warning(demo_host, no_pool):
    values = {"pci_address": FREE_VF, "kind": "interface", "mac": "52:54:00:0A:00:12"}
    plan = hostdev_plan(action=ATTACH, guest=_guest(demo_host, "build01"), values=values)
    assert plan.mac == "52:54:00:0a:00:12"
    assert "52:54:00:0a:00:12 has a DHCP reservation (for web02) on default@demo: it gets 192.168.122.12 there." in (
        plan.warnings
    )


def test_a_vf_given_as_a_bare_hostdev_is_warned_about_its_mac(demo_host, no_pool):
    plan = hostdev_plan(action=ATTACH, guest=_guest(demo_host, "build01"), values={"pci_address": FREE_VF})
    assert any("new random MAC after each host reboot" in warning for warning in plan.warnings)
    assert plan.suggests_interface
    other = hostdev_plan(action=ATTACH, guest=_guest(demo_host, "build01"), values={"pci_address": SPARE_PF})
    assert not other.suggests_interface


# ---------------------------------------------------------------- roles, locks, a device taken meanwhile


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_an_admin_may_assign_or_return_and_a_refusal_is_audited(demo_host, role):
    user = UserFactory(username="carol", role=role)
    gpu01 = _guest(demo_host, "gpu01")
    with pytest.raises(PermissionDenied, match="admin"):
        guest_hostdev_request(action=ATTACH, guest=gpu01, values={"pci_address": FREE_VF}, actor=user, source=WEB)
    with pytest.raises(PermissionDenied, match="admin"):
        guest_hostdev_request(action=DETACH, guest=gpu01, values={}, pci_address=GPU, actor=user, source=WEB)
    denied = sorted(AuditEvent.objects.filter(actor_name="carol").values_list("action", flat=True))
    assert denied == ["guest.hostdev_attach.denied", "guest.hostdev_detach.denied"]
    assert not Operation.objects.filter(kind__startswith="guest.").exists()


def test_the_operation_locks_the_host_and_records_the_guest_xml(demo_host, admin):
    build01 = _guest(demo_host, "build01")
    operation = guest_hostdev_request(action=ATTACH, guest=build01, values={"pci_address": SPARE_PF}, actor=admin,
                                      source=WEB)  # fmt: skip
    assert operation.lock_key == f"host:{demo_host.pk}" and operation.target_name == "build01"
    requested = AuditEvent.objects.get(operation=operation, action="guest.hostdev_attach.requested")
    assert requested.before_xml == build01.xml and requested.object_type == "guest"


def test_a_device_taken_between_request_and_run_is_refused_by_the_worker(demo_host, no_pool, admin):
    first = guest_hostdev_request(action=ATTACH, guest=_guest(demo_host, "build01"), actor=admin, source=WEB,
                                  values={"pci_address": FREE_VF, "kind": "interface"})  # fmt: skip
    second = guest_hostdev_request(action=ATTACH, guest=_guest(demo_host, "web01"), actor=admin, source=WEB,
                                   values={"pci_address": FREE_VF, "kind": "interface", "scope": "config"})  # fmt: skip
    assert run_to_end(first.pk).status == OperationStatus.SUCCEEDED
    refused = run_to_end(second.pk)
    assert refused.status == OperationStatus.FAILED
    assert "taken meanwhile" in refused.error and "build01" in refused.error


def test_a_pool_created_between_request_and_run_is_refused_by_the_worker(demo_host, admin):
    """10.2 was free when asked for; then a pool came to hand out ens1f0's VFs (as a sync of
    sriov-pool would record it)."""
    pool = Network.objects.get(host=demo_host, name="sriov-pool")
    pf = ForwardInterface.objects.get(network=pool, kind="pf")
    pf.delete()
    operation = guest_hostdev_request(action=ATTACH, guest=_guest(demo_host, "build01"), actor=admin, source=WEB,
                                      values={"pci_address": FREE_VF, "kind": "interface"})  # fmt: skip
    pf.save()
    refused = run_to_end(operation.pk)
    assert refused.status == OperationStatus.FAILED
    assert refused.error == POOL_REFUSAL


def test_a_device_of_the_iommu_group_taken_between_request_and_run_is_refused_by_the_worker(demo_host, admin):
    """The spare PF ens1f1 shares a group with the GPU here; the GPU was free when asked for,
    then web01's config took it."""
    Guest.objects.filter(host=demo_host, name="gpu01").update(hostdev_addresses=[])
    NodeDevice.objects.filter(host=demo_host, pci_address=SPARE_PF).update(iommu_group=60)  # the GPU's group
    operation = guest_hostdev_request(action=ATTACH, guest=_guest(demo_host, "build01"), actor=admin, source=WEB,
                                      values={"pci_address": SPARE_PF})  # fmt: skip
    Guest.objects.filter(host=demo_host, name="web01").update(hostdev_addresses=[GPU])
    refused = run_to_end(operation.pk)
    assert refused.status == OperationStatus.FAILED
    assert refused.error == (
        f"{SPARE_PF} cannot be assigned any more: its IOMMU group goes to the guest whole, and devices of it have "
        f"been taken meanwhile: {GPU} shares IOMMU group 60 and is in use: hostdev of web01"
    )


def test_a_lost_worker_is_recovered_by_reading_the_guest(demo_host, admin, demo_uri):
    """The worker died after its device call (here: the call made by hand, then the row left running)."""
    build01 = _guest(demo_host, "build01")
    operation = guest_hostdev_request(action=ATTACH, guest=build01, values={"pci_address": SPARE_PF}, actor=admin,
                                      source=WEB)  # fmt: skip
    conn = client.connect(demo_uri)
    conn.defineXML(_config(demo_uri, "build01").replace("</devices>", operation.params["device_xml"] + "</devices>"))
    stale = timezone.now() - timedelta(minutes=5)
    Operation.objects.filter(pk=operation.pk).update(
        status=OperationStatus.RUNNING, started_at=stale, heartbeat_at=stale, checkpoint={"device_call": "attach"}
    )
    assert operation_recover_lost(stale_after=timedelta(seconds=30)) == 1
    operation.refresh_from_db()
    assert operation.status == OperationStatus.SUCCEEDED, operation.error
    assert operation.result["completed"] is True and "config" in operation.result["recovery"]
    build01.refresh_from_db()
    assert build01.hostdev_addresses == [SPARE_PF]


@pytest.fixture
def _not_enqueued(monkeypatch):
    """Committed operations stay queued (no broker here)."""
    from networks.services import operations

    monkeypatch.setattr(operations, "enqueue", lambda operation: None)


@pytest.mark.django_db(transaction=True)
def test_two_vf_interfaces_asking_for_one_mac_at_the_same_time_queue_one_operation(
    _not_enqueued, demo_host, no_pool, admin, monkeypatch
):
    """Both requests are held for a second between the MAC check and the Operation: the
    second waits for the first's transaction (the MAC lock), then sees its operation. Only
    PostgreSQL can show the race; SQLite serialises writers anyway."""
    import threading
    import time

    from networks.services import macs

    checked = macs.check_mac_free

    def slow_check(*args, **kwargs):
        checked(*args, **kwargs)
        time.sleep(1.0)  # the window another request would slip through

    monkeypatch.setattr(macs, "check_mac_free", slow_check)
    build01 = _guest(demo_host, "build01")
    start, outcomes = threading.Barrier(2), []

    def attach(vf):
        try:
            start.wait()
            values = {"pci_address": vf, "kind": "interface", "mac": "52:54:00:77:00:09", "scope": "config"}
            guest_hostdev_request(action=ATTACH, guest=build01, values=values, actor=admin, source=WEB)
            outcomes.append("queued")
        except ValidationError as error:
            outcomes.append(" ".join(error.message_dict["mac"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=attach, args=(vf,)) for vf in (FREE_VF, "0000:01:10.4")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    queued = Operation.objects.get(params__mac="52:54:00:77:00:09")
    assert sorted(outcomes) == [
        f"MAC 52:54:00:77:00:09 is being added to guest build01 on host demo by operation #{queued.pk} (queued).",
        "queued",
    ]
