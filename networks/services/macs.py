"""MAC addresses across the fleet: normalise one, find who holds it, make a fresh one.

MACs must be unique on a layer-2 segment, and guests move between hosts and networks, so
kvmweb keeps them unique across the whole fleet as the mirror knows it, not per host.
"""

from __future__ import annotations

import secrets

from django.core.exceptions import ValidationError

from networks.models import DhcpLease, DhcpReservation, GuestInterface, NodeDevice, PortForward

from .netupdate.common import invalid, mac_address
from .permissions import can_view, scoped

LIBVIRT_PREFIX = "52:54:00"  # the range libvirt and QEMU give guests (QEMU's OUI)
GENERATE_TRIES = 50  # 16.7 million addresses: a clash even twice in a row means a full fleet


def normalise_mac(value, field: str = "mac") -> str:
    """A unicast MAC in libvirt's form (lower case, colons), or a ValidationError on `field`."""
    return mac_address({field: value}, field)


def mac_holder(mac: str, *, exclude_guest=None) -> GuestInterface | None:
    """The guest interface that has `mac`, anywhere in the fleet (None if no guest has it)."""
    holders = GuestInterface.objects.filter(mac=mac).select_related("guest__host")
    if exclude_guest is not None:
        holders = holders.exclude(guest=exclude_guest)
    return holders.order_by("guest__host__name", "guest__name").first()


def mac_in_use(mac: str) -> bool:
    """Whether anything the mirror knows uses `mac`: a guest's NIC, a DHCP reservation or
    lease, a host NIC, a port forward's guest."""
    return (
        GuestInterface.objects.filter(mac=mac).exists()
        or DhcpReservation.objects.filter(mac=mac).exists()
        or DhcpLease.objects.filter(mac=mac).exists()
        or NodeDevice.objects.filter(net_mac=mac).exists()
        or PortForward.objects.filter(guest_mac=mac).exists()
    )


def generate_mac(*, avoid: set[str] | frozenset[str] = frozenset()) -> str:
    """A random MAC in libvirt's 52:54:00 range that nothing in the fleet uses (nor `avoid`)."""
    for _ in range(GENERATE_TRIES):
        tail = secrets.token_bytes(3)
        mac = f"{LIBVIRT_PREFIX}:{tail[0]:02x}:{tail[1]:02x}:{tail[2]:02x}"
        if mac not in avoid and not mac_in_use(mac):
            return mac
    raise ValidationError({"mac": ["No free MAC address was found in 52:54:00; give one."]})


def clash_message(mac: str, holder: GuestInterface, actor) -> str:
    """The 400 for a MAC another guest holds. A host outside the actor's scope is not named:
    for them it does not exist."""
    guest = holder.guest
    if actor is None or can_view(actor, guest.host):
        return f"MAC {mac} is already used by guest {guest.name} on host {guest.host.name}."
    return f"MAC {mac} is already used by another guest."


def check_mac_free(mac: str, *, actor, field: str = "mac", exclude_guest=None) -> None:
    """Refuse `mac` when a guest of the fleet holds it already."""
    holder = mac_holder(mac, exclude_guest=exclude_guest)
    if holder is not None:
        raise invalid(field, clash_message(mac, holder, actor))


def reservations_of(mac: str, *, actor=None):
    """DHCP reservations of `mac` on networks the actor may see (for warnings)."""
    found = DhcpReservation.objects.filter(mac=mac).select_related("network__host")
    return scoped(found, actor, "network__host") if actor is not None else found
