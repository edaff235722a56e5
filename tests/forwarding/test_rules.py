"""The rule text kvmweb writes for a forward, and how it reads the host's rules back.

Expected text is written out by hand: it is what an admin sees in `iptables-save` or
`nft list ruleset`. Nothing here touches the machine's firewall."""

import json
import os
import subprocess
import time

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
-A KVMWEB_OUTPUT ! -d 127.0.0.0/8 -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 8080 -m comment --comment "kvmweb:7" -j DNAT --to-destination 192.168.122.10:80
-A KVMWEB_PREROUTING -i virbr0 -m comment --comment "kvmweb:guest-bridge" -j RETURN
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
        "KVMWEB_OUTPUT": [  # the host's own localhost stays its own
            "-A KVMWEB_OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 8080 "
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
        source_cidrs=("198.51.100.4/30", "10.0.0.0/8"),
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
        "-A KVMWEB_PREROUTING -i virbr0 -m comment --comment kvmweb:guest-bridge -j RETURN\n"
        "-A KVMWEB_PREROUTING -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 8080 "
        "-m comment --comment kvmweb:7 -j DNAT --to-destination 192.168.122.10:80\n"
        "-I OUTPUT 1 -j KVMWEB_OUTPUT\n"
        "-A KVMWEB_OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 8080 "
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


def test_traffic_from_every_libvirt_bridge_skips_the_forwards_on_every_address_but_not_those_on_one():
    """A guest's DNS or DHCP to its gateway (a local address of the host) must not be forwarded."""
    one = web(forward_id=3, host_address="203.0.113.5", host_port_start=53, host_port_end=53, guest_port_start=53,
              guest_port_end=53, protocol="udp")  # fmt: skip
    every = web(protocol="udp", host_port_start=53, host_port_end=53, guest_port_start=53, guest_port_end=53)
    chains = fw.iptables_chain_lines([every, one], guest_bridges=["kvpf0", "virbr0"])
    assert chains["KVMWEB_PREROUTING"] == [
        "-A KVMWEB_PREROUTING -d 203.0.113.5/32 -p udp -m udp --dport 53 "
        "-m comment --comment kvmweb:3 -j DNAT --to-destination 192.168.122.10",
        "-A KVMWEB_PREROUTING -i kvpf0 -m comment --comment kvmweb:guest-bridge -j RETURN",
        "-A KVMWEB_PREROUTING -i virbr0 -m comment --comment kvmweb:guest-bridge -j RETURN",
        "-A KVMWEB_PREROUTING -m addrtype --dst-type LOCAL -p udp -m udp --dport 53 "
        "-m comment --comment kvmweb:7 -j DNAT --to-destination 192.168.122.10",
    ]
    assert fw.iptables_chain_lines([one])["KVMWEB_PREROUTING"] == [chains["KVMWEB_PREROUTING"][0]]


def test_a_rule_left_with_an_old_guest_address_bridge_or_port_is_not_present():
    state = fw.parse_iptables_save(APPLIED)
    assert fw.iptables_present(web(), state)
    assert not fw.iptables_present(web(guest_address="192.168.122.11"), state)
    assert not fw.iptables_present(web(bridge="virbr1"), state)
    assert not fw.iptables_present(web(guest_port_start=81, guest_port_end=81), state)
    assert not fw.iptables_present(web(protocol="udp"), state)
    assert not fw.iptables_present(web(host_address="203.0.113.5"), state)
    assert not fw.iptables_present(web(), state, guest_bridges=["kvpf0"])  # its exclusion is not there
    no_loopback_exclusion = APPLIED.replace("-A KVMWEB_OUTPUT ! -d 127.0.0.0/8 ", "-A KVMWEB_OUTPUT ")
    assert not fw.iptables_present(web(), fw.parse_iptables_save(no_loopback_exclusion))


# ---- nftables ------------------------------------------------------------------------------


def test_nft_dnat_of_every_host_address_and_the_accept_before_libvirts_reject():
    assert fw.nft_dnat_rule(web(), "prerouting", ["kvpf0"]) == (
        'fib daddr type local iifname != { "kvpf0", "virbr0" } tcp dport 8080 dnat to 192.168.122.10:80 '
        'comment "kvmweb:7"'
    )
    assert fw.nft_dnat_rule(web(), "prerouting") == (
        'fib daddr type local iifname != "virbr0" tcp dport 8080 dnat to 192.168.122.10:80 comment "kvmweb:7"'
    )
    assert fw.nft_dnat_rule(web(), "output", ["kvpf0"]) == (
        'ip daddr != 127.0.0.0/8 fib daddr type local tcp dport 8080 dnat to 192.168.122.10:80 comment "kvmweb:7"'
    )
    assert fw.nft_accept_rule(web()) == (
        'oifname "virbr0" ip daddr 192.168.122.10 tcp dport 80 ct status dnat accept comment "kvmweb:7"'
    )


def test_nft_has_no_base_port_so_a_moved_range_is_one_rule_with_a_map_of_its_ports():
    rule = web(
        host_address="203.0.113.5",
        host_port_start=5000,
        host_port_end=5002,
        guest_port_start=6000,
        guest_port_end=6002,
        source_cidrs=("198.51.100.0/30", "10.1.0.0/16"),
    )
    assert fw.nft_dnat_rule(rule, "prerouting") == (
        "ip daddr 203.0.113.5 ip saddr { 198.51.100.0/30, 10.1.0.0/16 } tcp dport 5000-5002 "
        'dnat to 192.168.122.10 : tcp dport map { 5000 : 6000, 5001 : 6001, 5002 : 6002 } comment "kvmweb:7"'
    )
    assert fw.nft_dnat_rule(rule, "output") == fw.nft_dnat_rule(rule, "prerouting")
    assert fw.nft_accept_rule(rule) == (
        'oifname "virbr0" ip daddr 192.168.122.10 ip saddr { 198.51.100.0/30, 10.1.0.0/16 } '
        'tcp dport 6000-6002 ct status dnat accept comment "kvmweb:7"'
    )


def test_the_longest_moved_range_is_one_rule_and_a_longer_one_is_refused():
    """The whole port space moved by one was 65,535 nft rules (twice); now at most 1,024 map elements."""
    longest = web(host_port_start=10001, host_port_end=11024, guest_port_start=20001, guest_port_end=21024)
    text = fw.nft_script([longest], fw.NftState(False, False, False, [], {}))
    assert text.count("dnat to") == 2  # prerouting and output
    assert "11024 : 21024 }" in text
    with pytest.raises(ValueError, match="at most 1024 ports"):
        web(host_port_start=10001, host_port_end=11025, guest_port_start=20001, guest_port_end=21025)
    kept = web(host_port_start=1, host_port_end=65535, guest_port_start=1, guest_port_end=65535)
    assert fw.nft_dnat_rule(kept, "prerouting").count("dport") == 1  # kept on its ports: no map, no limit


def _match(left: dict, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


DPORT = {"payload": {"protocol": "tcp", "field": "dport"}}
DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}
FIB = {"fib": {"result": "type", "flags": ["daddr"]}}
# web()'s rules as `nft -j list ruleset` (nft 1.0.6) shows them.
WEB_ACCEPT = [_match({"meta": {"key": "oifname"}}, "virbr0"), _match(DADDR, "192.168.122.10"), _match(DPORT, 80),
              _match({"ct": {"key": "status"}}, "dnat", "in"), {"accept": None}]  # fmt: skip
WEB_PREROUTING = [_match(FIB, "local"), _match({"meta": {"key": "iifname"}}, "virbr0", "!="), _match(DPORT, 8080),
                  {"dnat": {"addr": "192.168.122.10", "port": 80}}]  # fmt: skip
WEB_OUTPUT = [_match(DADDR, {"prefix": {"addr": "127.0.0.0", "len": 8}}, "!="), _match(FIB, "local"),
              _match(DPORT, 8080), {"dnat": {"addr": "192.168.122.10", "port": 80}}]  # fmt: skip


def nft_json(*, kvmweb: bool, jump_first: bool | None, guest_address: str = "192.168.122.10") -> str:
    """`nft -j list ruleset` of a host with libvirt's table (shaped like libvirt 10's), with
    web()'s rules (DNAT to `guest_address`) when `kvmweb`."""
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
                      "comment": "kvmweb:7", "expr": WEB_ACCEPT}},
            {"table": {"family": "ip", "name": "kvmweb", "handle": 5}},
            {"rule": {"family": "ip", "table": "kvmweb", "chain": "prerouting", "handle": 3,
                      "comment": "kvmweb:7", "expr": WEB_PREROUTING}},
            {"rule": {"family": "ip", "table": "kvmweb", "chain": "output", "handle": 4,
                      "comment": "kvmweb:7", "expr": WEB_OUTPUT}},
        ]  # fmt: skip
    return json.dumps({"nftables": items}).replace("192.168.122.10", guest_address)


