"""The passthrough page of a host: can it assign PCI devices, which devices it has, how they are
grouped and related, and who holds each one now. Read from the mirror only."""

from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe

from networks.choices import ForwardMode
from networks.models import Host
from networks.services import pci

from .access import may, visible_object

ASSIGN_ACTION = "guest.hostdev_attach"


@require_safe
def host_passthrough(request, pk):
    host = visible_object(request, Host.objects, pk, "pk")
    allowed = may(request, host)
    devices = pci.pci_devices(host)
    verdict, reason = pci.passthrough_support(host)
    guests = list(host.guests.order_by("name")) if ASSIGN_ACTION in allowed else []
    pools = list(host.networks.filter(forward_mode=ForwardMode.HOSTDEV).order_by("name"))
    links = _Links(guests, {pool.name: pool.get_absolute_url() for pool in pools})
    context = {
        "host": host,
        "may": allowed,
        "verdict": verdict,
        "verdict_class": {"yes": "ok", "no": "bad"}.get(verdict, "warn"),
        "reason": reason,
        "network_devices": [links.row(device) for device in devices if device.is_network],
        "other_devices": [links.row(device) for device in devices if not device.is_network],
        "pools": pools,
    }
    return render(request, "networks/host_passthrough.html", context)


class _Links:
    """Where each row links: its holder's page, and, for a free device, the assignment page of
    each guest of the host (helper pages of the hostdev editor)."""

    def __init__(self, guests, pool_urls: dict[str, str]):
        self.guests = guests
        self.pool_urls = pool_urls

    def row(self, device: pci.PciDevice) -> dict:
        holder = device.holder
        # Offered only for a free device outside any VF pool: assigning another is refused anyway.
        free = holder is None and not device.pool
        return {
            "device": device,
            "holder_url": self.holder_url(holder),
            "return_url": _return_url(holder, device),
            "assign_links": [(guest.name, _assign_url(guest, device)) for guest in self.guests] if free else [],
        }

    def holder_url(self, holder: pci.Holder | None) -> str:
        if holder is None:
            return ""
        if holder.guest_id:
            return reverse("networks:guest_detail", args=[holder.guest_id])
        return self.pool_urls.get(holder.network_name, "")


def _assign_url(guest, device: pci.PciDevice) -> str:
    """The guest's assignment page with the device preselected."""
    return f"{reverse('networks:guest_hostdev_add', args=[guest.pk])}?pci={device.pci_address}"


def _return_url(holder: pci.Holder | None, device: pci.PciDevice) -> str:
    """Where a guest gives the device back: the hostdev editor's remove page for a device the
    guest holds itself, the guest's page (its interfaces) for a VF it has through a pool."""
    if holder is None or not holder.guest_id:
        return ""
    if holder.kind == pci.POOL:
        return reverse("networks:guest_detail", args=[holder.guest_id])
    return reverse("networks:guest_hostdev_remove", args=[holder.guest_id, device.pci_address])
