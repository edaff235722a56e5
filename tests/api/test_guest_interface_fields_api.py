"""The API shows every mirrored field of a guest's interfaces."""


def _interfaces(api, name: str) -> dict[str, dict]:
    (guest,) = api.get("/api/guests/", {"name": name}).json()["results"]
    return {iface["mac"]: iface for iface in guest["interfaces"]}


def test_a_guests_interfaces_carry_link_bandwidth_pci_address_and_agent_addresses(api, demo_host):
    web01 = _interfaces(api, "web01")
    prod = web01["52:54:00:0a:00:11"]
    assert prod["bandwidth"] == {
        "inbound": {"average": 2048, "peak": 4096, "burst": 1024},
        "outbound": {"average": 1024},
    }
    assert (prod["pci_address"], prod["link_state"], prod["agent_addresses"]) == ("0000:00:03.0", "", [])
    assert web01["52:54:00:0a:01:11"]["link_state"] == "down"


def test_a_macvtap_interface_carries_its_mode(api, demo_host):
    macvtap = _interfaces(api, "nas01")["52:54:00:0d:01:61"]
    assert (macvtap["type"], macvtap["source"], macvtap["source_mode"]) == ("direct", "ens1f1", "vepa")
