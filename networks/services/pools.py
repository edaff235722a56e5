"""SR-IOV VF pool networks (`<forward mode='hostdev'><pf dev=…/>`): which PFs may carry one,
how full a pool is, and the warnings before a guest takes one of its VFs.

libvirt hands a pool's VFs out itself: it lists the PF's VFs when the pool starts and gives
each guest interface on the pool the first VF no other interface of that pool uses, when the
guest starts (or the interface is hot-plugged). It counts only its own pool's connections: a
VF a guest holds directly (`<hostdev>` or `<interface type='hostdev'>`) still looks free to
the pool, which is why kvmweb counts holders from the whole host (services.pci) instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from networks.choices import ForwardInterfaceKind, ForwardMode
from networks.hypervisor import xml
from networks.models import ForwardInterface, Guest, Host, Network, NodeDevice

from . import pci
from .netupdate.common import interface_name, invalid, shown, text


@dataclass(frozen=True)
class PhysicalFunction:
    """An SR-IOV PF as the last sync saw it: its net interface name and PCI device."""

    name: str  # the net interface, e.g. ens1f0
    pci_address: str
    vf_count: int  # VFs enabled now
    vf_max: int | None  # VFs the device could have (sriov_totalvfs)
    product: str = ""

    @property
    def label(self) -> str:
        most = f" of {self.vf_max}" if self.vf_max else ""
        return f"{self.name} ({self.pci_address}, {self.vf_count}{most} VFs enabled)"


@dataclass(frozen=True)
class PoolVf:
    pci_address: str
    holder: pci.Holder | None  # None: no guest or pool holds it, as far as the mirror knows

    @property
    def free(self) -> bool:
        return self.holder is None


@dataclass(frozen=True)
class PoolState:
    """What a pool's page shows: its PF, its VFs with their holders, and how many are free."""

    pf: str
    vfs: tuple[PoolVf, ...]
    connections: int
    from_live_xml: bool  # the VFs were listed by libvirt (a guest started), not read from the PF
    # Running guests on the pool whose VF the mirror cannot name (their live XML did not say;
    # the test driver never assigns one): each still holds one of the unassigned VFs.
    unplaced_guests: tuple[str, ...] = ()

    @property
    def unassigned(self) -> int:
        return sum(1 for vf in self.vfs if vf.free)

    @property
    def free(self) -> int:
        return max(self.unassigned - len(self.unplaced_guests), 0)

    @property
    def total(self) -> int:
        return len(self.vfs)


# ---------------------------------------------------------------- PFs


def sriov_pfs(host: Host) -> list[PhysicalFunction]:
    """The host's SR-IOV PFs by net interface name, as the last sync saw them: PCI devices
    with VFs or a VF maximum that have a net device (a PF without a driver has no name)."""
    pci_devices = {
        device.name: device for device in NodeDevice.objects.filter(host=host, capability="pci") if device.is_sriov_pf
    }
    nets = NodeDevice.objects.filter(host=host, capability="net", parent__in=pci_devices).order_by("net_interface")
    return [
        PhysicalFunction(
            name=net.net_interface,
            pci_address=pci_devices[net.parent].pci_address,
            vf_count=len(pci_devices[net.parent].vf_addresses or ()),
            vf_max=pci_devices[net.parent].vf_max,
            product=pci_devices[net.parent].product,
        )
        for net in nets
        if net.net_interface
    ]


def pool_of_pf(host: Host, pf: str) -> Network | None:
    """The pool network on `host` that already uses `pf`, if any."""
    row = (
        ForwardInterface.objects.filter(network__host=host, kind=ForwardInterfaceKind.PF, dev=pf)
        .select_related("network")
        .first()
    )
    return row.network if row else None


@dataclass(frozen=True)
class PfChoice:
    name: str
    label: str
    pool: str  # the pool network already on this PF, "" when free


def pf_choices(host: Host) -> list[PfChoice]:
    """The create form's PF list: every SR-IOV PF, with the pool already using it."""
    choices = []
    for pf in sriov_pfs(host):
        pool = pool_of_pf(host, pf.name)
        choices.append(PfChoice(pf.name, pf.label, pool.name if pool else ""))
    return choices


def pool_create_parts(host: Host, name: str, values: dict) -> tuple[str, tuple[str, ...]]:
    """The XML and warnings of a new pool on the PF `values["pf"]`, or a ValidationError
    naming the field: a PF that the last sync did not see as an SR-IOV PF of this host, one
    another pool network already hands out (two pools would give the same VF twice), or one a
    guest holds (as <hostdev> or <interface type='hostdev'>)."""
    if not text(values, "pf"):
        raise invalid("pf", "Pick the SR-IOV physical function (PF) whose VFs the pool hands out.")
    pf = interface_name(values, "pf")
    pfs = {candidate.name: candidate for candidate in sriov_pfs(host)}
    if pf not in pfs:
        known = ", ".join(pfs) or "none"
        raise invalid("pf", f"{shown(pf)} is not an SR-IOV physical function of {host.name} (its SR-IOV PFs: {known}).")
    other = pool_of_pf(host, pf)
    if other is not None:
        raise invalid("pf", f"{pf} already backs the VF pool {other.name} on {host.name}: one pool per PF.")
    holder = pci.device_holders(host).get(pfs[pf].pci_address)
    if holder is not None and holder.kind in (pci.GUEST_HOSTDEV, pci.GUEST_INTERFACE):
        raise invalid(
            "pf",
            f"{pf} ({pfs[pf].pci_address}) is assigned to a guest: {holder.detail}. Its VFs cannot be handed out "
            "while the guest holds the PF; return it first.",
        )
    return xml.build_pool_network_xml(name=name, pf=pf), _create_warnings(host, pfs[pf])


