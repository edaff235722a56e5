from django.db import models


class NodeDevice(models.Model):
    """A host PCI or net device. SR-IOV VFs link to their PF through `physical_function`."""

    host = models.ForeignKey("networks.Host", on_delete=models.CASCADE, related_name="node_devices")
    name = models.CharField(max_length=255)
    parent = models.CharField(max_length=255, blank=True)
    capability = models.CharField(max_length=50)
    pci_address = models.CharField(max_length=20, blank=True)
    driver = models.CharField(max_length=100, blank=True)
    vendor = models.CharField(max_length=255, blank=True)
    product = models.CharField(max_length=255, blank=True)
    iommu_group = models.IntegerField(null=True, blank=True)
    physical_function = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="virtual_functions"
    )
    vf_max = models.PositiveIntegerField(null=True, blank=True)
    vf_addresses = models.JSONField(default=list, blank=True)
    net_interface = models.CharField(max_length=100, blank=True)
    net_mac = models.CharField(max_length=17, blank=True)
    xml = models.TextField(blank=True)
    # A digest of the values last read (services.sync): a device read the same is not written again.
    digest = models.CharField(max_length=32, blank=True, editable=False)

    class Meta:
        ordering = ["host", "capability", "name"]
        constraints = [models.UniqueConstraint(fields=["host", "name"], name="nodedev_unique_name_per_host")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_sriov_pf(self) -> bool:
        return bool(self.vf_addresses) or bool(self.vf_max)
