"""Reading hosts in bulk from libvirt's test driver. No database."""

from networks.hypervisor import client, inventory


def _by_name(items):
    return {item.name: item for item in items}


def test_it_reads_the_builtin_test_host(default_uri):
    found = inventory.read_host(client.connect(default_uri))
    networks = _by_name(found.networks)
    assert networks["default"].forward_mode == "nat"
    assert networks["default"].bridge == "virbr0"
    assert networks["default"].ips[0].address == "192.168.122.1"
    assert networks["default"].ips[0].prefix == 24
    test_guest = _by_name(found.guests)["test"]
    assert test_guest.state == "running"
    assert test_guest.interfaces[0].source == "default"
    assert found.facts.libvirt_version.count(".") == 2


def test_it_reads_every_kind_of_network_in_the_demo_fleet(demo_uri):
    networks = _by_name(inventory.read_host(client.connect(demo_uri)).networks)
    modes = {name: net.forward_mode for name, net in networks.items()}
    assert modes["default"] == "nat"
    assert modes["isolated"] == ""
    assert modes["routed"] == "route"
    assert modes["lan-bridge"] == "bridge"
    assert modes["sriov-pool"] == "hostdev"
    default = networks["default"]
    assert {h.mac for h in default.ips[0].dhcp_hosts} >= {"52:54:00:0a:00:11"}
    assert {r.kind for r in default.dns_records} == {"host", "txt", "srv"}
    assert any(pg.is_default and pg.vlan_tags for pg in default.portgroups)
    dual = networks["dualstack"]
    assert [ip.family for ip in dual.ips] == ["ipv4", "ipv6"]
    assert any(h.host_id or h.name for h in dual.ips[1].dhcp_hosts)
    assert networks["sriov-pool"].forward_interfaces[0].kind == "pf"


def test_it_reads_guest_interfaces_of_every_type(demo_uri):
    guests = _by_name(inventory.read_host(client.connect(demo_uri)).guests)
    assert {g.state for g in guests.values()} >= {"running", "shutoff"}
    gpu = guests["gpu01"]
    hostdev = next(i for i in gpu.interfaces if i.type == "hostdev")
    assert hostdev.source.count(":") == 2 and hostdev.vlan_tags == (42,)
    assert gpu.hostdev_addresses
    nas = guests["nas01"]
    assert nas.interfaces[0].type == "bridge" and nas.interfaces[0].source == "br0"


def test_it_reads_sriov_physical_and_virtual_functions(demo_uri):
    devices = inventory.read_host(client.connect(demo_uri)).devices
    pfs = [d for d in devices if d.vf_addresses]
    assert len(pfs) == 1
    vfs = [d for d in devices if d.pf_address == pfs[0].pci_address]
    assert sorted(vf.pci_address for vf in vfs) == sorted(pfs[0].vf_addresses)
    assert all(vf.iommu_group is not None for vf in vfs)
    assert any(d.capability == "net" and d.net_interface for d in devices)