def test_nft_first_apply_writes_our_table_and_our_chain_in_libvirts_table_jumped_to_first():
    script = fw.nft_script([web()], fw.parse_nft_json(nft_json(kvmweb=False, jump_first=None)))
    assert script == (
        "table ip kvmweb {\n"
        "}\n"
        "delete table ip kvmweb\n"
        "table ip kvmweb {\n"
        "\tchain prerouting {\n"
        "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
        '\t\tfib daddr type local iifname != "virbr0" tcp dport 8080 dnat to 192.168.122.10:80 comment "kvmweb:7"\n'
        "\t}\n"
        "\tchain output {\n"
        "\t\ttype nat hook output priority -100; policy accept;\n"
        '\t\tip daddr != 127.0.0.0/8 fib daddr type local tcp dport 8080 dnat to 192.168.122.10:80 comment "kvmweb:7"\n'
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


def test_nft_rules_left_with_an_old_guest_address_bridge_or_port_are_not_present():
    state = fw.parse_nft_json(nft_json(kvmweb=True, jump_first=True))
    assert fw.nft_present(web(), state)
    stale = fw.parse_nft_json(nft_json(kvmweb=True, jump_first=True, guest_address="192.168.122.99"))
    assert not fw.nft_present(web(), stale)  # the guest got another address; the rules still DNAT to the old one
    assert fw.nft_present(web(guest_address="192.168.122.99"), stale)
    assert not fw.nft_present(web(bridge="virbr1"), state)
    assert not fw.nft_present(web(guest_port_start=81, guest_port_end=81), state)
    assert not fw.nft_present(web(host_port_start=8081, host_port_end=8081), state)
    assert not fw.nft_present(web(protocol="udp"), state)
    assert not fw.nft_present(web(source_cidrs=("10.0.0.0/8",)), state)
    assert not fw.nft_present(web(host_address="203.0.113.5"), state)
    assert not fw.nft_present(web(), state, guest_bridges=["kvpf0"])  # the exclusion of kvpf0 is missing


def test_nft_facts_read_a_moved_range_its_sources_and_a_set_of_bridges():
    expr = [_match(FIB, "local"), _match({"meta": {"key": "iifname"}}, {"set": ["virbr0", "kvpf0"]}, "!="),
            _match({"payload": {"protocol": "ip", "field": "saddr"}},
                   {"set": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, "198.51.100.10"]}),
            _match({"payload": {"protocol": "udp", "field": "dport"}}, {"range": [5000, 5001]}),
            {"dnat": {"addr": "192.168.122.10", "port": {"map": {"key": {"payload": {"protocol": "udp",
             "field": "dport"}}, "data": {"set": [[5000, 6000], [5001, 6001]]}}}}}]  # fmt: skip
    assert fw.nft_facts(expr) == (
        ("dnat", ("192.168.122.10", ((5000, 6000), (5001, 6001)))),
        ("dport", (5000, 5001)),
        ("fib", "local"),
        ("not_iifname", ("kvpf0", "virbr0")),
        ("proto", "udp"),
        ("saddr", ("10.0.0.0/8", "198.51.100.10/32")),
    )
    rule = web(protocol="udp", host_port_start=5000, host_port_end=5001, guest_port_start=6000, guest_port_end=6001,
               source_cidrs=("198.51.100.10/32", "10.0.0.0/8"))  # fmt: skip
    assert fw.nft_expected_facts(rule, ["kvpf0"])["kvmweb prerouting"] == fw.nft_facts(expr)


