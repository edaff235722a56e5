"""PCI devices of a host and who holds them now, read from the mirror only (no libvirt call).

A device is held by a guest (as `<hostdev>` or `<interface type='hostdev'>`), by an SR-IOV VF pool
network (its PF, and each VF the pool gave to a guest), or by the host itself (a NIC the host uses,
a disk controller). Assigning a held device, or one sharing an IOMMU group with a held device,
takes it away from its holder: the assignment checks and the passthrough page read these answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from networks.choices import ForwardInterfaceKind, ForwardMode, PassthroughSupport
from networks.hypervisor import xml
from networks.hypervisor.errors import InvalidXml
from networks.models import Guest, GuestInterface, Network, NodeDevice

GUEST_HOSTDEV = "guest-hostdev"
GUEST_INTERFACE = "guest-interface"
POOL = "pool"
HOST = "host"

# PCI base class 0x01: mass storage (SCSI, IDE, SATA/AHCI, RAID, NVMe...).
STORAGE_CLASS_PREFIX = "0x01"
# Used only where a node device gives no PCI class: drivers of disk controllers.
STORAGE_DRIVERS = frozenset({"nvme", "ahci", "ata_piix", "megaraid_sas", "mpt3sas", "mpt2sas", "aacraid", "smartpqi"})
STORAGE_WORDS = ("nvme", "sata", "sas ", "raid", "ahci", "storage controller", "ide controller")


@dataclass(frozen=True)
class Holder:
    kind: str  # "guest-hostdev" | "guest-interface" | "pool" | "host"
    guest_id: int | None
    guest_name: str  # "" when not a guest
    network_name: str  # pool network name for kind "pool" (and the guest holding the VF through it, if known)
    detail: str  # human text, e.g. "hostdev of gpu01", "VF of pool sriov-pool (held by gpu01)",
    # "host NIC ens1f1 with an address", "host disk controller"


def device_holders(host) -> dict[str, Holder]:
    """Every PCI address of `host` that is in use now, from the mirror, keyed by "0000:03:10.0"."""
    devices = list(NodeDevice.objects.filter(host=host))
    holders: dict[str, Holder] = {}
    # Later sources never replace an earlier one: a guest's own claim is the most precise.
    for found in (
        _guest_hostdev_holders(host),
        _guest_interface_holders(host),
        _pool_holders(host, devices),
        _host_holders(host, devices),
    ):
        for address, holder in found:
            holders.setdefault(address, holder)
    return holders


def iommu_group_conflicts(host, pci_address: str, *, for_guest=None) -> list[str]:
    """Why assigning the device would take something from the host or another guest: the other devices
    of its IOMMU group that are in use (not by `for_guest`), as human text; [] when it is safe."""
    devices = {d.pci_address: d for d in NodeDevice.objects.filter(host=host, capability="pci")}
    device = devices.get(pci_address)
    if device is None or device.iommu_group is None:
        return []
    holders = device_holders(host)
    guest_id = getattr(for_guest, "pk", for_guest)
    reasons = []
    for address in sorted(devices):
        member = devices[address]
        holder = holders.get(address)
        if address == pci_address or member.iommu_group != device.iommu_group or holder is None:
            continue
        if guest_id is not None and holder.guest_id == guest_id:
            continue  # the guest already holds it: the whole group goes to that guest
        reasons.append(f"{address} shares IOMMU group {device.iommu_group} and is in use: {holder.detail}")
    return reasons


def passthrough_support(host) -> tuple[str, str]:
    """("yes" | "no" | "unknown", reason) from the mirrored host facts (IOMMU + VFIO)."""
    iommu, vfio = host.iommu_support, host.vfio_support
    if PassthroughSupport.NO in (iommu, vfio):
        verdict = PassthroughSupport.NO
    elif iommu == vfio == PassthroughSupport.YES:
        verdict = PassthroughSupport.YES
    else:
        verdict = PassthroughSupport.UNKNOWN
    reason = host.passthrough_note or f"IOMMU: {iommu}, VFIO: {vfio} (not synced yet?)"
    return str(verdict), reason


def free_vfs(host, pf_name: str) -> list[str]:
    """The PCI addresses of the PF's VFs that no guest or pool holds now."""
    pf = physical_function(host, pf_name)
    if pf is None:
        return []
    holders = device_holders(host)
    return [address for address in pf.vf_addresses if address not in holders]


def physical_function(host, name: str) -> NodeDevice | None:
    """The PF's PCI node device, named by its net interface (as in `<pf dev='ens1f0'/>`), its node
    device name or its PCI address; None when the mirror has no such SR-IOV PF."""
    rows = NodeDevice.objects.filter(host=host)
    net = rows.filter(capability="net", net_interface=name).first()
    candidates = rows.filter(capability="pci")
    if net is not None:
        candidates = candidates.filter(name=net.parent)
    else:
        candidates = candidates.filter(name=name) | candidates.filter(pci_address=name)
    pf = candidates.first()
    return pf if pf is not None and pf.is_sriov_pf else None


