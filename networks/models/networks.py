import ipaddress

from django.db import models
from django.db.models.functions import Lower
from django.urls import reverse

from networks.choices import AddressFamily, DnsRecordKind, ForwardInterfaceKind, ForwardMode


class Network(models.Model):
    """A libvirt network as last read from its host (the mirror; the host is the truth)."""

    host = models.ForeignKey("networks.Host", on_delete=models.CASCADE, related_name="networks")
    name = models.CharField(max_length=255)
    uuid = models.CharField(max_length=36, blank=True)
    forward_mode = models.CharField(max_length=20, choices=ForwardMode.choices, blank=True)
    forward_dev = models.CharField(max_length=100, blank=True)
    bridge = models.CharField(max_length=100, blank=True)
    stp = models.BooleanField(null=True)
    mtu = models.PositiveIntegerField(null=True, blank=True)
    domain_name = models.CharField(max_length=255, blank=True)
    active = models.BooleanField(default=False)
    autostart = models.BooleanField(default=False)
    persistent = models.BooleanField(default=True)
    connections = models.PositiveIntegerField(default=0)
    live_xml = models.TextField(blank=True)
    inactive_xml = models.TextField(blank=True)
    drifted = models.BooleanField(default=False, help_text="The running config differs from the persistent one.")
    leases_known = models.BooleanField(default=False, help_text="The host could list this network's DHCP leases.")
    synced_at = models.DateTimeField(null=True, blank=True)
    # Digests of what the last sync read (services.sync): an object read the same is not written again.
    digest = models.CharField(max_length=32, blank=True, editable=False)
    leases_digest = models.CharField(max_length=32, blank=True, editable=False)

    class Meta:
        ordering = ["host__name", "name"]
        constraints = [models.UniqueConstraint(fields=["host", "name"], name="network_unique_name_per_host")]
        # The global search: names from their start in any case, UUIDs exactly
        indexes = [
            models.Index(Lower("name"), name="network_name_lower"),
            models.Index(fields=["uuid"], name="network_uuid"),
            models.Index(fields=["bridge"], name="network_bridge"),
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.host.name}"

    def get_absolute_url(self) -> str:
        return reverse("networks:network_detail", args=[self.pk])

    @property
    def mode_label(self) -> str:
        if self.forward_mode == ForwardMode.BRIDGE and not self.bridge:
            return "macvtap bridge"  # <forward mode='bridge'> over host interfaces, no Linux bridge
        return ForwardMode(self.forward_mode).label if self.forward_mode in ForwardMode.values else self.forward_mode


class NetworkIp(models.Model):
    """One `<ip>` element; `position` is its index among all `<ip>` elements (net-update's parentIndex)."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="ips")
    position = models.PositiveSmallIntegerField()
    address = models.GenericIPAddressField()
    prefix = models.PositiveSmallIntegerField()
    family = models.CharField(max_length=4, choices=AddressFamily.choices)
    # The subnet's first and last address as 32 hex digits (IPv4 and IPv6 alike), so that "which
    # subnets contain this address" is an index range in SQL on every database. Set with
    # `bounds_of` wherever rows are written; empty on a row written without it.
    subnet_start = models.CharField(max_length=32, blank=True, editable=False)
    subnet_end = models.CharField(max_length=32, blank=True, editable=False)

    class Meta:
        ordering = ["network", "position"]
        constraints = [models.UniqueConstraint(fields=["network", "position"], name="ip_unique_position")]
        indexes = [models.Index(fields=["family", "subnet_start", "subnet_end"], name="ip_subnet_bounds")]

    def __str__(self) -> str:
        return f"{self.address}/{self.prefix}"

    @staticmethod
    def bounds_of(address: str, prefix: int) -> dict[str, str]:
        """`subnet_start` and `subnet_end` of the subnet `address/prefix` (empty if it is not one)."""
        try:
            subnet = ipaddress.ip_interface(f"{address}/{prefix}").network
        except ValueError:
            return {"subnet_start": "", "subnet_end": ""}
        return {
            "subnet_start": address_key(subnet.network_address),
            "subnet_end": address_key(subnet.broadcast_address),
        }


def address_key(address) -> str:
    """An address as 32 hex digits: ordered as the addresses are, within one family."""
    return f"{int(ipaddress.ip_address(address)):032x}"


class DhcpRange(models.Model):
    """A dynamic DHCP range of one `<ip>`."""

    ip = models.ForeignKey(NetworkIp, on_delete=models.CASCADE, related_name="dhcp_ranges")
    start = models.GenericIPAddressField()
    end = models.GenericIPAddressField()
    # Addresses from start to end (capped at 2**63 - 1 for huge IPv6 ranges), set with `size_of`
    # where rows are written, so that pool usage is a sum in SQL; null on a row written without it.
    size = models.PositiveBigIntegerField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["ip", "start"]

    def __str__(self) -> str:
        return f"{self.start} - {self.end}"

    @staticmethod
    def size_of(start: str, end: str) -> int:
        """Addresses from start to end inclusive; 0 for a reversed or mixed-family range."""
        try:
            first, last = ipaddress.ip_address(start), ipaddress.ip_address(end)
        except ValueError:
            return 0
        if first.version != last.version or last < first:
            return 0
        return min(int(last) - int(first) + 1, 2**63 - 1)


class DhcpReservation(models.Model):
    """A static DHCP host entry (IPv4: mac+ip; IPv6: id or name + ip)."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="dhcp_reservations")
    ip = models.ForeignKey(NetworkIp, on_delete=models.CASCADE, related_name="dhcp_reservations")
    address = models.GenericIPAddressField()
    mac = models.CharField(max_length=17, blank=True)
    host_id = models.CharField(max_length=255, blank=True)
    name = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["network", "address"]
        constraints = [
            models.UniqueConstraint(fields=["network", "address"], name="reservation_unique_ip"),
            models.UniqueConstraint(
                fields=["network", "mac"], condition=~models.Q(mac=""), name="reservation_unique_mac"
            ),
        ]
        # The fleet-wide searches (Addresses, global search): MACs (stored lower case) and
        # addresses exactly or MACs from their start, names from their start in any case
        indexes = [
            models.Index(fields=["mac"], name="reservation_mac"),
            models.Index(fields=["address"], name="reservation_address"),
            models.Index(fields=["host_id"], name="reservation_host_id"),
            models.Index(Lower("name"), name="reservation_name_lower"),
        ]

    def __str__(self) -> str:
        return f"{self.mac or self.host_id or self.name} -> {self.address}"