# ---- what a rule may hold (it ends up in commands run as root) ------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"bridge": "virbr0 -j ACCEPT"},
        {"bridge": 'br0"; flush ruleset; "'},
        {"bridge": "a-bridge-name-too-long"},
        {"bridge": "virbr0\n"},  # `$` would let the newline through
        {"bridge": "-o"},  # would read as an option
        {"bridge": ""},
        {"bridge": 0},
        {"guest_address": 3232266762},  # 192.168.122.10 as an int, e.g. from a hand-edited rules file
        {"host_address": 3405803781},
        {"guest_address": "192.168.122.10\n"},
        {"guest_mac": "52:54:00:aa:00:01\n"},
        {"guest_mac": None},
        {"source_cidrs": ("198.51.100.7/30",)},  # host bits set: not what the user meant
        {"source_cidrs": (167772160,)},
        {"guest_port_start": 80.0, "guest_port_end": 80.0},
        {"host_port_end": True},
        {"forward_id": True},
        {"host_port_start": "8080", "host_port_end": "8080"},
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
        {"guest_name": 7},
        {"forward_id": 0},
    ],
)
def test_a_rule_that_could_inject_firewall_syntax_or_makes_no_sense_is_refused(overrides):
    with pytest.raises(ValueError):
        web(**overrides)


