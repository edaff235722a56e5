"""`GET /api/hosts/{id}/pci-devices/`: every PCI device of a host, its IOMMU group, SR-IOV
relations and who holds it now, read from the mirror (what the page shows, as JSON)."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from networks.models import Host
from networks.services import pci
from networks.services.permissions import scoped

from .schema import ErrorDocumentingAutoSchema
from .serializers import holder_data

HOST_PK = OpenApiParameter("id", {"type": "integer", "minimum": 0}, OpenApiParameter.PATH)


class PciHolderSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=[pci.GUEST_HOSTDEV, pci.GUEST_INTERFACE, pci.POOL, pci.HOST])
    guest = serializers.IntegerField(allow_null=True, help_text="the guest's id, null when no guest holds it")
    guest_name = serializers.CharField(allow_null=True)
    network = serializers.CharField(allow_null=True, help_text="the VF pool network, for kind pool")
    detail = serializers.CharField(help_text='e.g. "hostdev of gpu01", "host disk controller (PCI class 0x010802)"')


class PciDeviceSerializer(serializers.Serializer):
    name = serializers.CharField()
    pci_address = serializers.CharField()
    driver = serializers.CharField(help_text="empty where the driver does not say (the test driver)")
    vendor = serializers.CharField()
    product = serializers.CharField()
    pci_class = serializers.CharField(help_text='"0x020000"; empty when the node device gives none')
    iommu_group = serializers.IntegerField(allow_null=True)
    group_members = serializers.ListField(child=serializers.CharField(), help_text="the group's other devices")
    physical_function = serializers.CharField(allow_null=True, help_text="a VF's PF address")
    virtual_functions = serializers.ListField(child=serializers.CharField(), help_text="a PF's VF addresses")
    vf_max = serializers.IntegerField(allow_null=True)
    net_interface = serializers.CharField(allow_null=True)
    holder = PciHolderSerializer(allow_null=True, help_text="null: free, as far as the last sync tells")
    pool = serializers.CharField(allow_null=True, help_text="a VF's pool network, which may give it to a guest")


def device_data(device: pci.PciDevice) -> dict:
    return {
        "name": device.name,
        "pci_address": device.pci_address,
        "driver": device.driver,
        "vendor": device.vendor,
        "product": device.product,
        "pci_class": device.pci_class,
        "iommu_group": device.iommu_group,
        "group_members": list(device.group_members),
        "physical_function": device.physical_function or None,
        "virtual_functions": list(device.virtual_functions),
        "vf_max": device.vf_max,
        "net_interface": device.net_interface or None,
        "holder": holder_data(device.holder),
        "pool": device.pool or None,
    }


class HostPciDevicesView(APIView):
    schema = ErrorDocumentingAutoSchema()

    @extend_schema(parameters=[HOST_PK], responses={200: PciDeviceSerializer(many=True)})
    def get(self, request, pk):
        host = get_object_or_404(scoped(Host.objects, request.user, "pk"), pk=pk)
        return Response([device_data(device) for device in pci.pci_devices(host)])
