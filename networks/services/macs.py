"""MAC addresses across the fleet: normalise one, find who holds it, make a fresh one.

MACs must be unique on a layer-2 segment, and guests move between hosts and networks, so
kvmweb keeps them unique across the whole fleet as the mirror knows it, not per host.
"""

from __future__ import annotations

import secrets

from django.core.exceptions import ValidationError
from django.db import connection

from networks.choices import ACTIVE_STATUSES, OperationKind
from networks.models import DhcpLease, DhcpReservation, GuestInterface, Host, NodeDevice, Operation, PortForward

from .netupdate.common import invalid, mac_address, text
from .permissions import can_view, visible_host_ids

LIBVIRT_PREFIX = "52:54:00"  # the range libvirt and QEMU give guests (QEMU's OUI)
GENERATE_TRIES = 50  # 16.7 million addresses: a clash even twice in a row means a full fleet
# Operations that give a guest a new MAC (in params["mac"]): while one is queued or running,
# its MAC counts as taken, though no guest of the mirror has it yet.
MAC_ADDING_KINDS = (OperationKind.GUEST_INTERFACE_ADD, OperationKind.GUEST_HOSTDEV_ATTACH)
# PostgreSQL advisory lock key ("kvmwebma") serialising MAC checks across the fleet.
MAC_LOCK_KEY = 0x6B766D7765626D61


def normalise_mac(value, field: str = "mac") -> str:
    """A unicast MAC in libvirt's form (lower case, colons), or a ValidationError on `field`."""
    return mac_address({field: value}, field)


def mac_holder(mac: str, *, exclude_guest=None) -> GuestInterface | None:
    """The guest interface that has `mac`, anywhere in the fleet (None if no guest has it)."""
    holders = GuestInterface.objects.filter(mac=mac).select_related("guest__host")
    if exclude_guest is not None:
        holders = holders.exclude(guest=exclude_guest)
    return holders.order_by("guest__host__name", "guest__name").first()


def pending_add(mac: str) -> Operation | None:
    """The queued or running operation that gives a guest `mac` (None if there is none)."""
    adding = Operation.objects.filter(kind__in=MAC_ADDING_KINDS, status__in=ACTIVE_STATUSES, params__mac=mac)
    return adding.select_related("host").order_by("pk").first()


def lock_macs(host: Host) -> None:
    """Call inside the transaction that checks a MAC and records the operation using it: a
    concurrent request then waits, and its check sees this one's operation. MACs are unique
    across the fleet, so on PostgreSQL one advisory lock serialises every host's requests; on
    other databases the guest's host row is locked (SQLite serialises all writers anyway: its
    transactions begin IMMEDIATE)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [MAC_LOCK_KEY])
    else:
        list(Host.objects.select_for_update().filter(pk=host.pk))


def mac_in_use(mac: str) -> bool:
    """Whether anything the mirror knows uses `mac`: a guest's NIC, a DHCP reservation or
    lease, a host NIC, a port forward's guest, an operation adding it to a guest."""
    return (
        GuestInterface.objects.filter(mac=mac).exists()
        or pending_add(mac) is not None
        or DhcpReservation.objects.filter(mac=mac).exists()
        or DhcpLease.objects.filter(mac=mac).exists()
        or NodeDevice.objects.filter(net_mac=mac).exists()
        or PortForward.objects.filter(guest_mac=mac).exists()
    )


def generate_mac() -> str:
    """A random MAC in libvirt's 52:54:00 range that nothing in the fleet uses (call it after
    lock_macs, in the transaction that records its use)."""
    for _ in range(GENERATE_TRIES):
        tail = secrets.token_bytes(3)
        mac = f"{LIBVIRT_PREFIX}:{tail[0]:02x}:{tail[1]:02x}:{tail[2]:02x}"
        if not mac_in_use(mac):
            return mac
    raise ValidationError({"mac": ["No free MAC address was found in 52:54:00; give one."]})


