"""The rule text kvmweb writes for a forward, and how it reads the host's rules back.

Expected text is written out by hand: it is what an admin sees in `iptables-save` or
`nft list ruleset`. Nothing here touches the machine's firewall."""

import json

import pytest

from networks.forwarding import rules as fw
from networks.forwarding.rules import ForwardRule


def web(**overrides) -> ForwardRule:
    values = {
        "forward_id": 7,
        "protocol": "tcp",
        "host_address": None,
        "host_port_start": 8080,
        "host_port_end": 8080,
        "guest_name": "web1",
        "guest_mac": "52:54:00:aa:00:01",
        "guest_address": "192.168.122.10",
        "guest_port_start": 80,
        "guest_port_end": 80,
        "bridge": "virbr0",
    }
    return ForwardRule(**(values | overrides))


LIBVIRT_ONLY = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:LIBVIRT_FWI - [0:0]
-A FORWARD -j LIBVIRT_FWI
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
"""

APPLIED = """\
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KVMWEB_OUTPUT - [0:0]
:KVMWEB_PREROUTING - [0:0]
-A PREROUTING -j KVMWEB_PREROUTING
-A OUTPUT -j KVMWEB_OUTPUT
-A KVMWEB_OUTPUT -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 8080 -m comment --comment "kvmweb:7" -j DNAT --to-destination 192.168.122.10:80
-A KVMWEB_PREROUTING -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 8080 -m comment --comment "kvmweb:7" -j DNAT --to-destination 192.168.122.10:80
COMMIT
*filter
:FORWARD ACCEPT [0:0]
:KVMWEB_FORWARD - [0:0]
:LIBVIRT_FWI - [0:0]
-A FORWARD -j KVMWEB_FORWARD
-A FORWARD -j LIBVIRT_FWI
-A KVMWEB_FORWARD -d 192.168.122.10/32 -o virbr0 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT -m comment --comment "kvmweb:7" -j ACCEPT
COMMIT
"""  # noqa: E501


# ---- iptables ------------------------------------------------------------------------------


def test_a_port_of_every_host_address_goes_to_the_guest_port_and_only_after_dnat_is_accepted():
    assert fw.iptables_rule_lines(web()) == {
        "KVMWEB_PREROUTING": [
            "-A KVMWEB_PREROUTING -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 8080 "
            "-m comment --comment kvmweb:7 -j DNAT --to-destination 192.168.122.10:80"
        ],
        "KVMWEB_OUTPUT": [
            "-A KVMWEB_OUTPUT -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 8080 "
            "-m comment --comment kvmweb:7 -j DNAT --to-destination 192.168.122.10:80"
        ],
        "KVMWEB_FORWARD": [
            "-A KVMWEB_FORWARD -d 192.168.122.10/32 -o virbr0 -p tcp -m tcp --dport 80 "
            "-m conntrack --ctstate DNAT -m comment --comment kvmweb:7 -j ACCEPT"
        ],
    }


def test_a_range_moved_to_other_ports_keeps_each_offset_and_each_source_gets_its_rules():
    rule = web(
        protocol="udp",
        host_address="203.0.113.5",
        host_port_start=5000,
        host_port_end=5010,
        guest_port_start=6000,
        guest_port_end=6010,
        source_cidrs=("198.51.100.7/30", "10.0.0.0/8"),
    )
    lines = fw.iptables_rule_lines(rule)
    assert lines["KVMWEB_PREROUTING"] == [
        "-A KVMWEB_PREROUTING -s 198.51.100.4/30 -d 203.0.113.5/32 -p udp -m udp --dport 5000:5010 "
        "-m comment --comment kvmweb:7 -j DNAT --to-destination 192.168.122.10:6000-6010/5000",
        "-A KVMWEB_PREROUTING -s 10.0.0.0/8 -d 203.0.113.5/32 -p udp -m udp --dport 5000:5010 "
        "-m comment --comment kvmweb:7 -j DNAT --to-destination 192.168.122.10:6000-6010/5000",
    ]
    assert lines["KVMWEB_FORWARD"] == [
        "-A KVMWEB_FORWARD -s 198.51.100.4/30 -d 192.168.122.10/32 -o virbr0 -p udp -m udp --dport 6000:6010 "
        "-m conntrack --ctstate DNAT -m comment --comment kvmweb:7 -j ACCEPT",
        "-A KVMWEB_FORWARD -s 10.0.0.0/8 -d 192.168.122.10/32 -o virbr0 -p udp -m udp --dport 6000:6010 "
        "-m conntrack --ctstate DNAT -m comment --comment kvmweb:7 -j ACCEPT",
    ]


def test_a_range_kept_on_the_same_ports_is_sent_on_without_rewriting_the_port():
    rule = web(host_port_start=3000, host_port_end=3002, guest_port_start=3000, guest_port_end=3002)
    (dnat,) = fw.iptables_rule_lines(rule)["KVMWEB_PREROUTING"]
    assert dnat.endswith("--dport 3000:3002 -m comment --comment kvmweb:7 -j DNAT --to-destination 192.168.122.10")


def test_the_first_apply_creates_the_chains_and_puts_the_forward_jump_before_libvirts():
    text = fw.iptables_restore_text([web()], fw.parse_iptables_save(LIBVIRT_ONLY))
    assert text == (
        "*nat\n"
        ":KVMWEB_PREROUTING - [0:0]\n"
        ":KVMWEB_OUTPUT - [0:0]\n"
        "-I PREROUTING 1 -j KVMWEB_PREROUTING\n"
        "-A KVMWEB_PREROUTING -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 8080 "
        "-m comment --comment kvmweb:7 -j DNAT --to-destination 192.168.122.10:80\n"
        "-I OUTPUT 1 -j KVMWEB_OUTPUT\n"
        "-A KVMWEB_OUTPUT -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 8080 "
        "-m comment --comment kvmweb:7 -j DNAT --to-destination 192.168.122.10:80\n"
        "COMMIT\n"
        "*filter\n"
        ":KVMWEB_FORWARD - [0:0]\n"
        "-I FORWARD 1 -j KVMWEB_FORWARD\n"
        "-A KVMWEB_FORWARD -d 192.168.122.10/32 -o virbr0 -p tcp -m tcp --dport 80 "
        "-m conntrack --ctstate DNAT -m comment --comment kvmweb:7 -j ACCEPT\n"
        "COMMIT\n"
    )


def test_applying_again_refills_the_chains_but_leaves_jumps_that_are_first_alone():
    text = fw.iptables_restore_text([web()], fw.parse_iptables_save(APPLIED))
    assert "-I " not in text and "-D " not in text
    assert ":KVMWEB_FORWARD - [0:0]" in text  # a declared chain is flushed, so old rules go


def test_a_forward_jump_that_libvirt_pushed_down_is_moved_back_to_the_top():
    pushed = APPLIED.replace(
        "-A FORWARD -j KVMWEB_FORWARD\n-A FORWARD -j LIBVIRT_FWI\n",
        "-A FORWARD -j LIBVIRT_FWI\n-A FORWARD -j KVMWEB_FORWARD\n",
    )
    text = fw.iptables_restore_text([web()], fw.parse_iptables_save(pushed))
    assert "-D FORWARD -j KVMWEB_FORWARD\n-I FORWARD 1 -j KVMWEB_FORWARD\n" in text
    assert "-I PREROUTING" not in text


def test_an_empty_list_removes_the_jumps_and_the_chains():
    assert fw.iptables_restore_text([], fw.parse_iptables_save(APPLIED)) == (
        "*nat\n"
        ":KVMWEB_PREROUTING - [0:0]\n"
        ":KVMWEB_OUTPUT - [0:0]\n"
        "-D PREROUTING -j KVMWEB_PREROUTING\n"
        "-D OUTPUT -j KVMWEB_OUTPUT\n"
        "-X KVMWEB_PREROUTING\n"
        "-X KVMWEB_OUTPUT\n"
        "COMMIT\n"
        "*filter\n"
        ":KVMWEB_FORWARD - [0:0]\n"
        "-D FORWARD -j KVMWEB_FORWARD\n"
        "-X KVMWEB_FORWARD\n"
        "COMMIT\n"
    )


def test_a_ruleset_without_kvmweb_needs_no_cleaning():
    assert not fw.iptables_holds_kvmweb(fw.parse_iptables_save(LIBVIRT_ONLY))
    assert fw.iptables_holds_kvmweb(fw.parse_iptables_save(APPLIED))


def test_a_forward_is_present_only_with_all_its_rules_and_the_jumps_first():
    state = fw.parse_iptables_save(APPLIED)
    assert fw.iptables_present(web(), state)
    assert not fw.iptables_present(web(forward_id=8), state)
    two_sources = web(source_cidrs=("10.0.0.0/8", "192.0.2.0/24"))
    assert not fw.iptables_present(two_sources, state)  # one rule per source expected
    pushed = APPLIED.replace(
        "-A FORWARD -j KVMWEB_FORWARD\n-A FORWARD -j LIBVIRT_FWI\n",
        "-A FORWARD -j LIBVIRT_FWI\n-A FORWARD -j KVMWEB_FORWARD\n",
    )
    assert not fw.iptables_present(web(), fw.parse_iptables_save(pushed))


# ---- nftables ------------------------------------------------------------------------------


def test_nft_dnat_of_every_host_address_and_the_accept_before_libvirts_reject():
    assert fw.nft_dnat_rules(web()) == [
        'fib daddr type local tcp dport 8080 dnat to 192.168.122.10:80 comment "kvmweb:7"'
    ]
    assert fw.nft_accept_rule(web()) == (
        'oifname "virbr0" ip daddr 192.168.122.10 tcp dport 80 ct status dnat accept comment "kvmweb:7"'
    )


def test_nft_has_no_base_port_so_a_moved_range_is_one_rule_per_port():
    rule = web(
        host_address="203.0.113.5",
        host_port_start=5000,
        host_port_end=5002,
        guest_port_start=6000,
        guest_port_end=6002,
        source_cidrs=("198.51.100.0/30", "10.1.0.0/16"),
    )
    head = "ip daddr 203.0.113.5 ip saddr { 198.51.100.0/30, 10.1.0.0/16 } tcp dport"
    assert fw.nft_dnat_rules(rule) == [
        f'{head} 5000 dnat to 192.168.122.10:6000 comment "kvmweb:7"',
        f'{head} 5001 dnat to 192.168.122.10:6001 comment "kvmweb:7"',
        f'{head} 5002 dnat to 192.168.122.10:6002 comment "kvmweb:7"',
    ]
    assert fw.nft_accept_rule(rule) == (
        'oifname "virbr0" ip daddr 192.168.122.10 ip saddr { 198.51.100.0/30, 10.1.0.0/16 } '
        'tcp dport 6000-6002 ct status dnat accept comment "kvmweb:7"'
    )


def nft_json(*, kvmweb: bool, jump_first: bool | None) -> str:
    """`nft -j list ruleset` of a host with libvirt's table (shaped like libvirt 10's)."""
    items = [
        {"metainfo": {"version": "1.0.9", "json_schema_version": 1}},
        {"table": {"family": "ip", "name": "libvirt_network", "handle": 1}},
        {"chain": {"family": "ip", "table": "libvirt_network", "name": "forward", "handle": 1,
                   "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
        {"chain": {"family": "ip", "table": "libvirt_network", "name": "guest_input", "handle": 3}},
    ]  # fmt: skip
    counted_jump = [{"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "guest_input"}}]
    libvirt_jump = {"rule": {"family": "ip", "table": "libvirt_network", "chain": "forward", "handle": 9,
                             "expr": counted_jump}}  # fmt: skip
    our_jump = {"rule": {"family": "ip", "table": "libvirt_network", "chain": "forward", "handle": 12,
                         "expr": [{"jump": {"target": "kvmweb_forward"}}]}}  # fmt: skip
    if jump_first is True:
        items += [our_jump, libvirt_jump]
    elif jump_first is False:
        items += [libvirt_jump, our_jump]
    else:
        items += [libvirt_jump]
    if kvmweb:
        items += [
            {"chain": {"family": "ip", "table": "libvirt_network", "name": "kvmweb_forward", "handle": 11}},
            {"rule": {"family": "ip", "table": "libvirt_network", "chain": "kvmweb_forward", "handle": 13,
                      "comment": "kvmweb:7", "expr": [{"accept": None}]}},
            {"table": {"family": "ip", "name": "kvmweb", "handle": 5}},
            {"rule": {"family": "ip", "table": "kvmweb", "chain": "prerouting", "handle": 3,
                      "comment": "kvmweb:7", "expr": []}},
            {"rule": {"family": "ip", "table": "kvmweb", "chain": "output", "handle": 4,
                      "comment": "kvmweb:7", "expr": []}},
        ]  # fmt: skip
    return json.dumps({"nftables": items})


def test_nft_first_apply_writes_our_table_and_our_chain_in_libvirts_table_jumped_to_first():
    script = fw.nft_script([web()], fw.parse_nft_json(nft_json(kvmweb=False, jump_first=None)))
    assert script == (
        "table ip kvmweb {\n"
        "}\n"
        "delete table ip kvmweb\n"
        "table ip kvmweb {\n"
        "\tchain prerouting {\n"
        "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
        '\t\tfib daddr type local tcp dport 8080 dnat to 192.168.122.10:80 comment "kvmweb:7"\n'
        "\t}\n"
        "\tchain output {\n"
        "\t\ttype nat hook output priority -100; policy accept;\n"
        '\t\tfib daddr type local tcp dport 8080 dnat to 192.168.122.10:80 comment "kvmweb:7"\n'
        "\t}\n"
        "}\n"
        "add chain ip libvirt_network kvmweb_forward\n"
        "flush chain ip libvirt_network kvmweb_forward\n"
        'add rule ip libvirt_network kvmweb_forward oifname "virbr0" ip daddr 192.168.122.10 tcp dport 80 '
        'ct status dnat accept comment "kvmweb:7"\n'
        "insert rule ip libvirt_network forward jump kvmweb_forward\n"
    )


def test_nft_keeps_a_jump_that_is_first_and_moves_one_that_is_not():
    kept = fw.nft_script([web()], fw.parse_nft_json(nft_json(kvmweb=True, jump_first=True)))
    assert "insert rule" not in kept and "delete rule" not in kept
    moved = fw.nft_script([web()], fw.parse_nft_json(nft_json(kvmweb=True, jump_first=False)))
    assert "delete rule ip libvirt_network forward handle 12\n" in moved
    assert moved.endswith("insert rule ip libvirt_network forward jump kvmweb_forward\n")


def test_nft_empty_list_deletes_our_table_jump_and_chain():
    state = fw.parse_nft_json(nft_json(kvmweb=True, jump_first=True))
    assert fw.nft_holds_kvmweb(state)
    assert fw.nft_script([], state) == (
        "table ip kvmweb {\n"
        "}\n"
        "delete table ip kvmweb\n"
        "delete rule ip libvirt_network forward handle 12\n"
        "flush chain ip libvirt_network kvmweb_forward\n"
        "delete chain ip libvirt_network kvmweb_forward\n"
    )
    assert not fw.nft_holds_kvmweb(fw.parse_nft_json(nft_json(kvmweb=False, jump_first=None)))


def test_without_libvirts_table_nft_writes_only_our_own():
    script = fw.nft_script([web()], fw.NftState(False, False, False, [], {}))
    assert "libvirt_network" not in script


def test_nft_presence_needs_both_dnat_chains_the_accept_and_the_jump_first():
    assert fw.nft_present(web(), fw.parse_nft_json(nft_json(kvmweb=True, jump_first=True)))
    assert not fw.nft_present(web(), fw.parse_nft_json(nft_json(kvmweb=True, jump_first=False)))
    assert not fw.nft_present(web(forward_id=8), fw.parse_nft_json(nft_json(kvmweb=True, jump_first=True)))


# ---- what a rule may hold (it ends up in commands run as root) ------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"bridge": "virbr0 -j ACCEPT"},
        {"bridge": 'br0"; flush ruleset; "'},
        {"bridge": "a-bridge-name-too-long"},
        {"guest_address": "192.168.122.10; reboot"},
        {"guest_address": "fd00::10"},
        {"host_address": "0.0.0.0/0"},
        {"host_port_start": 0, "host_port_end": 0},
        {"guest_port_start": 65536, "guest_port_end": 65536},
        {"host_port_start": True},
        {"host_port_end": 8081},  # host range longer than the guest's
        {"host_port_start": 8081, "host_port_end": 8080},
        {"protocol": "icmp"},
        {"source_cidrs": ("10.0.0.0/8 -j ACCEPT",)},
        {"source_cidrs": ["10.0.0.0/8"]},
        {"guest_name": "web1\nrm"},
        {"forward_id": 0},
    ],
)
def test_a_rule_that_could_inject_firewall_syntax_or_makes_no_sense_is_refused(overrides):
    with pytest.raises(ValueError):
        web(**overrides)


def test_the_rules_file_keeps_every_field():
    rule = web(source_cidrs=("10.0.0.0/8",))
    backend, rules = fw.rules_from_json(fw.rules_to_json("iptables", [rule]))
    assert (backend, rules) == ("iptables", [rule])
    with pytest.raises(ValueError):
        fw.rules_from_json(json.dumps({"version": 99, "backend": "iptables", "forwards": []}))


# ---- the hooks -----------------------------------------------------------------------------


def test_a_hook_counts_the_guest_of_the_event_whatever_libvirts_status_files_say(tmp_path):
    (tmp_path / "db1.xml").write_text("<domstatus/>")
    (tmp_path / "web1.xml").write_text("<domstatus/>")
    assert fw.hook_running_set("qemu", ["new1", "started", "begin", "-"], tmp_path) == {"db1", "web1", "new1"}
    assert fw.hook_running_set("qemu", ["new1", "reconnect", "begin", "-"], tmp_path) == {"db1", "web1", "new1"}
    assert fw.hook_running_set("qemu", ["web1", "stopped", "end", "-"], tmp_path) == {"db1"}
    assert fw.hook_running_set("qemu", ["web1", "release", "end", "-"], tmp_path) == {"db1"}
    assert fw.hook_running_set("network", ["default", "started", "begin", "-"], tmp_path) == {"db1", "web1"}


def test_hook_events_that_change_nothing_are_ignored(tmp_path):
    assert fw.hook_running_set("qemu", ["web1", "prepare", "begin", "-"], tmp_path) is None
    assert fw.hook_running_set("qemu", ["web1", "start", "begin", "-"], tmp_path) is None
    assert fw.hook_running_set("network", ["default", "stopped", "end", "-"], tmp_path) is None
    assert fw.hook_running_set("network", ["default", "updated", "begin", "-"], tmp_path) is None


def test_a_write_that_changes_nothing_is_not_made(tmp_path):
    path = tmp_path / "sub" / "file"
    assert fw.write_atomically(path, "one\n", mode=0o600)
    assert not fw.write_atomically(path, "one\n", mode=0o600)
    assert fw.write_atomically(path, "one\n", mode=0o644)
    assert fw.write_atomically(path, "two\n", mode=0o644)
    assert path.read_text() == "two\n" and list(path.parent.iterdir()) == [path]