def pool_vfs(network) -> list[tuple[str, Holder | None]]:
    """The VFs of a hostdev pool network and who holds each now. libvirt lists the pool's VFs in
    its live XML once a guest started on it; before that they are the PF's VFs as the node devices
    give them."""
    holders = device_holders(network.host)
    return [(address, holders.get(address)) for address in pool_addresses(network)]


def pool_addresses(network) -> list[str]:
    listed = [
        fwd.pci_address
        for fwd in network.forward_interfaces.all()
        if fwd.kind == ForwardInterfaceKind.ADDRESS and fwd.pci_address
    ]
    if listed:
        return listed
    pf = pool_pf(network)
    device = physical_function(network.host, pf) if pf else None
    return list(device.vf_addresses) if device is not None else []


def pool_pf(network) -> str | None:
    """The pool's `<pf dev>`, or None for a network that names none."""
    for fwd in network.forward_interfaces.all():
        if fwd.kind == ForwardInterfaceKind.PF and fwd.dev:
            return fwd.dev
    return None


# ---------------------------------------------------------------- guests


def _guest_hostdev_holders(host):
    for guest in Guest.objects.filter(host=host).only("pk", "name", "state", "hostdev_addresses"):
        for address in guest.hostdev_addresses or ():
            if address:
                yield address, Holder(GUEST_HOSTDEV, guest.pk, guest.name, "", f"hostdev of {_guest_label(guest)}")


def _guest_interface_holders(host):
    rows = GuestInterface.objects.filter(guest__host=host, type="hostdev").select_related("guest", "network")
    for iface in rows:
        if not _is_pci_address(iface.source) or _on_pool(iface):
            continue  # a pool's VF is recorded with its pool
        label = _guest_label(iface.guest)
        yield iface.source, Holder(GUEST_INTERFACE, iface.guest_id, iface.guest.name, "", f"hostdev NIC of {label}")


def _guest_label(guest: Guest) -> str:
    # A stopped guest's config still claims the device: it would fail to start without it.
    return guest.name if guest.is_running else f"{guest.name} (not running)"


# ---------------------------------------------------------------- VF pools


def _pool_networks(host):
    return Network.objects.filter(host=host, forward_mode=ForwardMode.HOSTDEV).prefetch_related("forward_interfaces")


def _pool_interfaces(network):
    return GuestInterface.objects.filter(network=network).select_related("guest")


def _on_pool(iface: GuestInterface) -> bool:
    return iface.network is not None and iface.network.forward_mode == ForwardMode.HOSTDEV


def _pool_holders(host, devices):
    for network in _pool_networks(host):
        pf = pool_pf(network)
        pf_device = _pf_device(devices, pf) if pf else None
        if pf_device is not None:
            detail = f"PF of pool {network.name}"
            yield pf_device.pci_address, Holder(POOL, None, "", network.name, detail)
        yield from _pool_vf_holders(network)


def _pool_vf_holders(network):
    by_address = {
        iface.source: iface for iface in _pool_interfaces(network) if iface.guest and _is_pci_address(iface.source)
    }
    for fwd in network.forward_interfaces.all():
        if fwd.kind != ForwardInterfaceKind.ADDRESS or not fwd.pci_address:
            continue
        iface = by_address.pop(fwd.pci_address, None)
        if iface is not None:
            yield fwd.pci_address, _pool_guest_holder(network, iface)
        elif fwd.connections:
            detail = f"VF of pool {network.name} (held by a guest the mirror does not know)"
            yield fwd.pci_address, Holder(POOL, None, "", network.name, detail)
    for address, iface in by_address.items():  # a guest's VF the pool's XML did not list
        yield address, _pool_guest_holder(network, iface)


def _pool_guest_holder(network, iface: GuestInterface) -> Holder:
    detail = f"VF of pool {network.name} (held by {_guest_label(iface.guest)})"
    return Holder(POOL, iface.guest_id, iface.guest.name, network.name, detail)


def _pf_device(devices, pf_dev: str) -> NodeDevice | None:
    net = next((d for d in devices if d.capability == "net" and d.net_interface == pf_dev), None)
    if net is None:
        return None
    return next((d for d in devices if d.capability == "pci" and d.name == net.parent), None)


# ---------------------------------------------------------------- the host itself


def _host_holders(host, devices):
    uses = _host_nic_uses(host)
    pci_by_name = {d.name: d for d in devices if d.capability == "pci"}
    for net in devices:
        pci = pci_by_name.get(net.parent)
        if net.capability == "net" and pci is not None and net.net_interface in uses:
            yield pci.pci_address, Holder(HOST, None, "", "", f"host NIC {net.net_interface} {uses[net.net_interface]}")
    for device in pci_by_name.values():
        why = storage_controller(device)
        if why:
            yield device.pci_address, Holder(HOST, None, "", "", why)


