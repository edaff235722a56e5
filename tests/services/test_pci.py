"""Who holds each PCI device of a host, IOMMU group conflicts, free VFs and the passthrough
verdict, read from the mirror of the demo fleet (demo/fleet.xml, test driver). Expected values
are written from that file by hand. The test driver never gives a pool's VF to a guest, so the
rows a real host would show after a guest start are written into the mirror by hand here."""

import pytest

from networks.hypervisor import xml
from networks.models import ForwardInterface, Guest, GuestInterface, Host, Network, NodeDevice
from networks.services import pci, pools
from networks.services.pci import Holder


@pytest.fixture
def gpu01(demo_host):
    return Guest.objects.get(host=demo_host, name="gpu01")


@pytest.fixture
def pool(demo_host):
    return Network.objects.get(host=demo_host, name="sriov-pool")


def test_the_demo_holders_are_gpu01s_devices_the_pool_pf_and_the_hosts_own(demo_host, gpu01):
    assert pci.device_holders(demo_host) == {
        "0000:41:00.0": Holder("guest-hostdev", gpu01.pk, "gpu01", "", "hostdev of gpu01"),
        "0000:01:10.0": Holder("guest-interface", gpu01.pk, "gpu01", "", "hostdev NIC of gpu01"),
        "0000:01:00.0": Holder("pool", None, "", "sriov-pool", "PF of pool sriov-pool"),
        "0000:00:19.0": Holder("host", None, "", "", "host NIC eth0 with address 198.51.100.10/24"),
        "0000:02:00.0": Holder("host", None, "", "", "host NIC eth1 used by network macvtap"),
        "0000:03:00.0": Holder("host", None, "", "", "host disk controller (PCI class 0x010802)"),
        "0000:05:00.0": Holder("host", None, "", "", "host disk controller (PCI class 0x010601)"),
    }


def test_a_stopped_guests_config_still_holds_its_device(demo_host):
    build01 = Guest.objects.get(host=demo_host, name="build01")
    build01.hostdev_addresses = ["0000:01:10.6"]
    build01.save()
    assert pci.device_holders(demo_host)["0000:01:10.6"].detail == "hostdev of build01 (not running)"


def test_a_vf_the_pool_gave_a_guest_is_held_through_the_pool(demo_host, gpu01, pool):
    # What a real host's mirror holds once gpu01 started: the pool's live XML lists its VFs and
    # gpu01's NIC on the pool names the VF it got.
    for address, connections in (("0000:01:10.2", 1), ("0000:01:10.4", 0), ("0000:01:10.6", 0)):
        ForwardInterface.objects.create(network=pool, kind="address", pci_address=address, connections=connections)
    GuestInterface.objects.filter(guest=gpu01, network=pool).update(type="hostdev", source="0000:01:10.2")
    holder = pci.device_holders(demo_host)["0000:01:10.2"]
    assert holder == Holder("pool", gpu01.pk, "gpu01", "sriov-pool", "VF of pool sriov-pool (held by gpu01)")
    assert [address for address, held in pci.pool_vfs(pool)] == ["0000:01:10.2", "0000:01:10.4", "0000:01:10.6"]
    assert pools.pool_state(pool).unplaced_guests == ()  # gpu01's pool NIC names its VF


def test_a_pool_vf_with_a_connection_but_no_known_guest_is_still_held(demo_host, pool):
    ForwardInterface.objects.create(network=pool, kind="address", pci_address="0000:01:10.4", connections=1)
    holder = pci.device_holders(demo_host)["0000:01:10.4"]
    assert holder.kind == "pool" and holder.detail == "VF of pool sriov-pool (held by a guest the mirror does not know)"


def test_before_any_guest_start_the_pool_vfs_are_the_pfs(pool, gpu01):
    assert [(address, held.detail if held else None) for address, held in pci.pool_vfs(pool)] == [
        ("0000:01:10.0", "hostdev NIC of gpu01"),
        ("0000:01:10.2", None),
        ("0000:01:10.4", None),
        ("0000:01:10.6", None),
    ]
    assert pci.pool_pf(pool) == "ens1f0"
    # gpu01 runs with a NIC on the pool, but the test driver never gave it a VF
    assert pools.pool_state(pool).unplaced_guests == ("gpu01",)


def test_free_vfs_leave_out_held_ones(demo_host, pool):
    assert pci.free_vfs(demo_host, "ens1f0") == ["0000:01:10.2", "0000:01:10.4", "0000:01:10.6"]
    ForwardInterface.objects.create(network=pool, kind="address", pci_address="0000:01:10.4", connections=1)
    assert pci.free_vfs(demo_host, "ens1f0") == ["0000:01:10.2", "0000:01:10.6"]
    assert pci.free_vfs(demo_host, "pci_0000_01_00_0") == ["0000:01:10.2", "0000:01:10.6"]


