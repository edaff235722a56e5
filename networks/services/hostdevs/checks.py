"""Checks of a PCI assignment request, field by field, and of the device against what the
mirror knows of its host. Each raises a ValidationError naming the field; nothing here talks
to a host, so a refused request never reaches libvirt."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

from networks.choices import PassthroughSupport
from networks.hypervisor.hostdevs import HOSTDEV, INTERFACE, KINDS, QBH
from networks.models import Guest, NodeDevice

from .. import pci
from ..interfaces.checks import choice, request_values, scope_of  # noqa: F401  (re-exported for plans)
from ..netupdate.common import invalid, number, shown, text

ATTACH_FIELDS = ("pci_address", "kind", "managed", "mac", "vlan", "profileid", "virtualport", "scope")
DETACH_FIELDS = ("scope",)
INTERFACE_ONLY = ("mac", "vlan", "profileid", "virtualport")
QBG = "802.1Qbg"
PROFILE_ID_MAX = 39  # libvirt keeps an 802.1Qbh profile id in a 40-byte field, its terminator included
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")

# 0000:01:10.2, 01:10.2 (PCI domain 0000) or a node device name, pci_0000_01_10_2.
_ADDRESS_RE = re.compile(
    r"(?:(?P<domain>[0-9a-f]{4}):)?(?P<bus>[0-9a-f]{2}):(?P<slot>[0-9a-f]{2})\.(?P<function>[0-7])", re.IGNORECASE
)
_NODEDEV_RE = re.compile(r"pci_([0-9a-f]{4})_([0-9a-f]{2})_([0-9a-f]{2})_([0-7])", re.IGNORECASE)
SLOT_MAX = 0x1F


def pci_address_of(values: dict, name: str = "pci_address") -> str:
    """A PCI address in the mirror's form, 0000:01:10.2 (lower case, domain 0000 if omitted)."""
    raw = text(values, name, required=True, max_length=64)
    match = _ADDRESS_RE.fullmatch(raw)
    if match is not None:
        parts = (match["domain"] or "0000", match["bus"], match["slot"], match["function"])
    elif _NODEDEV_RE.fullmatch(raw):
        parts = _NODEDEV_RE.fullmatch(raw).groups()
    else:
        raise invalid(name, f"{shown(raw)} is not a PCI address (write it like 0000:01:10.2).")
    if int(parts[2], 16) > SLOT_MAX:
        raise invalid(name, f"{shown(raw)}: a PCI slot is 00 to 1f.")
    return f"{parts[0]}:{parts[1]}:{parts[2]}.{parts[3]}".lower()


def kind_of(values: dict) -> str:
    """hostdev (any PCI device) or interface (an SR-IOV VF as a NIC); default hostdev."""
    return choice(values, "kind", KINDS) or HOSTDEV


def managed_of(values: dict) -> bool:
    """Whether libvirt detaches the device from its host driver itself (default: yes)."""
    raw = values.get("managed")
    if raw is None or raw == "":
        return True
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return raw.strip().lower() in TRUE_WORDS
    raise invalid("managed", "Give true or false.")


def vlan_of(values: dict) -> int | None:
    return number(values, "vlan", low=0, high=4095)


def port_profile_of(values: dict) -> str:
    """The 802.1Qbh port profile id ("" for none). libvirt does not support 802.1Qbg on an
    `<interface type='hostdev'>`: a request for it is refused rather than silently dropped."""
    virtualport = text(values, "virtualport", max_length=64)
    if virtualport.lower() == QBG.lower():
        raise invalid(
            "virtualport",
            "libvirt does not support 802.1Qbg on an SR-IOV VF given as <interface type='hostdev'>: "
            "only 802.1Qbh port profiles (profileid) apply there.",
        )
    if virtualport and virtualport.lower() != QBH.lower():
        raise invalid("virtualport", f"{shown(virtualport)}: only {QBH} is accepted here.")
    profileid = text(values, "profileid", max_length=PROFILE_ID_MAX)
    if virtualport and not profileid:
        raise invalid("profileid", f"An {QBH} port profile needs its profileid.")
    if profileid and not profileid.isascii():
        raise invalid("profileid", "A port profile id is ASCII text.")
    return profileid


def interface_fields_only(values: dict, kind: str) -> None:
    """MAC, VLAN and port profile are set by libvirt on a VF given as an interface only: a
    bare `<hostdev>` has nowhere to carry them."""
    if kind == INTERFACE:
        return
    for name in INTERFACE_ONLY:
        if values.get(name) not in (None, ""):
            raise invalid(name, f"A <hostdev> cannot carry a {name}: choose kind interface for an SR-IOV VF.")


# ---------------------------------------------------------------- the device, as the mirror knows it