def test_addresses_and_the_mac_are_stored_in_their_canonical_text():
    rule = web(guest_mac="52:54:00:AA:00:01", source_cidrs=("10.0.0.0/8", "198.51.100.10/32"))
    assert (rule.guest_mac, rule.source_cidrs) == ("52:54:00:aa:00:01", ("10.0.0.0/8", "198.51.100.10/32"))


def test_the_rules_file_keeps_every_field_and_the_bridges():
    rule = web(source_cidrs=("10.0.0.0/8",))
    saved = fw.rules_from_json(fw.rules_to_json("iptables", [rule], ["kvpf0"]))
    assert saved == fw.RulesFile("iptables", [rule], ("kvpf0", "virbr0"))
    with pytest.raises(ValueError):
        fw.rules_from_json(json.dumps({"version": 99, "backend": "iptables", "forwards": []}))


@pytest.mark.parametrize(
    "change",
    [
        {"guest_address": 3232266762},
        {"bridge": "virbr0\n"},
        {"host_port_start": True},
    ],
)
def test_a_rules_file_with_a_bad_value_is_refused_by_whoever_reads_it(change):
    body = json.loads(fw.rules_to_json("iptables", [web()]))
    body["forwards"][0].update(change)
    with pytest.raises(ValueError):
        fw.rules_from_json(json.dumps(body))


@pytest.mark.parametrize(
    "body",
    [
        {"backend": "pf"},
        {"guest_bridges": ["-i"]},
        {"guest_bridges": "virbr0"},
        {"forwards": {}},
        {"forwards": ["web1"]},
        {"forwards": [{"forward_id": 7}]},
    ],
)
def test_a_rules_file_with_a_bad_backend_or_bridge_list_is_refused(body):
    text = json.dumps({"version": 1, "backend": "iptables", "forwards": []} | body)
    with pytest.raises(ValueError):
        fw.rules_from_json(text)


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


# ---- net-updates: the network hook's markers -----------------------------------------------


def _hook(argv, spool, tmp_path, kind="network") -> int:
    return fw.hook_main(kind, argv, rules_file=str(tmp_path / "rules.json"), qemu_state_dir=str(tmp_path),
                        network_updates_dir=str(spool))  # fmt: skip


def test_the_network_hook_marks_a_network_updated_and_the_watcher_takes_it_once(tmp_path):
    spool = tmp_path / "updates"
    assert _hook(["default", "updated", "begin", "-"], spool, tmp_path) == 0
    assert _hook(["default", "updated", "begin", "-"], spool, tmp_path) == 0  # before the watcher looked
    assert _hook(["lab-2.net", "updated", "begin", "-"], spool, tmp_path) == 0
    assert len(list(spool.iterdir())) == 2, "one marker per network, however many updates"
    assert fw.take_network_updates(spool) == ["default", "lab-2.net"]
    assert fw.take_network_updates(spool) == [] and list(spool.iterdir()) == []
    assert not (tmp_path / "rules.json.lock").exists(), "a net-update's marker waits for no rules lock"


@pytest.mark.parametrize(
    ("kind", "argv"),
    [("network", ["default", "started", "begin", "-"]), ("network", ["default", "stopped", "end", "-"]),
     ("network", ["default", "port-created", "begin", "-"]), ("network", ["default", "start", "begin", "-"]),
     ("qemu", ["default", "updated", "begin", "-"]), ("network", ["updated"]), ("network", [])],
)  # fmt: skip
def test_other_hook_calls_leave_no_marker(tmp_path, kind, argv):
    spool = tmp_path / "updates"
    assert _hook(argv, spool, tmp_path, kind) == 0
    assert not spool.exists()


@pytest.mark.parametrize(
    "name",
    ["", "../../etc/passwd", "a/b", ".hidden", "-o", "a\nb", "a b", "x" * 256, "réseau", "a\x00b", "*", "$(id)"],
)
def test_a_hostile_network_name_leaves_no_marker_and_the_hook_exits_0(tmp_path, name):
    spool = tmp_path / "updates"
    assert _hook([name, "updated", "begin", "-"], spool, tmp_path) == 0
    assert not spool.exists() and list(tmp_path.iterdir()) == []


def test_a_marker_that_cannot_be_written_does_not_fail_the_net_update(tmp_path, capsys):
    spool = tmp_path / "updates"
    spool.write_text("a file where the spool directory should be")
    assert _hook(["default", "updated", "begin", "-"], spool, tmp_path) == 0
    assert "kvmweb network hook updated:" in capsys.readouterr().err