def _host_nic_uses(host) -> dict[str, str]:
    """Host NIC name → how the host uses it: what the sync found (an address, a bridge port, a
    NIC up where the host's interface backend reports no addresses), plus the networks that
    forward through it (NAT/route uplinks, macvtap and bridge-mode devices)."""
    uses = dict(getattr(host, "nic_uses", None) or {})
    for network in Network.objects.filter(host=host).prefetch_related("forward_interfaces"):
        if network.forward_mode == ForwardMode.HOSTDEV:
            continue  # its PF is recorded as the pool's
        devs = {network.forward_dev} | {
            fwd.dev for fwd in network.forward_interfaces.all() if fwd.kind == ForwardInterfaceKind.INTERFACE
        }
        for dev in sorted(devs - {""}):
            uses.setdefault(dev, f"used by network {network.name}")
    return uses


def storage_controller(device: NodeDevice) -> str:
    """Why the device counts as the host's disk controller ("" when it is none). kvmweb cannot
    tell which controller the host boots from, so every one counts as the host's."""
    pci_class = pci_class_of(device)
    if pci_class:
        return f"host disk controller (PCI class {pci_class})" if pci_class.startswith(STORAGE_CLASS_PREFIX) else ""
    # No class in the node device XML: guess from the driver and product names.
    product = (device.product or "").lower()
    if device.driver in STORAGE_DRIVERS or any(word in product for word in STORAGE_WORDS):
        return "host disk controller (guessed from its driver or product name: no PCI class known)"
    return ""


def pci_class_of(device: NodeDevice) -> str:
    """The PCI class code ("0x020000") from the node device XML, "" when it gives none."""
    try:
        return xml.node_device_pci_class(device.xml) if device.xml else ""
    except InvalidXml:
        return ""


def _is_pci_address(value: str) -> bool:
    return len(value or "") == 12 and value[4] == ":" and value[7] == ":" and value[10] == "."


# ---------------------------------------------------------------- the device list


@dataclass(frozen=True)
class PciDevice:
    """One PCI device of a host as the passthrough page and the API show it."""

    id: int
    name: str
    pci_address: str
    driver: str
    vendor: str
    product: str
    pci_class: str
    class_label: str
    iommu_group: int | None
    group_members: tuple[str, ...]  # the other devices of its IOMMU group
    physical_function: str  # a VF's PF address, "" otherwise
    virtual_functions: tuple[str, ...]  # a PF's VFs
    vf_max: int | None
    net_interface: str
    holder: Holder | None
    pool: str = ""  # the VF pool network this VF belongs to (which may hand it to a guest)

    @property
    def is_network(self) -> bool:
        return self.pci_class.startswith(NETWORK_CLASS_PREFIX) or bool(self.net_interface)


NETWORK_CLASS_PREFIX = "0x02"
CLASS_LABELS = {
    "0x01": "storage",
    "0x02": "network",
    "0x03": "display",
    "0x04": "multimedia",
    "0x06": "bridge",
    "0x0c": "serial bus",
    "0x12": "accelerator",
}


def pci_devices(host) -> list[PciDevice]:
    """Every PCI device of `host` with its group, SR-IOV relations and holder: network devices
    first, then the others, each part in PCI address order."""
    rows = list(NodeDevice.objects.filter(host=host).select_related("physical_function"))
    holders = device_holders(host)
    nets = {row.parent: row.net_interface for row in rows if row.capability == "net"}
    groups: dict[int, list[str]] = {}
    for row in rows:
        if row.capability == "pci" and row.iommu_group is not None:
            groups.setdefault(row.iommu_group, []).append(row.pci_address)
    pools = pool_members(host)
    found = [_pci_device(row, holders, nets, groups, pools) for row in rows if row.capability == "pci"]
    return sorted(found, key=lambda device: (not device.is_network, device.pci_address))


def pool_members(host) -> dict[str, str]:
    """VF address → the hostdev pool network whose VFs it is: such a VF may look free, but the
    pool hands it to the next guest that starts on it."""
    members: dict[str, str] = {}
    for network in _pool_networks(host):
        for address in pool_addresses(network):
            members.setdefault(address, network.name)
    return members


def _pci_device(row: NodeDevice, holders, nets, groups, pools) -> PciDevice:
    pci_class = pci_class_of(row)
    members = groups.get(row.iommu_group, []) if row.iommu_group is not None else []
    return PciDevice(
        id=row.pk,
        name=row.name,
        pci_address=row.pci_address,
        driver=row.driver,
        vendor=row.vendor,
        product=row.product,
        pci_class=pci_class,
        class_label=CLASS_LABELS.get(pci_class[:4], "other" if pci_class else ""),
        iommu_group=row.iommu_group,
        group_members=tuple(sorted(address for address in members if address != row.pci_address)),
        physical_function=row.physical_function.pci_address if row.physical_function else "",
        virtual_functions=tuple(row.vf_addresses or ()),
        vf_max=row.vf_max,
        net_interface=nets.get(row.name, ""),
        holder=holders.get(row.pci_address),
        pool=pools.get(row.pci_address, ""),
    )
