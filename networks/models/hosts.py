from django.db import models
from django.urls import reverse

from networks.choices import HostStatus, PassthroughSupport


class Host(models.Model):
    """A hypervisor host reached through a libvirt URI. Its facts come from the last sync."""

    name = models.SlugField(max_length=100, unique=True)
    uri = models.CharField(max_length=500, help_text="libvirt URI, e.g. qemu+ssh://root@kvm1/system")
    queue = models.CharField(
        max_length=100,
        blank=True,
        help_text="Celery queue of a worker running on this host; empty for the central workers.",
    )
    status = models.CharField(max_length=20, choices=HostStatus.choices, default=HostStatus.UNKNOWN)
    last_error = models.TextField(blank=True)
    last_sync_at = models.DateTimeField(null=True, blank=True)
    hostname = models.CharField(max_length=255, blank=True)
    hypervisor_type = models.CharField(max_length=50, blank=True)
    hypervisor_version = models.CharField(max_length=50, blank=True)
    libvirt_version = models.CharField(max_length=50, blank=True)
    cpu_model = models.CharField(max_length=100, blank=True)
    cpus = models.PositiveIntegerField(null=True, blank=True)
    memory_mib = models.PositiveBigIntegerField(null=True, blank=True)
    host_bridges = models.JSONField(default=list, blank=True)
    sync_warnings = models.JSONField(default=list, blank=True)
    # Written by the host worker (the one consuming `queue`, on the hypervisor) when it starts
    # and while it runs: port forwards need it, since only it can reach the host's firewall.
    worker_seen_at = models.DateTimeField(null=True, blank=True)
    # Written by the host's event watcher (networks.services.watch): when it last confirmed it
    # follows the host (at connect and at each XML check), when it last mirrored an event, and
    # how long that took from the event's arrival to the mirror written
    watched_at = models.DateTimeField(null=True, blank=True)
    last_event_at = models.DateTimeField(null=True, blank=True)
    event_lag_seconds = models.FloatField(null=True, blank=True)
    # "nftables" or "iptables": how the host's libvirt writes its firewall rules, as the host
    # worker detected it; empty until a host worker reported
    firewall_backend = models.CharField(max_length=20, blank=True)
    # PCI passthrough, from the domain capabilities and node devices at the last sync
    iommu_support = models.CharField(
        max_length=10, choices=PassthroughSupport.choices, default=PassthroughSupport.UNKNOWN
    )
    vfio_support = models.CharField(
        max_length=10, choices=PassthroughSupport.choices, default=PassthroughSupport.UNKNOWN
    )
    passthrough_note = models.CharField(max_length=500, blank=True, help_text="Why passthrough is or is not possible")
    # Host NIC name → how the host itself uses it ("with address 192.0.2.10/24", "member of bridge
    # br0"), from the last sync: assigning such a NIC (or its IOMMU group) to a guest cuts the host off
    nic_uses = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("networks:host_detail", args=[self.pk])
