"""The XML of an SR-IOV VF pool network, as kvmweb builds it, read back field by field.

The expected shape is the one in libvirt's network format documentation ("hostdev" forward
mode, since 0.10.0): `<forward mode='hostdev' managed='yes'><pf dev='…'/></forward>`, no bridge,
no addresses (libvirt lists the VFs itself once the pool starts).
"""

from networks.hypervisor import xml


def test_a_pool_is_a_hostdev_forward_with_one_pf_and_nothing_else():
    built = xml.build_pool_network_xml(name="sriov-b", pf="ens1f1")
    root = xml.parse(built)
    assert [child.tag for child in root] == ["name", "forward"]
    assert root.findtext("name") == "sriov-b"
    forward = root.find("forward")
    assert dict(forward.attrib) == {"mode": "hostdev", "managed": "yes"}
    assert [(child.tag, dict(child.attrib)) for child in forward] == [("pf", {"dev": "ens1f1"})]


def test_the_pool_parses_back_as_a_hostdev_network_with_its_pf():
    info = xml.parse_network(xml.build_pool_network_xml(name="sriov-b", pf="ens1f1"))
    assert info.name == "sriov-b"
    assert info.forward_mode == "hostdev"
    assert info.bridge == ""
    assert info.ips == ()
    assert [(fi.kind, fi.dev, fi.pci_address) for fi in info.forward_interfaces] == [("pf", "ens1f1", "")]


def test_a_started_pools_vf_addresses_parse_as_pci_addresses_and_are_runtime_state():
    """What libvirt shows once a guest started (the VFs and the connections count)."""
    live = """<network connections='1'>
      <name>sriov-b</name>
      <forward mode='hostdev' managed='yes'>
        <pf dev='ens1f1'/>
        <address type='pci' domain='0x0000' bus='0x01' slot='0x10' function='0x1' connections='1'/>
        <address type='pci' domain='0x0000' bus='0x01' slot='0x10' function='0x3'/>
      </forward>
    </network>"""
    info = xml.parse_network(live)
    assert info.connections == 1
    assert [(fi.kind, fi.pci_address, fi.connections) for fi in info.forward_interfaces] == [
        ("pf", "", None),
        ("address", "0000:01:10.1", 1),
        ("address", "0000:01:10.3", None),
    ]
    bare = xml.without_runtime_state(live)
    assert bare.find("forward/address") is None
    assert bare.find("forward/pf").get("dev") == "ens1f1"
    assert bare.get("connections") is None
