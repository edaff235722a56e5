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
  reject, because a packet passes every base chain of its hook.

With no forward left whose guest runs, nothing of kvmweb stays in the ruleset.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
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

RULES_FILE_VERSION = 1
COMMAND_TIMEOUT = 30

_BRIDGE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_TAG_IN_IPTABLES = re.compile(r'--comment "?' + re.escape(TAG) + r'(\d+)"?')


class FirewallError(RuntimeError):
    """A firewall command failed; the message has its first line of output."""


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
    if not isinstance(rule.forward_id, int) or isinstance(rule.forward_id, bool) or rule.forward_id < 1:
        raise ValueError(f"forward_id must be a positive integer, not {rule.forward_id!r}")
    if rule.protocol not in ("tcp", "udp"):
        raise ValueError(f"protocol must be tcp or udp, not {rule.protocol!r}")
    for name in ("host_port_start", "host_port_end", "guest_port_start", "guest_port_end"):
        port = getattr(rule, name)
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError(f"{name} must be a port 1-65535, not {port!r}")
    if rule.host_port_end < rule.host_port_start or rule.guest_port_end < rule.guest_port_start:
        raise ValueError("a port range must not end before it starts")
    if rule.host_port_end - rule.host_port_start != rule.guest_port_end - rule.guest_port_start:
        raise ValueError("host and guest port ranges must have the same length")
    if rule.host_address is not None:
        _ipv4(rule.host_address, "host_address")
    _ipv4(rule.guest_address, "guest_address")
    if not _BRIDGE_NAME.match(str(rule.bridge)):
        raise ValueError(f"bridge is not an interface name: {rule.bridge!r}")
    if not isinstance(rule.source_cidrs, tuple):
        raise ValueError("source_cidrs must be a tuple")
    for cidr in rule.source_cidrs:
        try:
            ipaddress.IPv4Network(cidr, strict=False)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"source_cidrs: {cidr!r} is not an IPv4 network") from exc
    if not isinstance(rule.guest_name, str) or not rule.guest_name or any(ord(c) < 32 for c in rule.guest_name):
        raise ValueError(f"guest_name is not a domain name: {rule.guest_name!r}")


