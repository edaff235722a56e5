from django.db import models
from django.urls import reverse

from networks.choices import ForwardProtocol, ForwardState


class PortForward(models.Model):
    """A host port (or range) forwarded to a port of a NAT or routed guest.

    The guest is kept by MAC and name as well as by row: a forward outlives a guest that
    is undefined and defined again, and the host worker finds its address from the MAC.
    """

    host = models.ForeignKey("networks.Host", on_delete=models.CASCADE, related_name="port_forwards")
    protocol = models.CharField(max_length=3, choices=ForwardProtocol.choices, default=ForwardProtocol.TCP)
    # empty: every address of the host
    host_address = models.GenericIPAddressField(protocol="IPv4", null=True, blank=True)
    host_port_start = models.PositiveIntegerField()
    host_port_end = models.PositiveIntegerField()
    guest = models.ForeignKey(
        "networks.Guest", null=True, blank=True, on_delete=models.SET_NULL, related_name="port_forwards"
    )
    guest_name = models.CharField(max_length=255)
    guest_mac = models.CharField(max_length=17)
    guest_port_start = models.PositiveIntegerField()
    guest_port_end = models.PositiveIntegerField()
    # CIDRs allowed to connect; empty: any source
    source_cidrs = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    comment = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # what the host worker last found on the host
    state = models.CharField(max_length=20, choices=ForwardState.choices, default=ForwardState.UNKNOWN)
    guest_address = models.GenericIPAddressField(protocol="IPv4", null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host__name", "protocol", "host_port_start"]
        indexes = [models.Index(fields=["host", "protocol", "host_port_start"], name="port_forward_host_port")]

    def __str__(self) -> str:
        return f"{self.protocol}/{self.host_ports} → {self.guest_name}:{self.guest_ports}"

    def get_absolute_url(self) -> str:
        return reverse("networks:port_forward_detail", args=[self.pk])

    @property
    def host_ports(self) -> str:
        return _port_range(self.host_port_start, self.host_port_end)

    @property
    def guest_ports(self) -> str:
        return _port_range(self.guest_port_start, self.guest_port_end)


def _port_range(start: int, end: int) -> str:
    return str(start) if start == end else f"{start}-{end}"