class DnsRecord(models.Model):
    """A DNS host, TXT or SRV record served by the network's dnsmasq."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="dns_records")
    kind = models.CharField(max_length=4, choices=DnsRecordKind.choices)
    name = models.CharField(max_length=500, help_text="Hostnames, TXT name or SRV service")
    value = models.CharField(max_length=500, blank=True, help_text="Host IP, TXT value or SRV target")
    protocol = models.CharField(max_length=10, blank=True)
    domain = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    priority = models.PositiveIntegerField(null=True, blank=True)
    weight = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["network", "kind", "name"]
        indexes = [
            models.Index(Lower("name"), name="dns_record_name_lower"),
            models.Index(fields=["value"], name="dns_record_value"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} {self.value}"


class Portgroup(models.Model):
    """A named set of interface settings (VLAN, bandwidth) guests can pick."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="portgroups")
    name = models.CharField(max_length=255)
    is_default = models.BooleanField(default=False)
    vlan_tags = models.JSONField(default=list, blank=True)
    inbound_average = models.PositiveIntegerField(null=True, blank=True, help_text="KiB/s")
    outbound_average = models.PositiveIntegerField(null=True, blank=True, help_text="KiB/s")
    xml = models.TextField(blank=True)

    class Meta:
        ordering = ["network", "name"]
        constraints = [models.UniqueConstraint(fields=["network", "name"], name="portgroup_unique_name")]

    def __str__(self) -> str:
        return self.name


class ForwardInterface(models.Model):
    """A `<forward>` child: an interface, an SR-IOV PF, or a VF's PCI address."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="forward_interfaces")
    kind = models.CharField(max_length=10, choices=ForwardInterfaceKind.choices)
    dev = models.CharField(max_length=100, blank=True)
    pci_address = models.CharField(max_length=20, blank=True)
    connections = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["network", "kind", "dev", "pci_address"]

    def __str__(self) -> str:
        return self.dev or self.pci_address


class DhcpLease(models.Model):
    """A DHCP lease dnsmasq handed out, as read at the last sync of the network."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="dhcp_leases")
    mac = models.CharField(max_length=17, blank=True)
    address = models.GenericIPAddressField()
    prefix = models.PositiveSmallIntegerField(null=True, blank=True)
    hostname = models.CharField(max_length=255, blank=True)
    client_id = models.CharField(max_length=255, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["network", "address"]
        indexes = [
            models.Index(fields=["mac"], name="lease_mac"),
            models.Index(fields=["address"], name="lease_address"),
            models.Index(Lower("hostname"), name="lease_hostname_lower"),
        ]

    def __str__(self) -> str:
        return f"{self.mac} {self.address}"