def _ipv4(value, name: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be an IPv4 address, not {value!r}") from exc


def _cidr(value: str) -> str:
    """A source CIDR in its canonical form (host bits cleared), as iptables and nft print it."""
    return str(ipaddress.IPv4Network(value, strict=False))


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
    return [_cidr(c) for c in rule.source_cidrs] or [None]


def iptables_rule_lines(rule: ForwardRule) -> dict[str, list[str]]:
    """The `-A CHAIN ...` lines of one forward, by kvmweb chain (one line per source CIDR)."""
    tag = f"-m comment --comment {TAG}{rule.forward_id}"
    dest = f"-d {rule.host_address}/32" if rule.host_address else "-m addrtype --dst-type LOCAL"
    dnat, accept = [], []
    for source in _sources(rule):
        src = f"-s {source} " if source else ""
        dnat.append(
            f"{src}{dest} -p {rule.protocol} -m {rule.protocol} "
            f"--dport {_ipt_ports(rule.host_port_start, rule.host_port_end)} {tag} "
            f"-j DNAT --to-destination {_ipt_dnat_target(rule)}"
        )
        accept.append(
            f"{src}-d {rule.guest_address}/32 -o {rule.bridge} -p {rule.protocol} -m {rule.protocol} "
            f"--dport {_ipt_ports(rule.guest_port_start, rule.guest_port_end)} "
            f"-m conntrack --ctstate DNAT {tag} -j ACCEPT"
        )
    return {
        "KVMWEB_PREROUTING": [f"-A KVMWEB_PREROUTING {line}" for line in dnat],
        "KVMWEB_OUTPUT": [f"-A KVMWEB_OUTPUT {line}" for line in dnat],
        "KVMWEB_FORWARD": [f"-A KVMWEB_FORWARD {line}" for line in accept],
    }


@dataclass
class IptablesState:
    """What `iptables-save` shows of kvmweb: the rules of built-in chains in order (to find the
    jumps) and the forward ids tagged in each kvmweb chain, with how many rules each."""

    builtin_rules: dict[str, list[str]]  # "nat PREROUTING" -> its `-A` lines in order
    chains: set[str]  # kvmweb chains that exist
    tagged: dict[str, dict[int, int]]  # kvmweb chain -> forward id -> rule count

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
            if chain in kvmweb:
                match = _TAG_IN_IPTABLES.search(line)
                if match:
                    ids = state.tagged.setdefault(chain, {})
                    ids[int(match.group(1))] = ids.get(int(match.group(1)), 0) + 1
            else:
                state.builtin_rules.setdefault(f"{table} {chain}", []).append(line)
    return state


def iptables_restore_text(rules: Sequence[ForwardRule], state: IptablesState) -> str:
    """Input for `iptables-restore --noflush` that makes kvmweb's chains hold exactly `rules`.

    Declaring a chain flushes it (or creates it), so its old rules go without being listed.
    The jumps are deleted by their text and one inserted first, but only when they are not
    already a single jump in first place: re-applying the same forwards changes nothing.
    With no rules, the jumps go and the chains are flushed and deleted.
    """
    lines_by_chain: dict[str, list[str]] = {c: [] for c, _ in NAT_CHAINS + FILTER_CHAINS}
    for rule in rules:
        for chain, lines in iptables_rule_lines(rule).items():
            lines_by_chain[chain].extend(lines)
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


def iptables_present(rule: ForwardRule, state: IptablesState) -> bool:
    """All of the forward's rules are in kvmweb's chains and every jump is first."""
    tables = [("nat", c, b) for c, b in NAT_CHAINS] + [("filter", c, b) for c, b in FILTER_CHAINS]
    if any(state.jumps(t, b, c) != [0] for t, c, b in tables):
        return False
    expected = iptables_rule_lines(rule)
    return all(state.tagged.get(chain, {}).get(rule.forward_id, 0) == len(lines) for chain, lines in expected.items())


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
    return "ip saddr { " + ", ".join(_cidr(c) for c in rule.source_cidrs) + " } "


def nft_dnat_rules(rule: ForwardRule) -> list[str]:
    """The DNAT rules of one forward (for both the prerouting and the output chain).

    nft has no base port like iptables, so a range that moves to other guest ports is one rule
    per port; a range kept as it is one rule that leaves the port alone."""
    dest = f"ip daddr {rule.host_address} " if rule.host_address else "fib daddr type local "
    head = f"{dest}{_nft_sources(rule)}{rule.protocol} dport"
    tag = f'comment "{TAG}{rule.forward_id}"'
    if not rule.ports_shift:
        ports = _nft_ports(rule.host_port_start, rule.host_port_end)
        return [f"{head} {ports} dnat to {rule.guest_address} {tag}"]
    offset = rule.guest_port_start - rule.host_port_start
    return [
        f"{head} {port} dnat to {rule.guest_address}:{port + offset} {tag}"
        for port in range(rule.host_port_start, rule.host_port_end + 1)
    ]


def nft_accept_rule(rule: ForwardRule) -> str:
    """The accept that must come before libvirt's reject in its own forward chain."""
    ports = _nft_ports(rule.guest_port_start, rule.guest_port_end)
    return (
        f'oifname "{rule.bridge}" ip daddr {rule.guest_address} {_nft_sources(rule)}'
        f'{rule.protocol} dport {ports} ct status dnat accept comment "{TAG}{rule.forward_id}"'
    )


@dataclass
class NftState:
    """What `nft -j list ruleset` shows of kvmweb and of libvirt's table."""

    kvmweb_table: bool
    libvirt_table: bool
    forward_chain: bool  # kvmweb_forward exists in libvirt's table
    forward_rules: list[tuple[int, str | None]]  # libvirt's forward chain: (handle, jump target)
    tagged: dict[str, dict[int, int]]  # "kvmweb prerouting" / "libvirt_network kvmweb_forward" -> id -> count

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
    if where[0] in (NFT_TABLE, LIBVIRT_NFT_TABLE) and comment.startswith(TAG) and comment[len(TAG) :].isdigit():
        ids = state.tagged.setdefault(" ".join(where), {})
        forward_id = int(comment[len(TAG) :])
        ids[forward_id] = ids.get(forward_id, 0) + 1


def nft_script(rules: Sequence[ForwardRule], state: NftState) -> str:
    """An `nft -f` script (one atomic transaction) that makes kvmweb's rules exactly `rules`.

    Our table is created empty if missing and deleted, then written again whole. In libvirt's
    table our chain is flushed and refilled, and the jump to it is made the first rule of
    libvirt's forward chain (only when it is not already). With no rules, all of it goes."""
    out = [f"table ip {NFT_TABLE} {{", "}", f"delete table ip {NFT_TABLE}"]
    if rules:
        out += _nft_table_text(rules)
    if state.libvirt_table:
        out += _nft_libvirt_lines(rules, state)
    return "\n".join(out) + "\n"


def _nft_table_text(rules: Sequence[ForwardRule]) -> list[str]:
    dnat = [line for rule in rules for line in nft_dnat_rules(rule)]
    out = [f"table ip {NFT_TABLE} {{"]
    # -100 is dstnat; nft 1.0.6 takes the name for prerouting only.
    for chain, priority in (("prerouting", "dstnat"), ("output", "-100")):
        out += [f"\tchain {chain} {{", f"\t\ttype nat hook {chain} priority {priority}; policy accept;"]
        out += [f"\t\t{line}" for line in dnat]
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


def nft_present(rule: ForwardRule, state: NftState) -> bool:
    dnat = len(nft_dnat_rules(rule))
    tagged = state.tagged
    if tagged.get(f"{NFT_TABLE} prerouting", {}).get(rule.forward_id, 0) != dnat:
        return False
    if tagged.get(f"{NFT_TABLE} output", {}).get(rule.forward_id, 0) != dnat:
        return False
    if not state.libvirt_table:
        return True  # no libvirt reject to get past
    accepted = tagged.get(f"{LIBVIRT_NFT_TABLE} {NFT_FORWARD_CHAIN}", {}).get(rule.forward_id, 0) == 1
    return accepted and state.jump_positions() == [0]


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


def replace_rules(backend: str, rules: Sequence[ForwardRule]) -> None:
    """Make the host's kvmweb rules exactly `rules` (the forwards whose guest runs)."""
    rules = sorted(rules, key=lambda r: r.forward_id)
    if backend == IPTABLES:
        state = read_iptables()
        if rules or iptables_holds_kvmweb(state):
            _run(["iptables-restore", "-w", "--noflush"], stdin=iptables_restore_text(rules, state))
    elif backend == NFTABLES:
        state = read_nft()
        if rules or nft_holds_kvmweb(state):
            _run(["nft", "-f", "-"], stdin=nft_script(rules, state))
    else:
        raise FirewallError(f"unknown firewall backend {backend!r}")


def remove_other_backend(backend: str) -> None:
    """A host whose libvirt switched backends keeps nothing of kvmweb in the old one."""
    other = NFTABLES if backend == IPTABLES else IPTABLES
    if tool_exists("nft" if other == NFTABLES else "iptables-save"):
        replace_rules(other, [])


def states(backend: str, rules: Sequence[ForwardRule], running_guests: Iterable[str]) -> dict[int, str]:
    """forward id -> present, guest_stopped or missing, from the host's current rules."""
    running = set(running_guests)
    if backend == IPTABLES:
        state, present = read_iptables(), iptables_present
    else:
        state, present = read_nft(), nft_present
    return {
        r.forward_id: (GUEST_STOPPED if r.guest_name not in running else PRESENT if present(r, state) else MISSING)
        for r in rules
    }


# ---- the rules file, shared by the worker and the hooks ------------------------------------


def rules_to_json(backend: str, rules: Sequence[ForwardRule]) -> str:
    body = {"version": RULES_FILE_VERSION, "backend": backend, "forwards": [asdict(r) for r in rules]}
    return json.dumps(body, indent=1, sort_keys=True) + "\n"


def rules_from_json(text: str) -> tuple[str, list[ForwardRule]]:
    body = json.loads(text)
    if body.get("version") != RULES_FILE_VERSION:
        raise ValueError(f"rules file version {body.get('version')!r} is not {RULES_FILE_VERSION}")
    rules = []
    for item in body["forwards"]:
        item = dict(item, source_cidrs=tuple(item.get("source_cidrs", ())))
        rules.append(ForwardRule(**item))
    return body["backend"], rules


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
def rules_lock(rules_file: Path):
    """One writer of the host's kvmweb rules at a time: the worker and every hook."""
    rules_file.parent.mkdir(parents=True, exist_ok=True)
    with open(rules_file.with_name(rules_file.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
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


def hook_main(kind: str, argv: Sequence[str], *, rules_file: str, qemu_state_dir: str) -> int:
    """What `qemu.d/kvmweb` and `network.d/kvmweb` run. Always exits 0: a failing hook would make
    libvirt abort a guest's start or kill it on reconnect; errors go to libvirtd's log."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdin.read()  # libvirt writes the domain/network XML to us; take it and drop it
    try:
        with rules_lock(Path(rules_file)):
            running = hook_running_set(kind, argv, Path(qemu_state_dir))
            if running is None:
                return 0
            try:
                backend, rules = rules_from_json(Path(rules_file).read_text())
            except FileNotFoundError:
                return 0
            replace_rules(backend, [r for r in rules if r.guest_name in running])
    except Exception as exc:
        print(f"kvmweb {kind} hook {' '.join(argv[:2])}: {exc}", file=sys.stderr)
    return 0
