"""The topology pictures: what a user sees on them, where their boxes lead, and that they stay
readable and cheap for big hosts and fleets."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from lxml import etree

from networks.models import (
    DhcpLease,
    DhcpRange,
    Guest,
    GuestInterface,
    Host,
    Network,
    NetworkIp,
    NodeDevice,
    PortForward,
)
from networks.topology import host as host_topology
from tests.factories import HostFactory
from tests.views.test_global_search import scoped_client

pytestmark = pytest.mark.django_db

SVG = "{http://www.w3.org/2000/svg}"


def picture(client, url):
    response = client.get(url)
    assert response.status_code == 200
    page = response.content.decode()
    markup = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    return etree.fromstring(markup, etree.XMLParser(resolve_entities=False, no_network=True))


def boxes(root) -> dict[str, dict]:
    """Each box by its key: where it links, its tooltip, its texts (own rows and row links)."""
    found = {}
    for element in root.iter(f"{SVG}a", f"{SVG}g"):
        key = element.get("data-key")
        if key:
            found[key] = {
                "href": element.get("href"),
                "title": element.findtext(f"{SVG}title"),
                "texts": [text.text for text in element.iter(f"{SVG}text")],
                "class": element.get("class"),
            }
    return found


def edges(root) -> set[tuple[str, str]]:
    found = set()
    for path in root.iter(f"{SVG}path"):
        source, target = path.get("data-edge").split()
        found.add((source, target))
    return found


def row_links(root) -> dict[str, str]:
    return {a.findtext(f"{SVG}title"): a.get("href") for a in root.iter(f"{SVG}a") if a.get("class") == "row-link"}


def host_url(host) -> str:
    return reverse("networks:host_topology", args=[host.pk])


# ---------------------------------------------------------------- the demo host


def test_every_network_and_guest_of_the_demo_host_is_a_link_to_its_page(logged_in, demo_host):
    drawn = boxes(picture(logged_in, host_url(demo_host)))
    hrefs = {box["href"] for box in drawn.values()}
    for network in Network.objects.filter(host=demo_host):
        assert f"/networks/{network.pk}/" in hrefs, network.name
    for guest in Guest.objects.filter(host=demo_host):
        assert f"/guests/{guest.pk}/" in hrefs, guest.name
    uplinks = [box for key, box in drawn.items() if key.startswith("nic:")]
    assert sorted(box["texts"][0] for box in uplinks) == ["ens1f0", "ens1f1", "eth0", "eth1"]
    assert {box["href"] for box in uplinks} == {f"/hosts/{demo_host.pk}/passthrough/"}


def test_the_demo_host_s_edges_join_uplinks_networks_and_guest_interfaces(logged_in, demo_host):
    root = picture(logged_in, host_url(demo_host))
    names = {key: box["title"].split(": ")[0] for key, box in boxes(root).items()}  # "eth0: with address …"
    joined = {(names[source], names[target]) for source, target in edges(root)}
    assert joined == {
        ("eth0", "routed"),  # <forward mode='route' dev='eth0'>
        ("eth1", "macvtap"),  # macvtap over eth1
        ("ens1f0", "sriov-pool"),  # the pool's PF
        ("default", "web01"),
        ("isolated", "web01"),
        ("default", "ci01"),
        ("dualstack", "db01"),
        ("routed", "build01"),
        ("sriov-pool", "gpu01"),  # its pool interface and its VF as hostdev
        ("macvtap", "mon01"),
        ("lan-bridge", "nas01"),  # <interface type='bridge'> on br0, the bridge of lan-bridge
        ("ens1f1", "nas01"),  # <interface type='direct'> on ens1f1
    }


def test_the_demo_pool_lists_its_vfs_and_who_holds_them(logged_in, demo_host):
    root = picture(logged_in, host_url(demo_host))
    gpu01 = Guest.objects.get(host=demo_host, name="gpu01")
    links = row_links(root)
    assert links["VF 0000:01:10.0 → gpu01"] == f"/guests/{gpu01.pk}/"
    assert links["VF 0000:01:10.2 free"] == f"/hosts/{demo_host.pk}/passthrough/"


def test_the_host_page_links_to_its_topology(logged_in, demo_host):
    page = logged_in.get(demo_host.get_absolute_url()).content.decode()
    assert f'href="{host_url(demo_host)}"' in page


# ---------------------------------------------------------------- a host built row by row


def network(host, name, subnet="10.1.0.1/24", **fields):
    net = Network.objects.create(host=host, name=name, active=True, forward_mode="nat", **fields)
    address, prefix = subnet.split("/")
    ip = NetworkIp.objects.create(network=net, position=0, address=address, prefix=int(prefix), family="ipv4")
    return net, ip


def guests_on(net, count, prefix="vm", first=0):
    made = []
    for n in range(first, first + count):
        guest = Guest.objects.create(host=net.host, name=f"{prefix}{n:03d}", state="running")
        mac = f"52:54:00:{n // 65536:02x}:{n // 256 % 256:02x}:{n % 256:02x}"
        GuestInterface.objects.create(guest=guest, position=0, type="network", mac=mac, source=net.name, network=net)
        made.append(guest)
    return made


def test_a_network_with_many_guests_shows_a_few_and_links_to_the_rest(logged_in):
    host = HostFactory(name="big", status="reachable")
    busy, _ = network(host, "busy")
    quiet, _ = network(host, "quiet", "10.2.0.1/24")
    guests_on(busy, 20)
    guests_on(quiet, 3, prefix="q")
    drawn = boxes(picture(logged_in, host_url(host)))
    guest_names = sorted(box["title"] for key, box in drawn.items() if key.startswith("guest:"))
    assert guest_names == ["q000", "q001", "q002", "vm000", "vm001", "vm002", "vm003", "vm004", "vm005"]
    (more,) = [box for key, box in drawn.items() if key.startswith("more:")]
    assert more["texts"] == ["+ 14 more guests"] and more["href"] == f"/networks/{busy.pk}/"


def test_a_network_at_the_limit_shows_every_guest(logged_in):
    host = HostFactory(name="eight", status="reachable")
    net, _ = network(host, "lan")
    guests_on(net, 8)
    drawn = boxes(picture(logged_in, host_url(host)))
    assert sum(key.startswith("guest:") for key in drawn) == 8
    assert not [key for key in drawn if key.startswith("more:")]


def test_networks_without_guests_share_one_box_each_row_a_link(logged_in):
    host = HostFactory(name="idle", status="reachable")
    used, _ = network(host, "used")
    guests_on(used, 1)
    idle = [network(host, f"spare{n}", f"10.9.{n}.1/24")[0] for n in range(6)]
    root = picture(logged_in, host_url(host))
    drawn = boxes(root)
    assert drawn["idle"]["texts"][0] == "6 networks without guests"
    assert drawn["idle"]["href"] == f"{reverse('networks:network_list')}?host={host.pk}"
    links = row_links(root)
    for net in idle:
        assert links[f"{net.name} · NAT · {net.ips.get()}"] == f"/networks/{net.pk}/"
    assert f"net:{used.pk}" in drawn  # a network with guests keeps its own box


def test_dhcp_usage_warns_from_ninety_percent(logged_in):
    host = HostFactory(name="pools", status="reachable")
    full, full_ip = network(host, "full", "10.3.0.1/24")
    roomy, roomy_ip = network(host, "roomy", "10.4.0.1/24")
    DhcpRange.objects.create(ip=full_ip, start="10.3.0.10", end="10.3.0.19", size=10)
    DhcpRange.objects.create(ip=roomy_ip, start="10.4.0.10", end="10.4.0.19")  # no stored size: sized here
    expired = timezone.now() - timedelta(hours=1)
    for n in range(9):
        DhcpLease.objects.create(network=full, mac=f"52:54:00:00:03:{n:02x}", address=f"10.3.0.{10 + n}")
        DhcpLease.objects.create(network=roomy, mac=f"52:54:00:00:04:{n:02x}", address=f"10.4.0.{10 + n}")
    DhcpLease.objects.filter(network=roomy, address="10.4.0.10").update(expires_at=expired)
    drawn = boxes(picture(logged_in, host_url(host)))
    assert "DHCP 9 of 10 (90%)" in drawn[f"net:{full.pk}"]["texts"]
    assert "warn" in drawn[f"net:{full.pk}"]["class"].split()
    assert "DHCP 8 of 10 (80%)" in drawn[f"net:{roomy.pk}"]["texts"]
    assert "warn" not in drawn[f"net:{roomy.pk}"]["class"].split()


def test_a_guest_interface_shows_its_mac_and_leased_address(logged_in):
    host = HostFactory(name="addr", status="reachable")
    net, _ = network(host, "lan")
    (guest,) = guests_on(net, 1)
    mac = guest.interfaces.get().mac
    DhcpLease.objects.create(network=net, mac=mac, address="10.1.0.55")
    drawn = boxes(picture(logged_in, host_url(host)))
    assert f"{mac} 10.1.0.55" in drawn[f"guest:{guest.pk}"]["texts"]
    assert drawn[f"guest:{guest.pk}"]["texts"][0] == f"{guest.name} · Running"
    DhcpLease.objects.all().delete()
    guest.interfaces.update(agent_addresses=["10.1.0.77/24"])  # no lease: what the guest agent said
    drawn = boxes(picture(logged_in, host_url(host)))
    assert f"{mac} 10.1.0.77/24" in drawn[f"guest:{guest.pk}"]["texts"]


def test_port_forwards_link_to_their_page_from_their_guest(logged_in):
    host = HostFactory(name="fwd", status="reachable")
    net, _ = network(host, "lan")
    (guest,) = guests_on(net, 1)
    forward = PortForward.objects.create(
        host=host, host_port_start=8080, host_port_end=8080, guest=guest, guest_name=guest.name,
        guest_mac=guest.interfaces.get().mac, guest_port_start=80, guest_port_end=80,
    )  # fmt: skip
    root = picture(logged_in, host_url(host))
    drawn = boxes(root)
    assert drawn[f"fwd:{forward.pk}"]["href"] == f"/port-forwards/{forward.pk}/"
    assert drawn[f"fwd:{forward.pk}"]["texts"][:2] == ["tcp *:8080", f"→ {guest.name}:80"]
    assert (f"guest:{guest.pk}", f"fwd:{forward.pk}") in edges(root)


def test_a_host_bridge_no_network_names_is_drawn_with_its_ports(logged_in):
    host = HostFactory(name="br", status="reachable", host_bridges=["br7"], nic_uses={"eno1": "member of bridge br7"})
    NodeDevice.objects.create(host=host, name="net_eno1", capability="net", net_interface="eno1")
    guest = Guest.objects.create(host=host, name="plain", state="shutoff")
    GuestInterface.objects.create(guest=guest, position=0, type="bridge", mac="52:54:00:77:00:01", source="br7")
    root = picture(logged_in, host_url(host))
    assert boxes(root)["br:br7"]["texts"] == ["br7", "host bridge (no libvirt network)"]
    assert {("nic:eno1", "br:br7"), ("br:br7", f"guest:{guest.pk}")} <= edges(root)


def test_hostile_names_are_escaped_and_control_characters_replaced(logged_in):
    evil = '<script>alert("n")</script>\x01&x'
    host = HostFactory(name="evil", status="reachable", nic_uses={"eth0": evil})
    NodeDevice.objects.create(host=host, name="net_eth0", capability="net", net_interface="eth0")
    NodeDevice.objects.create(host=host, name="net_evil", capability="net", net_interface=f"nic{evil}")
    net, _ = network(host, evil)
    guest = Guest.objects.create(host=host, name=f"g{evil}", state="running")
    GuestInterface.objects.create(guest=guest, position=0, type="network", mac="52:54:00:66:00:01", network=net)
    # a macvtap interface on the hostile NIC: an edge whose ends name it
    GuestInterface.objects.create(guest=guest, position=1, type="direct", mac="52:54:00:66:00:02", source=f"nic{evil}")
    response = logged_in.get(host_url(host))
    assert response.status_code == 200
    page = response.content.decode()
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    drawn = boxes(picture(logged_in, host_url(host)))
    assert drawn[f"net:{net.pk}"]["title"] == '<script>alert("n")</script>\ufffd&x'
    assert drawn["nic:eth0"]["title"] == 'eth0: <script>alert("n")</script>\ufffd&x'
    nic_key = 'nic:nic<script>alert("n")</script>\ufffd&x'
    assert drawn[nic_key]["texts"][0].startswith("nic<script>")
    assert (nic_key, f"guest:{guest.pk}") in edges(picture(logged_in, host_url(host)))


def test_long_names_are_shortened_on_the_box_and_whole_in_its_tooltip(logged_in):
    host = HostFactory(name="long", status="reachable")
    name = "n" * 200
    net, _ = network(host, name)
    drawn = boxes(picture(logged_in, host_url(host)))
    assert drawn[f"net:{net.pk}"]["title"] == name
    shown = drawn[f"net:{net.pk}"]["texts"][0]
    assert shown.endswith("…") and len(shown) < 60


def populated_host(name: str, guests: int) -> Host:
    """Networks with leases and ranges, guests on them (two interfaces each), a pool, forwards."""
    host = HostFactory(name=name, status="reachable", host_bridges=["br0"], nic_uses={"eth0": "member of bridge br0"})
    NodeDevice.objects.create(host=host, name="net_eth0", capability="net", net_interface="eth0")
    nets = []
    for n in range(5):
        net, ip = network(host, f"net{n}", f"10.{n}.0.1/24")
        DhcpRange.objects.create(ip=ip, start=f"10.{n}.0.10", end=f"10.{n}.0.250", size=241)
        nets.append(net)
    for n in range(6):
        network(host, f"idle{n}", f"10.{50 + n}.0.1/24")
    Network.objects.create(host=host, name="pool", forward_mode="hostdev", active=True)
    for n in range(guests):
        guest = Guest.objects.create(host=host, name=f"vm{n:04d}", state="running")
        for position in range(2):
            net = nets[(n + position) % len(nets)]
            mac = f"52:54:{position:02x}:{n // 65536:02x}:{n // 256 % 256:02x}:{n % 256:02x}"
            GuestInterface.objects.create(guest=guest, position=position, type="network", mac=mac, network=net)
            DhcpLease.objects.create(network=net, mac=mac, address=f"10.{nets.index(net)}.{n // 200}.{n % 200 + 1}")
        PortForward.objects.create(
            host=host, host_port_start=10000 + n, host_port_end=10000 + n, guest=guest, guest_name=guest.name,
            guest_mac=mac, guest_port_start=22, guest_port_end=22,
        )  # fmt: skip
    return host


def test_the_host_picture_costs_the_same_queries_for_n_and_3n_guests(logged_in):
    small, large = populated_host("small", 12), populated_host("large", 36)
    counts = []
    for host in (small, large):
        with CaptureQueriesContext(connection) as queries:
            assert logged_in.get(host_url(host)).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


def test_a_host_with_500_guests_on_50_networks_stays_bounded(logged_in):
    host = HostFactory(name="huge", status="reachable")
    for n in range(50):
        net, _ = network(host, f"lan{n:02d}", f"10.{n}.0.1/24", bridge=f"virbr{n}")
        guests_on(net, 10, prefix=f"n{n:02d}-", first=n * 10)
    # as a real host lists them: lo, each network's bridge and each guest's tap, none a NIC
    names = ["lo"] + [f"virbr{n}" for n in range(50)] + [f"vnet{n}" for n in range(500)]
    NodeDevice.objects.bulk_create(
        NodeDevice(host=host, name=f"net_{name}", capability="net", net_interface=name, parent="computer")
        for name in names
    )
    drawn = boxes(picture(logged_in, host_url(host)))
    guest_boxes = [key for key in drawn if key.startswith("guest:")]
    more = [box for key, box in drawn.items() if key.startswith("more:")]
    assert len(guest_boxes) == 50 * host_topology.GUEST_SHOWN
    assert len(more) == 50 and {box["texts"][0] for box in more} == {"+ 4 more guests"}
    assert [key for key in drawn if key.startswith("nic:")] == []


def nic(host, name, parent="pci_0000_00_19_0"):
    return NodeDevice.objects.create(host=host, name=f"net_{name}", capability="net", net_interface=name, parent=parent)


def test_the_uplinks_are_the_host_s_nics_not_its_taps_bridges_or_lo(logged_in):
    host = HostFactory(
        name="nics", status="reachable", host_bridges=["br7"],
        nic_uses={"eno2": "member of bond bond0", "eno3": "member of bridge br7", "lo": "with address 127.0.0.1/8",
                  "vnet0": "member of bridge virbr0", "veth9f2c": "member of bridge virbr0"},
    )  # fmt: skip
    for name in ("eno1", "eno2", "eno3"):
        nic(host, name)
    nic(host, "wlx001122", parent="usb_1_2_1_0")  # a USB NIC
    # no hardware behind these: the kernel's and libvirt's own interfaces
    for name in ("lo", "virbr0", "br7", "vnet0", "vnet1", "macvtap0", "veth9f2c", "bond0", "bond1", "eno1.42"):
        nic(host, name, parent="computer")
    for name in ("vnet2", "macvtap1"):
        nic(host, name, parent="")  # mirrored without a parent: the name tells
    net, _ = network(host, "default", bridge="virbr0", forward_dev="bond1")
    network(host, "via-br7", "10.2.0.1/24", bridge="virbr1", forward_dev="br7")  # a bridge: drawn in the middle
    guest = guests_on(net, 1)[0]
    GuestInterface.objects.create(guest=guest, position=1, type="direct", mac="52:54:00:99:00:01", source="eno1.42")
    root = picture(logged_in, host_url(host))
    drawn = boxes(root)
    uplinks = sorted(box["texts"][0] for key, box in drawn.items() if key.startswith("nic:"))
    # bond0 holds a NIC, bond1 carries a network, the VLAN a guest's macvtap
    assert uplinks == ["bond0", "bond1", "eno1", "eno1.42", "eno2", "eno3", "wlx001122"]
    assert {("nic:bond1", f"net:{net.pk}"), ("nic:eno3", "br:br7"), ("nic:eno1.42", f"guest:{guest.pk}")} <= edges(root)


def test_past_the_limit_the_nics_joined_to_something_show_and_one_box_counts_the_rest(logged_in):
    host = HostFactory(name="many-nics", status="reachable")
    for n in range(40):
        nic(host, f"eth{n:02d}")
    net, _ = network(host, "out", forward_dev="eth35")
    root = picture(logged_in, host_url(host))
    drawn = boxes(root)
    shown = [box["texts"][0] for key, box in drawn.items() if key.startswith("nic:")]
    assert len(shown) == 12 and "eth35" in shown and ("nic:eth35", f"net:{net.pk}") in edges(root)
    assert drawn["more:nics"]["texts"] == ["+ 28 more NICs"]
    assert drawn["more:nics"]["href"] == f"/hosts/{host.pk}/passthrough/"


def test_sixteen_nics_all_show(logged_in):
    host = HostFactory(name="sixteen", status="reachable")
    for n in range(16):
        nic(host, f"eth{n:02d}")
    drawn = boxes(picture(logged_in, host_url(host)))
    assert sum(key.startswith("nic:") for key in drawn) == 16 and "more:nics" not in drawn


# ---------------------------------------------------------------- the fleet


def test_the_fleet_marks_unreachable_and_drifted_hosts_and_links_each_to_its_picture(logged_in):
    fine = HostFactory(name="a-fine", status="reachable")
    drifting = HostFactory(name="b-drifting", status="reachable")
    Network.objects.create(host=drifting, name="changed", drifted=True)
    Network.objects.create(host=drifting, name="same")
    down = HostFactory(name="c-down", status="unreachable", last_error="Cannot recv data")
    new = HostFactory(name="d-new", status="unknown")
    net, _ = network(fine, "lan")
    guests_on(net, 2)
    root = picture(logged_in, reverse("networks:fleet_topology"))
    drawn = boxes(root)
    assert drawn[f"host:{fine.pk}"]["texts"] == ["a-fine", "1 networks · 2 guests", "reachable"]
    assert drawn[f"host:{drifting.pk}"]["texts"] == ["b-drifting", "2 networks · 0 guests", "drifted networks"]
    assert drawn[f"host:{down.pk}"]["texts"][2] == "unreachable"
    assert drawn[f"host:{down.pk}"]["title"] == "c-down: Cannot recv data"
    assert drawn[f"host:{new.pk}"]["texts"][2] == "not synced yet"
    for host in (fine, drifting, down, new):
        assert drawn[f"host:{host.pk}"]["href"] == host_url(host)
    # the groups, in the order they need a look
    headings = [box["texts"][0] for key, box in drawn.items() if key.startswith("heading:")]
    assert headings == [
        "Unreachable (1)",
        "Not synced yet (1)",
        "Reachable, with drifted networks (1)",
        "Reachable (1)",
    ]


def test_the_fleet_picture_costs_the_same_queries_for_n_and_3n_hosts(logged_in):
    def fleet_queries():
        with CaptureQueriesContext(connection) as queries:
            assert logged_in.get(reverse("networks:fleet_topology")).status_code == 200
        return len(queries)

    def add_hosts(start, count):
        for n in range(start, start + count):
            host = HostFactory(name=f"kvm{n:03d}", status=["reachable", "unreachable", "unknown"][n % 3])
            Network.objects.create(host=host, name="lan", drifted=n % 4 == 0)

    add_hosts(0, 20)
    small = fleet_queries()
    add_hosts(20, 40)
    assert fleet_queries() == small


def test_the_fleet_picture_of_500_hosts_is_a_grid(logged_in):
    Host.objects.bulk_create(Host(name=f"kvm{n:03d}", uri="test:///default", status="reachable") for n in range(500))
    root = picture(logged_in, reverse("networks:fleet_topology"))
    assert sum(key.startswith("host:") for key in boxes(root)) == 500
    # six a row: a picture about 1300 pixels wide and one box row per six hosts
    assert int(root.get("width")) < 1400
    assert 84 * 60 < int(root.get("height")) < 84 * 80


def test_the_nav_links_to_the_fleet_picture(logged_in):
    page = logged_in.get(reverse("networks:dashboard")).content.decode()
    assert f'href="{reverse("networks:fleet_topology")}"' in page


# ---------------------------------------------------------------- scope


def test_a_scoped_viewer_sees_the_pictures_of_its_hosts_only(client):
    mine = HostFactory(name="mine", status="reachable")
    other = HostFactory(name="other", status="unreachable")
    network(other, "secret-net")
    client = scoped_client(client, mine)
    assert client.get(host_url(mine)).status_code == 200
    assert client.get(host_url(other)).status_code == 404
    drawn = boxes(picture(client, reverse("networks:fleet_topology")))
    assert [key for key in drawn if key.startswith("host:")] == [f"host:{mine.pk}"]
    assert "other" not in client.get(reverse("networks:fleet_topology")).content.decode()