def test_forged_markers_are_dropped_and_links_never_followed(tmp_path):
    spool = tmp_path / "updates"
    fw.record_network_update(spool, "default")
    secret = tmp_path / "secret"
    secret.write_text("lan\n")
    marker = fw._marker_name
    (spool / marker("lan")).symlink_to(secret)  # a link named like lan's marker, to a file saying "lan"
    (spool / marker("wan")).write_text("lan\n")  # the name does not match the file's
    (spool / marker("x" * 300)).write_text("x" * 300 + "\n")  # too long
    (spool / marker("a b")).write_text("a b\n")  # not a network name
    (spool / ".partial.updated").write_text("dmz\n")  # half written: not yet a marker
    assert fw.take_network_updates(spool) == ["default"]
    assert secret.read_text() == "lan\n"
    assert sorted(p.name for p in spool.iterdir()) == sorted([".partial.updated", marker("lan")])
    assert fw.take_network_updates(tmp_path / "nowhere") == []


def test_the_installed_network_hook_marks_a_net_update_as_libvirtd_runs_it(tmp_path):
    from networks.forwarding import engine

    paths = engine.HostPaths(hooks_dir=tmp_path / "hooks", libvirtd_pidfiles=(tmp_path / "libvirtd.pid",),
                             qemu_state_dir=tmp_path / "qemu", rules_file=tmp_path / "data/rules.json")  # fmt: skip
    engine.install_hooks(paths)  # no libvirtd to reload: a warning, the hooks are written
    assert paths.network_updates_dir == tmp_path / "data/network-updates"
    done = subprocess.run([str(paths.hook_path("network")), "default", "updated", "begin", "-"],
                          input="<hookData><network><name>default</name></network></hookData>",
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert fw.take_network_updates(paths.network_updates_dir) == ["default"]


def test_a_spool_that_is_a_link_is_neither_written_nor_read_through(tmp_path, capsys):
    target = tmp_path / "elsewhere"
    target.mkdir()
    fw.record_network_update(target, "lan")  # a marker the link's target holds
    spool = tmp_path / "updates"
    spool.symlink_to(target)
    assert _hook(["default", "updated", "begin", "-"], spool, tmp_path) == 0
    assert "kvmweb network hook updated:" in capsys.readouterr().err
    assert fw.take_network_updates(spool) == []
    assert [p.name for p in target.iterdir()] == [fw._marker_name("lan")], "nothing written or taken there"


def test_a_spool_that_cannot_be_read_yields_nothing_and_raises_nothing(tmp_path, caplog):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("a file where the spool directory should be")
    assert fw.take_network_updates(not_a_dir) == []
    assert fw.take_network_updates(not_a_dir) == []
    assert sum("cannot be read" in r.getMessage() for r in caplog.records) == 1, "said once, not every poll"


def test_a_marker_that_cannot_be_taken_is_skipped_and_the_others_taken(tmp_path, caplog):
    spool = tmp_path / "updates"
    fw.record_network_update(spool, "default")
    fw.record_network_update(spool, "lan")
    blocked = spool / f".taken-{fw._marker_name('default')}"
    blocked.mkdir()  # a directory where default's marker is renamed to
    (blocked / "x").write_text("")
    assert fw.take_network_updates(spool) == ["lan"]
    assert fw.take_network_updates(spool) == []
    assert (spool / fw._marker_name("default")).exists() and (blocked / "x").exists()
    assert sum("cannot be taken" in r.getMessage() for r in caplog.records) == 1


def test_a_marker_tells_when_it_was_written(tmp_path):
    spool = tmp_path / "updates"
    fw.record_network_update(spool, "default")
    os.utime(spool / fw._marker_name("default"), (1_700_000_000, 1_700_000_000))
    assert fw.take_network_update_times(spool) == {"default": 1_700_000_000.0}


def test_dot_files_a_killed_hook_or_watcher_left_are_removed_after_a_minute(tmp_path):
    spool = tmp_path / "updates"
    fw.record_network_update(spool, "default")
    left = [".tmp-0123456789abcdef", ".k3j_x9q2", f".taken-{fw._marker_name('lan')}"]
    for name in left + [".fresh"]:
        (spool / name).write_text("lan\n")
    (spool / ".old-dir").mkdir()
    (spool / ".old-link").symlink_to(tmp_path / "kept")
    (tmp_path / "kept").write_text("")
    two_minutes_ago = time.time() - 120
    for name in left + [".old-dir"]:
        os.utime(spool / name, (two_minutes_ago, two_minutes_ago))
    os.utime(spool / ".old-link", (two_minutes_ago, two_minutes_ago), follow_symlinks=False)
    assert fw.take_network_updates(spool) == ["default"]
    assert sorted(p.name for p in spool.iterdir()) == [".fresh", ".old-dir"]
    assert (tmp_path / "kept").exists(), "a link is removed, never what it points to"
