"""kvmweb port forwards on a hypervisor: rule text, reading and replacing the host's rules.

This module uses the standard library only and imports nothing of kvmweb, Django or libvirt:
the host worker imports it, and the engine copies it verbatim into the libvirt hooks
(`qemu.d/kvmweb`, `network.d/kvmweb`), which end with one call of `hook_main`. A hook must
be fast and must never call libvirt (libvirtd waits for it and would deadlock).

Everything kvmweb adds lives in rules and chains of its own, and every apply replaces all of
them at once from the full list of forwards, so applying twice is applying once and a forward
left out of the list is gone:

- iptables (libvirt up to 9.x, or `firewall_backend = "iptables"`): chains KVMWEB_PREROUTING
  and KVMWEB_OUTPUT in `nat` (DNAT) and KVMWEB_FORWARD in `filter` (accept), each reached by
  one jump from the built-in chain; the FORWARD jump is first, before libvirt's LIBVIRT_FWI,
  which rejects new connections into NAT networks.
- nftables (libvirt >= 10 with its nftables backend): `table ip kvmweb` with the DNAT chains,
  plus a chain `kvmweb_forward` inside libvirt's own `table ip libvirt_network`, jumped to from
  the top of its `forward` chain: an accept in a table of one's own would not stop libvirt's
  reject, because a packet passes every base chain of its hook. nft has no base port: a range
  moved to other guest ports is one rule with a map of its ports (at most MAX_SHIFTED_PORTS).

A forward is "present" only when each of its tagged rules says what the forward needs now
(addresses, bridge, ports, protocol, sources, DNAT target), not merely when rules are tagged.

A forward on every host address (no `host_address`) matches the host's local addresses, but
never loopback (127.0.0.0/8: the host's own localhost services stay its own) and never traffic
that arrives from a bridge of one of the host's libvirt networks (`guest_bridges`): a guest's DNS,
DHCP or any other connection to its gateway address must reach the host, not another guest.

With no forward left whose guest runs, nothing of kvmweb stays in the ruleset.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shlex
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

IPTABLES = "iptables"
NFTABLES = "nftables"

PRESENT = "present"
GUEST_STOPPED = "guest_stopped"
MISSING = "missing"

# Every rule kvmweb writes carries this comment plus the forward's id, which is how a check
# finds a forward's rules again.
TAG = "kvmweb:"

NAT_CHAINS = (("KVMWEB_PREROUTING", "PREROUTING"), ("KVMWEB_OUTPUT", "OUTPUT"))
FILTER_CHAINS = (("KVMWEB_FORWARD", "FORWARD"),)

NFT_TABLE = "kvmweb"
LIBVIRT_NFT_TABLE = "libvirt_network"
LIBVIRT_NFT_FORWARD = "forward"
NFT_FORWARD_CHAIN = "kvmweb_forward"

# The rules of a traffic-from-a-guest-bridge exclusion (iptables: RETURN lines at the top of
# KVMWEB_PREROUTING, before the forwards on every address) carry this comment.
BRIDGE_TAG = TAG + "guest-bridge"
LOOPBACK = "127.0.0.0/8"

# A range moved to other ports is one nft rule with a map of one element per port: at most this
# many ports (the control plane refuses longer moved ranges too). Ranges kept on their ports
# have no limit (one rule, no map).
MAX_SHIFTED_PORTS = 1024

RULES_FILE_VERSION = 1
COMMAND_TIMEOUT = 30
# A hook waits at most this long for the rules lock, then gives up (logs, exits 0): libvirtd
# waits for its hooks, and a guest start must not hang behind a stuck writer.
HOOK_LOCK_TIMEOUT = 20.0

_BRIDGE_NAME = re.compile(r"[A-Za-z0-9_.:][A-Za-z0-9_.:-]{0,14}")  # fullmatch: no "-o", no "\n"
_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_TAG_IN_IPTABLES = re.compile(r'--comment "?' + re.escape(TAG) + r'([0-9]+)"?(?:\s|\Z)')


class FirewallError(RuntimeError):
    """A firewall command failed; the message has its first line of output."""


class LockTimeout(FirewallError):
    """The rules lock stayed held longer than the caller would wait."""


@dataclass(frozen=True)
class ForwardRule:
    """One forward as the host applies it. Checked on creation, because its values end up in
    firewall commands run as root (by the worker and by libvirt's hooks)."""

    forward_id: int
    protocol: str  # "tcp" | "udp"
    host_address: str | None  # None: every address of the host
    host_port_start: int
    host_port_end: int
    guest_name: str
    guest_mac: str
    guest_address: str  # the guest IPv4 the rules DNAT to
    guest_port_start: int
    guest_port_end: int
    bridge: str  # bridge of the guest's network (FORWARD -o ...)
    source_cidrs: tuple[str, ...] = field(default=())  # empty: any source

    def __post_init__(self):
        _check_rule(self)

    @property
    def ports_shift(self) -> bool:
        """True when the guest ports differ from the host ports (DNAT then rewrites them)."""
        return self.host_port_start != self.guest_port_start


def _check_rule(rule: ForwardRule) -> None:
    """Refuse what does not belong in a firewall command, and store addresses, networks and the
    MAC in their one canonical text (the rule text and the presence check compare them)."""
    if not _is_int(rule.forward_id) or rule.forward_id < 1:
        raise ValueError(f"forward_id must be a positive integer, not {rule.forward_id!r}")
    if rule.protocol not in ("tcp", "udp"):
        raise ValueError(f"protocol must be tcp or udp, not {rule.protocol!r}")
    for name in ("host_port_start", "host_port_end", "guest_port_start", "guest_port_end"):
        port = getattr(rule, name)
        if not _is_int(port) or not 1 <= port <= 65535:
            raise ValueError(f"{name} must be a port 1-65535, not {port!r}")
    if rule.host_port_end < rule.host_port_start or rule.guest_port_end < rule.guest_port_start:
        raise ValueError("a port range must not end before it starts")
    if rule.host_port_end - rule.host_port_start != rule.guest_port_end - rule.guest_port_start:
        raise ValueError("host and guest port ranges must have the same length")
    if rule.ports_shift and rule.host_port_end - rule.host_port_start + 1 > MAX_SHIFTED_PORTS:
        raise ValueError(f"a range moved to other guest ports may have at most {MAX_SHIFTED_PORTS} ports")
    if rule.host_address is not None:
        _set(rule, "host_address", ipv4_address(rule.host_address, "host_address"))
    _set(rule, "guest_address", ipv4_address(rule.guest_address, "guest_address"))
    check_bridge(rule.bridge, "bridge")
    if not isinstance(rule.guest_mac, str) or not _MAC.fullmatch(rule.guest_mac.lower()):
        raise ValueError(f"guest_mac is not a MAC address: {rule.guest_mac!r}")
    _set(rule, "guest_mac", rule.guest_mac.lower())
    if not isinstance(rule.source_cidrs, tuple):
        raise ValueError("source_cidrs must be a tuple")
    _set(rule, "source_cidrs", tuple(ipv4_network(cidr, "source_cidrs") for cidr in rule.source_cidrs))
    if (
        not isinstance(rule.guest_name, str)
        or not rule.guest_name
        or any(ord(c) < 32 or ord(c) == 127 for c in rule.guest_name)
    ):
        raise ValueError(f"guest_name is not a domain name: {rule.guest_name!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int too


def _set(rule: ForwardRule, name: str, value) -> None:
    object.__setattr__(rule, name, value)  # frozen: only __post_init__ normalises


def ipv4_address(value, name: str) -> str:
    """An IPv4 address given as text, in canonical form. Not an int (ipaddress takes 16909060)."""
    try:
        if not isinstance(value, str):
            raise TypeError("not text")
        return str(ipaddress.IPv4Address(value))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be an IPv4 address, not {value!r}") from exc


def ipv4_network(value, name: str) -> str:
    """An IPv4 network given as text, with no host bits set, in canonical form."""
    try:
        if not isinstance(value, str):
            raise TypeError("not text")
        return str(ipaddress.IPv4Network(value, strict=True))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: {value!r} is not an IPv4 network") from exc


def check_bridge(value, name: str = "guest_bridges") -> str:
    """An interface name: 1-15 of letters, digits and `_.:-`, not starting with `-` (it would
    read as an option)."""
    if not isinstance(value, str) or not _BRIDGE_NAME.fullmatch(value):
        raise ValueError(f"{name} is not an interface name: {value!r}")
    return value


def bridges_of(rules: Sequence[ForwardRule], guest_bridges: Iterable[str] = ()) -> tuple[str, ...]:
    """The libvirt bridges whose traffic a forward on every address leaves alone: the ones given
    (every libvirt network of the host) and the bridges of the forwards' own networks."""
    return tuple(sorted({check_bridge(b) for b in guest_bridges} | {r.bridge for r in rules}))


# ---- iptables ------------------------------------------------------------------------------


def _ipt_ports(start: int, end: int) -> str:
    return str(start) if start == end else f"{start}:{end}"


def _ipt_dnat_target(rule: ForwardRule) -> str:
    """Where DNAT sends a packet. Same ports: the address only (the port is kept). A range that
    moves: the guest range with the host range's start as base port, so each host port maps to
    the guest port at the same offset (iptables' `/baseport`)."""
    if not rule.ports_shift:
        return rule.guest_address
    if rule.guest_port_start == rule.guest_port_end:
        return f"{rule.guest_address}:{rule.guest_port_start}"
    return f"{rule.guest_address}:{rule.guest_port_start}-{rule.guest_port_end}/{rule.host_port_start}"


def _sources(rule: ForwardRule) -> list[str | None]:
    return list(rule.source_cidrs) or [None]


def iptables_rule_lines(rule: ForwardRule) -> dict[str, list[str]]:
    """The `-A CHAIN ...` lines of one forward, by kvmweb chain (one line per source CIDR).

    On every address: PREROUTING matches the host's local addresses (`guest_bridges` exclusions
    come before it in the chain, see `iptables_bridge_returns`), OUTPUT the same minus loopback.
    Not `! -o lo` there: the host's connections to any of its own addresses leave through lo."""
    tag = f"-m comment --comment {TAG}{rule.forward_id}"
    if rule.host_address:
        dests = {"KVMWEB_PREROUTING": f"-d {rule.host_address}/32", "KVMWEB_OUTPUT": f"-d {rule.host_address}/32"}
    else:
        local = "-m addrtype --dst-type LOCAL"
        dests = {"KVMWEB_PREROUTING": local, "KVMWEB_OUTPUT": f"! -d {LOOPBACK} {local}"}
    lines: dict[str, list[str]] = {"KVMWEB_PREROUTING": [], "KVMWEB_OUTPUT": [], "KVMWEB_FORWARD": []}
    for source in _sources(rule):
        src = f"-s {source} " if source else ""
        for chain, dest in dests.items():
            lines[chain].append(
                f"-A {chain} {src}{dest} -p {rule.protocol} -m {rule.protocol} "
                f"--dport {_ipt_ports(rule.host_port_start, rule.host_port_end)} {tag} "
                f"-j DNAT --to-destination {_ipt_dnat_target(rule)}"
            )
        lines["KVMWEB_FORWARD"].append(
            f"-A KVMWEB_FORWARD {src}-d {rule.guest_address}/32 -o {rule.bridge} -p {rule.protocol} "
            f"-m {rule.protocol} --dport {_ipt_ports(rule.guest_port_start, rule.guest_port_end)} "
            f"-m conntrack --ctstate DNAT {tag} -j ACCEPT"
        )
    return lines


def iptables_bridge_returns(bridges: Sequence[str]) -> list[str]:
    """Lines that send traffic arriving from a libvirt bridge past the forwards on every address
    (they follow the forwards on one address, which a guest may use)."""
    return [f"-A KVMWEB_PREROUTING -i {bridge} -m comment --comment {BRIDGE_TAG} -j RETURN" for bridge in bridges]


def iptables_chain_lines(rules: Sequence[ForwardRule], guest_bridges: Sequence[str] = ()) -> dict[str, list[str]]:
    """Every kvmweb chain's lines for `rules`, in order: in PREROUTING the forwards on one
    address, then the bridge exclusions, then the forwards on every address."""
    chains: dict[str, list[str]] = {c: [] for c, _ in NAT_CHAINS + FILTER_CHAINS}
    every = [r for r in rules if not r.host_address]
    for group in ([r for r in rules if r.host_address], every):
        if group is every and every:
            chains["KVMWEB_PREROUTING"] += iptables_bridge_returns(bridges_of(rules, guest_bridges))
        for rule in group:
            for chain, lines in iptables_rule_lines(rule).items():
                chains[chain] += lines
    return chains


def ipt_canonical(line: str) -> frozenset:
    """A rule line as a set of (option, value), whatever the order of its matches and with or
    without quotes: how a rule read back from `iptables-save` is compared with the one written.
    `-A CHAIN` and module loads (`-m tcp`) are left out; a `!` goes with its option."""
    try:
        words = shlex.split(line)
    except ValueError:
        return frozenset({("unparsable", line)})
    words = words[2:] if words[:1] == ["-A"] else words
    found, negate, i = set(), False, 0
    while i < len(words):
        word = words[i]
        if word == "!":
            negate, i = True, i + 1
            continue
        value = words[i + 1] if i + 1 < len(words) else ""
        if word != "-m":
            found.add(("!" + word if negate else word, value))
        negate, i = False, i + 2
    return frozenset(found)


@dataclass
class IptablesState:
    """What `iptables-save` shows of kvmweb: the rules of built-in chains in order (to find the
    jumps), the rules tagged with each forward id in each kvmweb chain (canonical, see
    `ipt_canonical`) and the bridges excluded at the top of KVMWEB_PREROUTING."""

    builtin_rules: dict[str, list[str]]  # "nat PREROUTING" -> its `-A` lines in order
    chains: set[str]  # kvmweb chains that exist
    tagged: dict[str, dict[int, list[frozenset]]]  # kvmweb chain -> forward id -> its rules
    bridge_returns: list[str] = field(default_factory=list)

    def jumps(self, table: str, builtin: str, chain: str) -> list[int]:
        """Positions (0-based) of the jumps from `builtin` to `chain`."""
        lines = self.builtin_rules.get(f"{table} {builtin}", [])
        return [i for i, line in enumerate(lines) if line.split()[-2:] == ["-j", chain]]


def parse_iptables_save(text: str) -> IptablesState:
    state = IptablesState(builtin_rules={}, chains=set(), tagged={})
    kvmweb = {c for c, _ in NAT_CHAINS + FILTER_CHAINS}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if name in kvmweb:
                state.chains.add(name)
        elif line.startswith("-A "):
            chain = line.split()[1]
            if chain not in kvmweb:
                state.builtin_rules.setdefault(f"{table} {chain}", []).append(line)
                continue
            canonical = ipt_canonical(line)
            match = _TAG_IN_IPTABLES.search(line)
            if match:
                state.tagged.setdefault(chain, {}).setdefault(int(match.group(1)), []).append(canonical)
            elif ("--comment", BRIDGE_TAG) in canonical and ("-j", "RETURN") in canonical:
                state.bridge_returns.append(dict(canonical).get("-i", ""))
    return state


def iptables_restore_text(rules: Sequence[ForwardRule], state: IptablesState, guest_bridges: Sequence[str] = ()) -> str:
    """Input for `iptables-restore --noflush` that makes kvmweb's chains hold exactly `rules`.

    Declaring a chain flushes it (or creates it), so its old rules go without being listed.
    The jumps are deleted by their text and one inserted first, but only when they are not
    already a single jump in first place: re-applying the same forwards changes nothing.
    With no rules, the jumps go and the chains are flushed and deleted.
    """
    lines_by_chain = iptables_chain_lines(rules, guest_bridges)
    out = []
    for table, chains in (("nat", NAT_CHAINS), ("filter", FILTER_CHAINS)):
        out.append(f"*{table}")
        out.extend(f":{chain} - [0:0]" for chain, _ in chains)
        for chain, builtin in chains:
            out.extend(_iptables_jump_lines(state, table, builtin, chain, wanted=bool(rules)))
            out.extend(lines_by_chain[chain])
        if not rules:
            out.extend(f"-X {chain}" for chain, _ in chains)
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def _iptables_jump_lines(state: IptablesState, table: str, builtin: str, chain: str, *, wanted: bool) -> list[str]:
    jumps = state.jumps(table, builtin, chain)
    if wanted and jumps == [0]:
        return []
    lines = [f"-D {builtin} -j {chain}"] * len(jumps)
    if wanted:
        lines.append(f"-I {builtin} 1 -j {chain}")
    return lines


def iptables_present(rule: ForwardRule, state: IptablesState, guest_bridges: Sequence[str] = ()) -> bool:
    """The forward's rules are in kvmweb's chains exactly as they would be written now (same
    addresses, bridge, ports, protocol, sources, DNAT target: a rule left with an old guest
    address does not count), every jump is first and, for a forward on every address, the
    exclusion of each libvirt bridge (`guest_bridges` plus the forward's own) is in place."""
    tables = [("nat", c, b) for c, b in NAT_CHAINS] + [("filter", c, b) for c, b in FILTER_CHAINS]
    if any(state.jumps(t, b, c) != [0] for t, c, b in tables):
        return False
    if not rule.host_address and not set(bridges_of([rule], guest_bridges)) <= set(state.bridge_returns):
        return False
    expected = iptables_rule_lines(rule)
    return all(
        Counter(state.tagged.get(chain, {}).get(rule.forward_id, [])) == Counter(map(ipt_canonical, lines))
        for chain, lines in expected.items()
    )


def iptables_holds_kvmweb(state: IptablesState) -> bool:
    """Any kvmweb chain or jump left in the ruleset."""
    tables = [("nat", c, b) for c, b in NAT_CHAINS] + [("filter", c, b) for c, b in FILTER_CHAINS]
    return bool(state.chains) or any(state.jumps(t, b, c) for t, c, b in tables)


# ---- nftables ------------------------------------------------------------------------------


def _nft_ports(start: int, end: int) -> str:
    return str(start) if start == end else f"{start}-{end}"


def _nft_sources(rule: ForwardRule) -> str:
    if not rule.source_cidrs:
        return ""
    return "ip saddr { " + ", ".join(rule.source_cidrs) + " } "


def _nft_names(names: Sequence[str]) -> str:
    quoted = [f'"{name}"' for name in names]
    return quoted[0] if len(quoted) == 1 else "{ " + ", ".join(quoted) + " }"


def _nft_dnat_target(rule: ForwardRule) -> str:
    """Same ports: the address only. One port to another: address:port. A range moved to other
    ports: nft has no base port, so the guest port comes from a map of each host port (one rule,
    at most MAX_SHIFTED_PORTS elements)."""
    if not rule.ports_shift:
        return rule.guest_address
    if rule.guest_port_start == rule.guest_port_end:
        return f"{rule.guest_address}:{rule.guest_port_start}"
    offset = rule.guest_port_start - rule.host_port_start
    pairs = ", ".join(f"{p} : {p + offset}" for p in range(rule.host_port_start, rule.host_port_end + 1))
    return f"{rule.guest_address} : {rule.protocol} dport map {{ {pairs} }}"


def nft_dnat_rule(rule: ForwardRule, chain: str, guest_bridges: Sequence[str] = ()) -> str:
    """The DNAT rule of one forward in kvmweb's `prerouting` or `output` chain. On every address:
    the host's local addresses, in prerouting not from a libvirt bridge (`guest_bridges` plus
    the forward's own), in output not loopback."""
    if rule.host_address:
        dest = f"ip daddr {rule.host_address} "
    elif chain == "prerouting":
        dest = f"fib daddr type local iifname != {_nft_names(bridges_of([rule], guest_bridges))} "
    else:
        dest = f"ip daddr != {LOOPBACK} fib daddr type local "
    ports = _nft_ports(rule.host_port_start, rule.host_port_end)
    return (
        f"{dest}{_nft_sources(rule)}{rule.protocol} dport {ports} dnat to {_nft_dnat_target(rule)} "
        f'comment "{TAG}{rule.forward_id}"'
    )


def nft_accept_rule(rule: ForwardRule) -> str:
    """The accept that must come before libvirt's reject in its own forward chain."""
    ports = _nft_ports(rule.guest_port_start, rule.guest_port_end)
    return (
        f'oifname "{rule.bridge}" ip daddr {rule.guest_address} {_nft_sources(rule)}'
        f'{rule.protocol} dport {ports} ct status dnat accept comment "{TAG}{rule.forward_id}"'
    )


def nft_expected_facts(rule: ForwardRule, guest_bridges: Sequence[str] = ()) -> dict[str, tuple]:
    """What `nft_facts` must read from each of the forward's rules, by "table chain"."""
    ports = (rule.host_port_start, rule.host_port_end)
    common = {"proto": rule.protocol, "dport": ports, "saddr": rule.source_cidrs}
    if rule.ports_shift and rule.guest_port_start != rule.guest_port_end:
        offset = rule.guest_port_start - rule.host_port_start
        port = tuple((p, p + offset) for p in range(ports[0], ports[1] + 1))
    else:
        port = rule.guest_port_start if rule.ports_shift else None
    common["dnat"] = (rule.guest_address, port)
    if rule.host_address:
        pre = out = {"daddr": _nft_prefix(rule.host_address)}
    else:
        pre = {"fib": "local", "not_iifname": bridges_of([rule], guest_bridges)}
        out = {"fib": "local", "not_daddr": LOOPBACK}
    sources = tuple(sorted(rule.source_cidrs))
    common["saddr"] = sources
    accept = {"oifname": rule.bridge, "daddr": _nft_prefix(rule.guest_address), "saddr": sources,
              "proto": rule.protocol, "dport": (rule.guest_port_start, rule.guest_port_end), "ct": "dnat",
              "verdict": "accept"}  # fmt: skip
    return {
        f"{NFT_TABLE} prerouting": _facts_key(common | pre),
        f"{NFT_TABLE} output": _facts_key(common | out),
        f"{LIBVIRT_NFT_TABLE} {NFT_FORWARD_CHAIN}": _facts_key(accept),
    }


def _facts_key(facts: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in facts.items() if v not in ((), None, "")))


def nft_facts(expr: list) -> tuple:
    """What a rule of kvmweb's does, read from its `nft -j` expressions: addresses, interface
    names, protocol, ports, sources, DNAT target, verdict (counters and the like are left out)."""
    facts: dict = {}
    for item in expr if isinstance(expr, list) else []:
        if not isinstance(item, dict):
            continue
        if "match" in item:
            _nft_match_facts(facts, item["match"])
        elif "dnat" in item:
            dnat = item["dnat"] or {}
            facts["dnat"] = (dnat.get("addr"), _nft_port_value(dnat.get("port")))
        elif "accept" in item:
            facts["verdict"] = "accept"
    return _facts_key(facts)


def _nft_match_facts(facts: dict, match: dict) -> None:
    left, right, op = match.get("left") or {}, match.get("right"), match.get("op", "==")
    positive = op in ("==", "in")
    if not isinstance(left, dict):
        return
    if "payload" in left:
        payload = left["payload"]
        field_name = (payload.get("protocol"), payload.get("field"))
        if field_name == ("ip", "daddr"):
            facts["daddr" if positive else "not_daddr"] = _nft_prefix(right)
        elif field_name == ("ip", "saddr") and positive:
            facts["saddr"] = tuple(sorted(_nft_prefix(v) for v in _nft_elements(right)))
        elif field_name[1] == "dport" and positive:
            facts["proto"], facts["dport"] = field_name[0], _nft_range(right)
    elif "meta" in left and left["meta"].get("key") in ("iifname", "oifname"):
        key = left["meta"]["key"]
        if key == "oifname" and positive:
            facts["oifname"] = right
        elif key == "iifname" and not positive:
            facts["not_iifname"] = tuple(sorted(_nft_elements(right)))
    elif "fib" in left and positive:
        facts["fib"] = right
    elif "ct" in left and left["ct"].get("key") == "status":
        facts["ct"] = right if isinstance(right, str) else tuple(_nft_elements(right))


def _nft_elements(value) -> list:
    if isinstance(value, dict) and "set" in value:
        return list(value["set"])
    return [value]


def _nft_prefix(value) -> str:
    """An address or network as a network's text (nft prints a /32 as the bare address)."""
    if isinstance(value, dict) and "prefix" in value:
        value = f"{value['prefix'].get('addr')}/{value['prefix'].get('len')}"
    try:
        return str(ipaddress.IPv4Network(str(value)))
    except ValueError:
        return str(value)


def _nft_range(value) -> tuple:
    if isinstance(value, dict) and "range" in value:
        return tuple(value["range"])
    return (value, value)


def _nft_port_value(port):
    if isinstance(port, dict) and "map" in port:
        pairs = (port["map"].get("data") or {}).get("set") or []
        return tuple(sorted(tuple(pair) for pair in pairs if isinstance(pair, list) and len(pair) == 2))
    return port


@dataclass
class NftState:
    """What `nft -j list ruleset` shows of kvmweb and of libvirt's table."""

    kvmweb_table: bool
    libvirt_table: bool
    forward_chain: bool  # kvmweb_forward exists in libvirt's table
    forward_rules: list[tuple[int, str | None]]  # libvirt's forward chain: (handle, jump target)
    # "kvmweb prerouting" / "libvirt_network kvmweb_forward" -> forward id -> its rules' `nft_facts`
    tagged: dict[str, dict[int, list[tuple]]]

    def jump_positions(self) -> list[int]:
        return [i for i, (_, target) in enumerate(self.forward_rules) if target == NFT_FORWARD_CHAIN]


def parse_nft_json(text: str) -> NftState:
    state = NftState(False, False, False, [], {})
    for item in json.loads(text or "{}").get("nftables", []):
        if "table" in item and item["table"].get("family") == "ip":
            state.kvmweb_table |= item["table"]["name"] == NFT_TABLE
            state.libvirt_table |= item["table"]["name"] == LIBVIRT_NFT_TABLE
        elif "chain" in item and item["chain"].get("family") == "ip":
            chain = item["chain"]
            state.forward_chain |= (chain["table"], chain["name"]) == (LIBVIRT_NFT_TABLE, NFT_FORWARD_CHAIN)
        elif "rule" in item and item["rule"].get("family") == "ip":
            _read_nft_rule(state, item["rule"])
    return state


def _read_nft_rule(state: NftState, rule: dict) -> None:
    where = (rule["table"], rule["chain"])
    if where == (LIBVIRT_NFT_TABLE, LIBVIRT_NFT_FORWARD):
        targets = [e["jump"]["target"] for e in rule.get("expr", []) if isinstance(e, dict) and "jump" in e]
        state.forward_rules.append((rule["handle"], targets[0] if targets else None))
    comment = rule.get("comment", "")
    if where[0] in (NFT_TABLE, LIBVIRT_NFT_TABLE) and re.fullmatch(re.escape(TAG) + r"[0-9]+", comment):
        ids = state.tagged.setdefault(" ".join(where), {})
        ids.setdefault(int(comment[len(TAG) :]), []).append(nft_facts(rule.get("expr", [])))


def nft_script(rules: Sequence[ForwardRule], state: NftState, guest_bridges: Sequence[str] = ()) -> str:
    """An `nft -f` script (one atomic transaction) that makes kvmweb's rules exactly `rules`.

    Our table is created empty if missing and deleted, then written again whole. In libvirt's
    table our chain is flushed and refilled, and the jump to it is made the first rule of
    libvirt's forward chain (only when it is not already). With no rules, all of it goes."""
    out = [f"table ip {NFT_TABLE} {{", "}", f"delete table ip {NFT_TABLE}"]
    if rules:
        out += _nft_table_text(rules, bridges_of(rules, guest_bridges))
    if state.libvirt_table:
        out += _nft_libvirt_lines(rules, state)
    return "\n".join(out) + "\n"


def _nft_table_text(rules: Sequence[ForwardRule], bridges: Sequence[str]) -> list[str]:
    out = [f"table ip {NFT_TABLE} {{"]
    # -100 is dstnat; nft 1.0.6 takes the name for prerouting only.
    for chain, priority in (("prerouting", "dstnat"), ("output", "-100")):
        out += [f"\tchain {chain} {{", f"\t\ttype nat hook {chain} priority {priority}; policy accept;"]
        out += [f"\t\t{nft_dnat_rule(rule, chain, bridges)}" for rule in rules]
        out.append("\t}")
    out.append("}")
    return out


def _nft_libvirt_lines(rules: Sequence[ForwardRule], state: NftState) -> list[str]:
    table, jumps = f"ip {LIBVIRT_NFT_TABLE}", state.jump_positions()
    keep_jump = bool(rules) and jumps == [0]
    out = []
    if not keep_jump:
        handles = [h for h, target in state.forward_rules if target == NFT_FORWARD_CHAIN]
        out += [f"delete rule {table} {LIBVIRT_NFT_FORWARD} handle {h}" for h in handles]
    if rules:
        out += [f"add chain {table} {NFT_FORWARD_CHAIN}", f"flush chain {table} {NFT_FORWARD_CHAIN}"]
        out += [f"add rule {table} {NFT_FORWARD_CHAIN} {nft_accept_rule(rule)}" for rule in rules]
        if not keep_jump:
            out.append(f"insert rule {table} {LIBVIRT_NFT_FORWARD} jump {NFT_FORWARD_CHAIN}")
    elif state.forward_chain:
        out += [f"flush chain {table} {NFT_FORWARD_CHAIN}", f"delete chain {table} {NFT_FORWARD_CHAIN}"]
    return out


def nft_present(rule: ForwardRule, state: NftState, guest_bridges: Sequence[str] = ()) -> bool:
    """Each of the forward's rules is there as it would be written now (addresses, bridges,
    ports, protocol, sources, DNAT target: a rule left with an old guest address does not
    count) and, with libvirt's table, our jump is the first rule of its forward chain."""
    for where, facts in nft_expected_facts(rule, guest_bridges).items():
        if where.startswith(LIBVIRT_NFT_TABLE) and not state.libvirt_table:
            continue  # no libvirt reject to get past
        if state.tagged.get(where, {}).get(rule.forward_id, []) != [facts]:
            return False
    return not state.libvirt_table or state.jump_positions() == [0]


def nft_holds_kvmweb(state: NftState) -> bool:
    return state.kvmweb_table or state.forward_chain or bool(state.jump_positions())


# ---- running the tools ---------------------------------------------------------------------


def _run(argv: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirewallError(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        first = (done.stderr or done.stdout).strip().splitlines()[:1]
        raise FirewallError(f"{' '.join(argv[:2])} failed: {first[0] if first else done.returncode}")
    return done.stdout


def read_iptables() -> IptablesState:
    return parse_iptables_save(_run(["iptables-save", "-t", "nat"]) + _run(["iptables-save", "-t", "filter"]))


def read_nft() -> NftState:
    return parse_nft_json(_run(["nft", "-j", "list", "ruleset"]))


def tool_exists(name: str) -> bool:
    return any(Path(d, name).is_file() for d in os.environ.get("PATH", "/usr/sbin:/usr/bin").split(os.pathsep))


def replace_rules(backend: str, rules: Sequence[ForwardRule], guest_bridges: Sequence[str] = ()) -> None:
    """Make the host's kvmweb rules exactly `rules` (the forwards whose guest runs); forwards on
    every address leave traffic from `guest_bridges` (and the forwards' bridges) alone."""
    rules = sorted(rules, key=lambda r: r.forward_id)
    if backend == IPTABLES:
        state = read_iptables()
        if rules or iptables_holds_kvmweb(state):
            text = iptables_restore_text(rules, state, guest_bridges)
            _run(["iptables-restore", "-w", "--noflush"], stdin=text)
    elif backend == NFTABLES:
        state = read_nft()
        if rules or nft_holds_kvmweb(state):
            _run(["nft", "-f", "-"], stdin=nft_script(rules, state, guest_bridges))
    else:
        raise FirewallError(f"unknown firewall backend {backend!r}")


def remove_other_backend(backend: str) -> None:
    """A host whose libvirt switched backends keeps nothing of kvmweb in the old one."""
    other = NFTABLES if backend == IPTABLES else IPTABLES
    if tool_exists("nft" if other == NFTABLES else "iptables-save"):
        replace_rules(other, [])


def states(
    backend: str, rules: Sequence[ForwardRule], running_guests: Iterable[str], guest_bridges: Sequence[str] = ()
) -> dict[int, str]:
    """forward id -> present, guest_stopped or missing, from the host's current rules (a rule
    that differs from what the forward needs now, e.g. an old guest address, is missing)."""
    running = set(running_guests)
    if backend == IPTABLES:
        state, present = read_iptables(), iptables_present
    else:
        state, present = read_nft(), nft_present
    return {
        r.forward_id: (
            GUEST_STOPPED if r.guest_name not in running else PRESENT if present(r, state, guest_bridges) else MISSING
        )
        for r in rules
    }


# ---- the rules file, shared by the worker and the hooks ------------------------------------


@dataclass(frozen=True)
class RulesFile:
    backend: str
    rules: list[ForwardRule]
    guest_bridges: tuple[str, ...]  # every libvirt bridge of the host, as of the last apply


def rules_to_json(backend: str, rules: Sequence[ForwardRule], guest_bridges: Sequence[str] = ()) -> str:
    body = {
        "version": RULES_FILE_VERSION,
        "backend": backend,
        "forwards": [asdict(r) for r in rules],
        "guest_bridges": list(bridges_of(rules, guest_bridges)),
    }
    return json.dumps(body, indent=1, sort_keys=True) + "\n"


def rules_from_json(text: str) -> RulesFile:
    """The rules file, every value checked again (it is read by root's hooks); ValueError for
    anything else. `guest_bridges` may be absent (a file written before it existed)."""
    body = json.loads(text)
    if not isinstance(body, dict) or body.get("version") != RULES_FILE_VERSION:
        version = body.get("version") if isinstance(body, dict) else None
        raise ValueError(f"rules file version {version!r} is not {RULES_FILE_VERSION}")
    if body.get("backend") not in (IPTABLES, NFTABLES):
        raise ValueError(f"rules file backend {body.get('backend')!r} is not iptables or nftables")
    bridges = body.get("guest_bridges", [])
    if not isinstance(body.get("forwards"), list) or not isinstance(bridges, list):
        raise ValueError("rules file forwards and guest_bridges must be lists")
    rules = []
    for item in body["forwards"]:
        try:
            rules.append(ForwardRule(**dict(item, source_cidrs=tuple(item.get("source_cidrs", ())))))
        except (TypeError, AttributeError) as exc:  # not a mapping, a field missing or unknown
            raise ValueError(f"rules file forward {item!r:.80}: {exc}") from exc
    return RulesFile(body["backend"], rules, bridges_of(rules, bridges))


def write_atomically(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write `text` to `path` through a temporary file and a rename, so a reader sees the old
    file or the new one, never half of one. Returns False (and writes nothing) if unchanged."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text and (path.stat().st_mode & 0o7777) == mode:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


@contextlib.contextmanager
def rules_lock(rules_file: Path, timeout: float | None = None):
    """One writer of the host's kvmweb rules at a time: the worker and every hook. With a
    `timeout` (seconds), LockTimeout when the lock stays held that long."""
    rules_file.parent.mkdir(parents=True, exist_ok=True)
    with open(rules_file.with_name(rules_file.name + ".lock"), "a") as lock:
        if timeout is None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(f"the rules lock stayed held for {timeout:g} s") from None
                    time.sleep(0.05)
        yield


# ---- the hooks -----------------------------------------------------------------------------


def running_domains(qemu_state_dir: Path) -> set[str]:
    """Running guests, from the status files libvirt keeps for them (`<state dir>/NAME.xml`):
    a hook must not ask libvirt."""
    with contextlib.suppress(FileNotFoundError):
        return {p.stem for p in qemu_state_dir.glob("*.xml")}
    return set()


def hook_running_set(kind: str, argv: Sequence[str], qemu_state_dir: Path) -> set[str] | None:
    """The guests whose forwards the host should hold after this hook call, or None when the
    call changes nothing. The guest being started or stopped counts as the event says, because
    its status file may be written or removed only after the hook."""
    obj, op = (list(argv) + ["", ""])[:2]
    running = running_domains(qemu_state_dir)
    if kind == "qemu" and op in ("started", "reconnect"):
        return running | {obj}
    if kind == "qemu" and op in ("stopped", "release"):
        return running - {obj}
    if kind == "network" and op == "started":
        return running
    return None


# ---- net-updates seen by the network hook (read by the host worker's event watcher) ---------
#
# libvirt emits no event for a net-update but runs the network hook with `NAME updated begin -`
# once the update succeeded. The hook leaves a marker in the spool directory: one small file per
# network, named by a digest of the name (never by the name itself, which comes from outside),
# holding the name. Writing it again before the watcher took it is one marker, not two: the
# spool never holds more files than the host has networks. Both sides open the spool itself
# without following a link (a link planted in its place would have the root hook write, and the
# watcher remove, files wherever it points) and name every file relative to that directory.

NETWORK_NAME_MAX = 255  # the mirror's column
_NETWORK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+@-]*")
MARKER_SUFFIX = ".updated"
MARKER_MAX_BYTES = NETWORK_NAME_MAX + 1  # the name (ASCII) and its newline
TAKEN_PREFIX = ".taken-"
# A dot file older than this is what a hook or watcher killed midway left (a temp file, a taken marker)
STALE_SECONDS = 60.0

_spool_log = logging.getLogger("kvmweb.network_updates")
_spool_problems_logged: set[str] = set()


def valid_network_name(name) -> bool:
    return isinstance(name, str) and len(name) <= NETWORK_NAME_MAX and bool(_NETWORK_NAME.fullmatch(name))


def _marker_name(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest() + MARKER_SUFFIX


@contextlib.contextmanager
def _spool_dir(spool: Path):
    """The spool directory's fd; OSError (ELOOP, ENOTDIR) when `spool` is a link or no directory."""
    fd = os.open(spool, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def record_network_update(spool: Path, name: str) -> bool:
    """Leave "network `name` was updated" in `spool`. False (nothing written) for a name that
    is not a network name."""
    if not valid_network_name(name):
        return False
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _spool_dir(spool) as spool_fd:
        tmp, fd = _new_temp_file(spool_fd)  # a reader skips dot files: never half a marker
        try:
            with os.fdopen(fd, "w") as f:
                f.write(name + "\n")
            os.replace(tmp, _marker_name(name), src_dir_fd=spool_fd, dst_dir_fd=spool_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=spool_fd)
            raise
    return True


def _new_temp_file(spool_fd: int) -> tuple[str, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _attempt in range(100):
        tmp = f".tmp-{secrets.token_hex(8)}"
        try:
            return tmp, os.open(tmp, flags, 0o600, dir_fd=spool_fd)
        except FileExistsError:
            continue
    raise FileExistsError("no free temporary name in the network-updates spool")


def take_network_updates(spool: Path) -> list[str]:
    """The names of the networks marked updated, sorted, their markers removed (as
    take_network_update_times)."""
    return sorted(take_network_update_times(spool))


def take_network_update_times(spool: Path) -> dict[str, float]:
    """Each network marked updated → when its marker was written (a time.time() value), the
    markers removed. Each marker is first renamed out of the way, so an update recorded while
    it is read leaves a new one for the next call. A marker that is not one (too long, a name
    that is not a network name or does not match the file's name) is removed and ignored; what
    is not a regular file is left alone. A spool that cannot be read, and a marker that cannot
    be taken, are skipped (and logged once): they never stop the caller. Dot files older than
    STALE_SECONDS are removed."""
    try:
        with _spool_dir(spool) as spool_fd:
            entries = list(os.scandir(spool_fd))
            _remove_stale(spool_fd, entries)
            return _take_markers(spool, spool_fd, entries)
    except FileNotFoundError:
        return {}
    except OSError as error:
        _log_once(f"spool {spool}", f"network-updates spool {spool} cannot be read: {error}")
        return {}


def _take_markers(spool: Path, spool_fd: int, entries: list[os.DirEntry]) -> dict[str, float]:
    found = {}
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(MARKER_SUFFIX):
            continue
        if not entry.is_file(follow_symlinks=False):
            continue
        taken = TAKEN_PREFIX + entry.name
        try:
            os.replace(entry.name, taken, src_dir_fd=spool_fd, dst_dir_fd=spool_fd)
        except FileNotFoundError:
            continue
        except OSError as error:  # e.g. a directory where the taken marker goes
            _log_once(f"{spool}/{entry.name}", f"network-updates marker {spool}/{entry.name} cannot be taken: {error}")
            continue
        marker = _read_marker(spool_fd, taken)
        with contextlib.suppress(OSError):
            os.unlink(taken, dir_fd=spool_fd)
        if marker is not None and _marker_name(marker[0]) == entry.name:
            name, written_at = marker
            found[name] = min(written_at, found.get(name, written_at))
    return found


def _read_marker(spool_fd: int, name: str) -> tuple[str, float] | None:
    """The network name a marker holds and the marker's mtime."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=spool_fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None
        raw = f.read(MARKER_MAX_BYTES + 1)
    try:
        network = raw.decode().removesuffix("\n")
    except UnicodeDecodeError:
        return None
    return (network, info.st_mtime) if len(raw) <= MARKER_MAX_BYTES and valid_network_name(network) else None


def _remove_stale(spool_fd: int, entries: list[os.DirEntry]) -> None:
    """Remove the dot files a hook or watcher killed midway left behind (unlink removes a
    link itself, and never a directory)."""
    oldest = time.time() - STALE_SECONDS
    for entry in entries:
        if not entry.name.startswith("."):
            continue
        with contextlib.suppress(OSError):
            if entry.stat(follow_symlinks=False).st_mtime < oldest:
                os.unlink(entry.name, dir_fd=spool_fd)


def _log_once(key: str, message: str) -> None:
    """A spool problem repeats every poll: say it once per process."""
    if key not in _spool_problems_logged:
        _spool_problems_logged.add(key)
        _spool_log.warning("%s", message)


def hook_main(
    kind: str,
    argv: Sequence[str],
    *,
    rules_file: str,
    qemu_state_dir: str,
    network_updates_dir: str = "",
    lock_timeout: float = HOOK_LOCK_TIMEOUT,
) -> int:
    """What `qemu.d/kvmweb` and `network.d/kvmweb` run. Always exits 0: a failing hook would make
    libvirt abort a guest's start or kill it on reconnect, or report a net-update that was made
    as failed; errors go to libvirtd's log. Waits at most `lock_timeout` seconds for the rules
    lock (libvirtd waits for the hook meanwhile); a net-update's marker needs no lock."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdin.read()  # libvirt writes the domain/network XML to us; take it and drop it
    if kind == "network" and list(argv[1:2]) == ["updated"]:
        try:
            if network_updates_dir:
                record_network_update(Path(network_updates_dir), argv[0])
        except Exception as exc:
            print(f"kvmweb network hook updated: {exc}", file=sys.stderr)
        return 0
    try:
        with rules_lock(Path(rules_file), timeout=lock_timeout):
            running = hook_running_set(kind, argv, Path(qemu_state_dir))
            if running is None:
                return 0
            try:
                saved = rules_from_json(Path(rules_file).read_text())
            except FileNotFoundError:
                return 0
            replace_rules(saved.backend, [r for r in saved.rules if r.guest_name in running], saved.guest_bridges)
    except Exception as exc:
        print(f"kvmweb {kind} hook {' '.join(argv[:2])}: {exc}", file=sys.stderr)
    return 0