def host_can_assign(guest: Guest) -> str:
    """Refuse a host that cannot assign devices at all; for one where the driver cannot say,
    the warning to show ("" when passthrough is known to work)."""
    support, reason = pci.passthrough_support(guest.host)
    if support == PassthroughSupport.NO:
        raise invalid("non_field_errors", f"Host {guest.host.name} cannot assign PCI devices to guests: {reason}")
    if support == PassthroughSupport.UNKNOWN:
        return f"kvmweb cannot tell whether {guest.host.name} can assign PCI devices ({reason}); libvirt decides."
    return ""


def host_device(guest: Guest, address: str) -> NodeDevice:
    device = NodeDevice.objects.filter(host=guest.host, capability="pci", pci_address=address).first()
    if device is None:
        raise invalid("pci_address", f"Host {guest.host.name} has no PCI device {address} (as of its last sync).")
    return device


def vf_addresses_of(host) -> set[str]:
    """The PCI addresses every SR-IOV PF of `host` lists as its VFs (one query)."""
    pfs = NodeDevice.objects.filter(host=host, capability="pci").exclude(vf_addresses=[])
    return {address for vfs in pfs.values_list("vf_addresses", flat=True) for address in vfs or ()}


def is_vf(device: NodeDevice) -> bool:
    """An SR-IOV virtual function: linked to its PF, or listed among a PF's VFs."""
    return device.physical_function_id is not None or device.pci_address in vf_addresses_of(device.host_id)


def check_free(guest: Guest, address: str) -> None:
    """Refuse a device another guest, a VF pool or the host itself holds (or this guest has)."""
    holder = pci.device_holders(guest.host).get(address)
    if holder is None:
        return
    if holder.kind == pci.HOST:
        raise invalid("pci_address", f"{address} is in use by {guest.host.name}: {holder.detail}.")
    if holder.guest_id == guest.pk and holder.kind != pci.POOL:
        raise invalid("pci_address", f"{guest.name} already holds {address} ({holder.detail}).")
    raise invalid("pci_address", f"{address} is already held: {holder.detail}. Return it there first.")


def check_not_pooled(guest: Guest, address: str) -> None:
    """Refuse a VF of a hostdev pool network, even one no guest has yet: libvirt's pool does not
    know of a direct assignment and hands that VF to the next guest that starts on the pool,
    which then fails to start."""
    pool = pci.pool_members(guest.host).get(address)
    if pool is not None:
        raise invalid("pci_address", pooled_message(address, pool))


def pooled_message(address: str, pool: str) -> str:
    return (
        f"{address} is a VF of the pool {pool}: the pool hands it to the next guest that starts on it, "
        f"which would then fail to start. Give the guest an interface on the network {pool} instead, or "
        "a VF of a PF no pool uses."
    )


def check_iommu_group(guest: Guest, address: str) -> None:
    """A guest gets a whole IOMMU group: refuse when a device of it is in use by the host or
    another guest (the host would lose its NIC or disk controller)."""
    reasons = pci.iommu_group_conflicts(guest.host, address, for_guest=guest)
    if reasons:
        raise invalid(
            "pci_address",
            f"{address} cannot be assigned: its IOMMU group goes to the guest whole, and it holds devices in use: "
            + "; ".join(reasons),
        )


def check_vfs_free(guest: Guest, device: NodeDevice) -> None:
    """A PF given to a guest takes its VFs with it: refuse while a VF of it is in use."""
    if not device.vf_addresses:
        return
    holders = pci.device_holders(guest.host)
    held = [f"{address} ({holders[address].detail})" for address in device.vf_addresses if address in holders]
    if held:
        raise invalid(
            "pci_address",
            f"{device.pci_address} is an SR-IOV PF whose VFs go with it, and some are in use: " + "; ".join(held),
        )


def check_vf(device: NodeDevice) -> None:
    if not is_vf(device):
        raise invalid(
            "kind",
            f"{device.pci_address} is not an SR-IOV virtual function: kind interface takes a VF only "
            "(give any other PCI device as kind hostdev).",
        )


def values_of(data, allowed: tuple[str, ...]) -> dict:
    """The request's fields (an object with known keys only), else a 400."""
    try:
        return request_values(data, allowed)
    except ValidationError as error:
        messages = [m.replace("interface's", "device's") for m in error.messages]
        raise ValidationError({"non_field_errors": messages}) from None


def assignable_devices(host) -> tuple[list[NodeDevice], list[NodeDevice]]:
    """The host's free PCI devices, as the assignment form offers them: (free SR-IOV VFs,
    other free PCI devices). Free: no guest, pool or host use the mirror knows of, and no VF a
    pool may hand out. A device
    whose IOMMU group is in use is still offered; the check refuses it with the reason."""
    taken = pci.device_holders(host).keys() | pci.pool_members(host).keys()
    devices = NodeDevice.objects.filter(host=host, capability="pci").exclude(pci_address="").order_by("pci_address")
    free = [device for device in devices if device.pci_address not in taken]
    vf_addresses = vf_addresses_of(host)
    vfs = [device for device in free if device.physical_function_id is not None or device.pci_address in vf_addresses]
    return vfs, [device for device in free if device not in vfs]
