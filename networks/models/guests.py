from django.db import models
from django.db.models.functions import Lower
from django.urls import reverse

from networks.choices import GuestState


class Guest(models.Model):
    """A libvirt domain on a host, as last synced."""

    host = models.ForeignKey("networks.Host", on_delete=models.CASCADE, related_name="guests")
    name = models.CharField(max_length=255)
    uuid = models.CharField(max_length=36, blank=True)
    state = models.CharField(max_length=20, choices=GuestState.choices, default=GuestState.NOSTATE)
    hostdev_addresses = models.JSONField(default=list, blank=True)
    xml = models.TextField(blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    # A digest of what the last sync read (services.sync): a guest read the same is not written again.
    digest = models.CharField(max_length=32, blank=True, editable=False)

    class Meta:
        ordering = ["host__name", "name"]
        constraints = [models.UniqueConstraint(fields=["host", "name"], name="guest_unique_name_per_host")]
        # The global search: names from their start in any case, UUIDs exactly
        indexes = [
            models.Index(Lower("name"), name="guest_name_lower"),
            models.Index(fields=["uuid"], name="guest_uuid"),
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.host.name}"

    def get_absolute_url(self) -> str:
        return reverse("networks:guest_detail", args=[self.pk])

    @property
    def is_running(self) -> bool:
        return self.state in {GuestState.RUNNING, GuestState.BLOCKED, GuestState.PAUSED}


class GuestInterface(models.Model):
    """One `<interface>` of a guest. `network` links it when it sits on a mirrored network."""

    guest = models.ForeignKey(Guest, on_delete=models.CASCADE, related_name="interfaces")
    position = models.PositiveSmallIntegerField()
    type = models.CharField(max_length=20)
    mac = models.CharField(max_length=17, blank=True)
    source = models.CharField(max_length=255, blank=True)
    model = models.CharField(max_length=50, blank=True)
    target_dev = models.CharField(max_length=100, blank=True)
    vlan_tags = models.JSONField(default=list, blank=True)
    portgroup = models.CharField(max_length=255, blank=True)
    # macvtap (`type='direct'`): bridge, vepa, private or passthrough; empty otherwise
    source_mode = models.CharField(max_length=20, blank=True)
    # "up", "down", or empty when libvirt's XML says nothing (libvirt's default is up)
    link_state = models.CharField(max_length=10, blank=True)
    # {"inbound": {"average": …, "peak": …, "burst": …}, "outbound": {…}} in libvirt's units
    bandwidth = models.JSONField(default=dict, blank=True)
    # the guest PCI address libvirt gave it, e.g. "0000:00:03.0"; kept across detach + attach
    pci_address = models.CharField(max_length=20, blank=True)
    # addresses the guest agent reported at the last sync (leases come from the network)
    agent_addresses = models.JSONField(default=list, blank=True)
    network = models.ForeignKey(
        "networks.Network", null=True, blank=True, on_delete=models.SET_NULL, related_name="guest_interfaces"
    )

    class Meta:
        ordering = ["guest", "position"]
        # MACs are unique across the fleet: the check reads this index
        indexes = [models.Index(fields=["mac"], name="guest_interface_mac")]

    def __str__(self) -> str:
        return f"{self.guest.name} {self.mac or self.type}"