def test_a_pf_without_vfs_or_an_unknown_name_has_no_free_vf(demo_host):
    assert pci.free_vfs(demo_host, "ens1f1") == []
    assert pci.free_vfs(demo_host, "eth0") == []  # not SR-IOV
    assert pci.free_vfs(demo_host, "nope0") == []


def test_a_nic_sharing_its_group_with_the_hosts_sata_controller_conflicts(demo_host):
    assert pci.iommu_group_conflicts(demo_host, "0000:06:00.0") == [
        "0000:05:00.0 shares IOMMU group 12 and is in use: host disk controller (PCI class 0x010601)"
    ]


def test_a_device_alone_in_its_group_has_no_conflict(demo_host):
    assert pci.iommu_group_conflicts(demo_host, "0000:01:10.2") == []
    assert pci.iommu_group_conflicts(demo_host, "0000:41:00.0") == []


def _gpu_audio(host):
    # The GPU's audio function, in the GPU's group: a common shape on real hosts.
    return NodeDevice.objects.create(
        host=host, name="pci_0000_41_00_1", capability="pci", pci_address="0000:41:00.1", iommu_group=60
    )


def test_a_group_member_held_by_another_guest_conflicts(demo_host):
    _gpu_audio(demo_host)
    build01 = Guest.objects.get(host=demo_host, name="build01")
    assert pci.iommu_group_conflicts(demo_host, "0000:41:00.1", for_guest=build01) == [
        "0000:41:00.0 shares IOMMU group 60 and is in use: hostdev of gpu01"
    ]


def test_a_group_member_held_by_the_same_guest_is_no_conflict(demo_host, gpu01):
    _gpu_audio(demo_host)
    assert pci.iommu_group_conflicts(demo_host, "0000:41:00.1", for_guest=gpu01) == []
    assert pci.iommu_group_conflicts(demo_host, "0000:41:00.1", for_guest=gpu01.pk) == []


def test_a_bridge_port_is_the_hosts(demo_host):
    Host.objects.filter(pk=demo_host.pk).update(nic_uses={"ens1f1": "member of bridge br0"})
    demo_host.refresh_from_db()
    assert pci.device_holders(demo_host)["0000:01:00.1"].detail == "host NIC ens1f1 member of bridge br0"


def test_a_disk_controller_without_a_pci_class_is_found_by_its_driver(demo_host):
    device = NodeDevice(host=demo_host, name="x", capability="pci", driver="nvme", xml="<device/>")
    assert pci.storage_controller(device) == (
        "host disk controller (guessed from its driver or product name: no PCI class known)"
    )
    nic = NodeDevice(host=demo_host, name="y", capability="pci", driver="igb", product="I210 Gigabit", xml="")
    assert pci.storage_controller(nic) == ""


@pytest.mark.parametrize(
    ("iommu", "vfio", "verdict"),
    [
        ("yes", "yes", "yes"),
        ("no", "yes", "no"),
        ("yes", "no", "no"),
        ("no", "unknown", "no"),
        ("yes", "unknown", "unknown"),
        ("unknown", "unknown", "unknown"),
    ],
)
def test_the_verdict_needs_both_iommu_and_vfio(demo_host, iommu, vfio, verdict):
    demo_host.iommu_support, demo_host.vfio_support, demo_host.passthrough_note = iommu, vfio, "why"
    assert pci.passthrough_support(demo_host) == (verdict, "why")


def test_a_sync_records_the_demo_hosts_passthrough_facts(demo_host):
    assert (demo_host.iommu_support, demo_host.vfio_support) == ("yes", "unknown")
    assert demo_host.passthrough_note == (
        "IOMMU yes: the node devices list IOMMU groups. "
        "VFIO unknown: this driver cannot report its domain capabilities."
    )
    assert demo_host.nic_uses == {"eth0": "with address 198.51.100.10/24"}
    assert pci.passthrough_support(demo_host)[0] == "unknown"


@pytest.mark.parametrize(
    "live_xml",
    [
        # the pool's NIC as libvirt's formatter writes it live: <source network>, then the VF
        "<interface type='hostdev' managed='yes'><mac address='52:54:00:0e:00:52'/>"
        "<source network='sriov-pool'/><source><address type='pci' domain='0x0000' bus='0x01' slot='0x10'"
        " function='0x4'/></source></interface>",
        # a NIC assigned by address
        "<interface type='hostdev' managed='yes'><source><address type='pci' domain='0x0000' bus='0x01'"
        " slot='0x10' function='0x4'/></source></interface>",
    ],
)
def test_a_hostdev_nic_names_its_vf_whichever_source_holds_it(live_xml):
    assert xml.parse_interface(xml.parse(live_xml)).source == "0000:01:10.4"