def _create_warnings(host: Host, pf: PhysicalFunction) -> tuple[str, ...]:
    warnings = []
    if pf.vf_count == 0:
        warnings.append(
            f"{pf.name} has no VFs enabled: the network is defined but libvirt cannot start it until VFs are "
            f"enabled on {host.name} (sriov_numvfs)."
        )
    free = set(pci.free_vfs(host, pf.name))
    held = [address for address in _vf_addresses(host, pf) if address not in free]
    if held:
        warnings.append(
            f"{len(held)} of {pf.name}'s VFs ({', '.join(held)}) are already held by guests directly: libvirt's "
            "pool does not know and may hand one out again, and that guest's start then fails (device in use)."
        )
    return tuple(warnings)


def _vf_addresses(host: Host, pf: PhysicalFunction) -> list[str]:
    device = pci.physical_function(host, pf.name)
    return list(device.vf_addresses or ()) if device else []


# ---------------------------------------------------------------- pool state


def is_pool(network: Network | None) -> bool:
    return network is not None and network.forward_mode == ForwardMode.HOSTDEV


def pool_state(network: Network) -> PoolState:
    """The pool's VFs (libvirt's list once a guest started, else the PF's VFs), their holders,
    and the free count: the VFs nobody holds, less one for each running guest on the pool whose
    VF the mirror cannot name."""
    vfs = tuple(PoolVf(address, holder) for address, holder in pci.pool_vfs(network))
    live_listed = network.forward_interfaces.filter(kind=ForwardInterfaceKind.ADDRESS).exists()
    unplaced = _guests_without_a_known_vf(network, vfs)
    return PoolState(pci.pool_pf(network) or "", vfs, network.connections, live_listed, unplaced)


def _guests_without_a_known_vf(network: Network, vfs: tuple[PoolVf, ...]) -> tuple[str, ...]:
    """Running guests with an interface on the pool and no VF of the pool's known to be theirs.
    Only the pool's own holders count: a VF the guest holds directly (gpu01's hostdev NIC in
    the demo) is not the one the pool gave it."""
    placed = {vf.holder.guest_id for vf in vfs if vf.holder and vf.holder.kind == pci.POOL and vf.holder.guest_id}
    running = network.guest_interfaces.select_related("guest").order_by("guest__name")
    names = [iface.guest.name for iface in running if iface.guest.is_running and iface.guest_id not in placed]
    return tuple(dict.fromkeys(names))


def attach_warnings(network: Network, guest: Guest) -> tuple[str, ...]:
    """Before another interface of `guest` joins the pool: does it exhaust the pool?"""
    state = pool_state(network)
    if state.total == 0:
        return (
            f"Pool {network.name} has no VFs (its PF {state.pf or '?'} has none enabled): libvirt assigns a VF "
            f"when the guest starts, so {guest.name} will fail to start with this interface.",
        )
    if state.free == 0:
        return (
            f"Pool {network.name} has no free VF (0 of {state.total}): libvirt assigns a VF when the guest "
            f"starts, so {guest.name} will fail to start with this interface (a hot-plug fails at once).",
        )
    if state.free == 1:
        return (f"This takes the pool's last free VF ({network.name}: 1 of {state.total} free).",)
    return ()


def start_warnings(guest: Guest) -> tuple[str, ...]:
    """For a stopped guest: its interfaces on pools that have no free VF (it will not start)."""
    if guest.is_running:
        return ()
    warnings = []
    networks = {iface.network for iface in guest.interfaces.select_related("network") if is_pool(iface.network)}
    for network in sorted(networks, key=lambda n: n.name):
        state = pool_state(network)
        if state.free == 0:
            warnings.append(
                f"Pool {network.name} has no free VF (0 of {state.total}): {guest.name} has an interface on it "
                "and will fail to start until a VF is returned."
            )
    return tuple(warnings)


# ---------------------------------------------------------------- guest interfaces on a pool

NO_MODEL = (
    "A VF pool gives the guest the VF itself, which it drives with the VF's own driver (such as ixgbevf): "
    "libvirt has no emulated model to pick here, so leave the model empty."
)
NO_BANDWIDTH = (
    "libvirt cannot limit the bandwidth of a passed-through VF (it refuses it: 'bandwidth settings are not "
    "supported for hostdev interfaces'); leave it empty."
)


def pool_interface_checks(*, guest: Guest, network: Network | None, values: dict, inbound, outbound, joining: bool):
    """For an interface that will be on `network`: refuse what libvirt cannot do for a VF (a
    model, bandwidth limits) and warn when it exhausts the pool (`joining`: it takes a VF it
    does not hold yet). Returns the warnings; nothing for a network that is not a pool."""
    if not is_pool(network):
        return ()
    if text(values, "model"):
        raise invalid("model", NO_MODEL)
    for name, limit in (("inbound", inbound), ("outbound", outbound)):
        if limit is not None:
            raise invalid(name, NO_BANDWIDTH)
    return attach_warnings(network, guest) if joining else ()