def new_mac(values: dict, *, actor, guest=None, field: str = "mac") -> tuple[str, tuple[str, ...]]:
    """The MAC of a NIC a guest gets, and the warnings about it. A typed MAC is refused only when
    a guest holds it (or an operation is adding it to one): what else the fleet knows of it
    becomes a warning (mac_notes). An empty one is generated, avoiding all of that. Call it
    after lock_macs, in the transaction that records its use."""
    if not text(values, field):
        return generate_mac(), ()
    mac = normalise_mac(values[field], field)
    check_mac_free(mac, actor=actor, field=field)
    return mac, mac_notes(mac, actor=actor, guest=guest)


def clash_message(mac: str, holder: GuestInterface, actor) -> str:
    """The 400 for a MAC another guest holds. A host outside the actor's scope is not named:
    for them it does not exist."""
    guest = holder.guest
    if actor is None or can_view(actor, guest.host):
        return f"MAC {mac} is already used by guest {guest.name} on host {guest.host.name}."
    return f"MAC {mac} is already used by another guest."


def check_mac_free(mac: str, *, actor, field: str = "mac", exclude_guest=None) -> None:
    """Refuse `mac` when a guest of the fleet holds it already, or an operation is adding it
    to one."""
    holder = mac_holder(mac, exclude_guest=exclude_guest)
    if holder is not None:
        raise invalid(field, clash_message(mac, holder, actor))
    pending = pending_add(mac)
    if pending is not None:
        raise invalid(field, pending_message(mac, pending, actor))


def pending_message(mac: str, operation: Operation, actor) -> str:
    """The 400 for a MAC an operation not yet finished adds (its host named only in scope)."""
    if actor is None or (operation.host is not None and can_view(actor, operation.host)):
        return (
            f"MAC {mac} is being added to guest {operation.target_name} on host {operation.host_name} "
            f"by operation #{operation.pk} ({operation.status})."
        )
    return f"MAC {mac} is being added to another guest by an operation not yet finished."


NOTES_MAX = 5  # of each kind: the rest is counted


def mac_notes(mac: str, *, actor, guest=None) -> tuple[str, ...]:
    """Warnings for a MAC no guest holds but the fleet knows: a DHCP reservation or lease, a
    host NIC, a port forward to another guest. Each is named where the actor may see its host;
    the others are counted."""
    notes: list[str] = []
    hidden = 0
    visible = visible_host_ids(actor) if actor is not None else None

    def seen(host_id) -> bool:
        nonlocal hidden
        if visible is None or host_id in visible:
            return True
        hidden += 1
        return False

    reservations = DhcpReservation.objects.filter(mac=mac).select_related("network__host")
    for r in [r for r in reservations.order_by("pk") if seen(r.network.host_id)][:NOTES_MAX]:
        holder = f" (for {r.name})" if r.name else ""
        notes.append(f"{mac} has a DHCP reservation{holder} on {r.network.name}@{r.network.host.name}: "
                     f"it gets {r.address} there.")  # fmt: skip
    leases = DhcpLease.objects.filter(mac=mac).select_related("network__host")
    for lease in [lease for lease in leases.order_by("pk") if seen(lease.network.host_id)][:NOTES_MAX]:
        holder = f" (hostname {lease.hostname})" if lease.hostname else ""
        notes.append(f"{mac} holds a DHCP lease of {lease.address}{holder} on "
                     f"{lease.network.name}@{lease.network.host.name}: another machine uses this MAC.")  # fmt: skip
    nics = NodeDevice.objects.filter(net_mac=mac).select_related("host")
    for nic in [nic for nic in nics.order_by("pk") if seen(nic.host_id)][:NOTES_MAX]:
        notes.append(f"{mac} is the MAC of host NIC {nic.net_interface or nic.name} on {nic.host.name}: "
                     "two NICs with one MAC on a segment confuse its switches.")  # fmt: skip
    forwards = PortForward.objects.filter(guest_mac=mac).select_related("host")
    if guest is not None:
        forwards = forwards.exclude(host=guest.host, guest_name=guest.name)
    for forward in [f for f in forwards.order_by("pk") if seen(f.host_id)][:NOTES_MAX]:
        notes.append(f"{mac} is the guest MAC of port forward #{forward.pk} on {forward.host.name} "
                     f"(to guest {forward.guest_name}).")  # fmt: skip
    if hidden:
        notes.append(f"{mac} is also known on {hidden} record(s) of hosts outside your scope.")
    return tuple(notes)
