"""PCI assignment against a real, private libvirtd, on a machine without an IOMMU.

This machine has no IOMMU and no VFIO (a VM without them), so the hardware path cannot be
exercised here: what is proven is that kvmweb reads "no IOMMU" from the real daemon at sync
and refuses an assignment itself, with the reason, before libvirt is asked anything (the
guest's definition on the daemon is unchanged and no operation exists).
"""

import pytest
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from networks.choices import AuditSource, OperationStatus, PassthroughSupport
from networks.models import Guest, NodeDevice, Operation
from networks.services import hosts as host_services
from networks.services.hostdevs import ATTACH, guest_hostdev_request
from networks.services.operations import operation_run

from .kvmweb_setup import registered_host

pytestmark = pytest.mark.realvirt

STOPPED_GUEST = """
<domain type='qemu'>
  <name>pt01</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>
"""


@pytest.fixture
def real_host_with_a_stopped_guest(db, private_libvirtd, private_conn):
    private_conn.defineXML(STOPPED_GUEST)
    with registered_host(private_libvirtd, "kvm-pt", "pt-admin") as (host, admin):
        yield host, admin, private_conn


def test_an_assignment_on_a_host_without_iommu_is_refused_before_libvirt(real_host_with_a_stopped_guest):
    host, admin, conn = real_host_with_a_stopped_guest
    assert host.iommu_support == PassthroughSupport.NO, host.passthrough_note  # read from the real daemon
    guest = Guest.objects.get(host=host, name="pt01")
    device = NodeDevice.objects.filter(host=host, capability="pci").exclude(pci_address="").first()
    assert device is not None, "the real host's PCI devices are mirrored"
    config_before = conn.lookupByName("pt01").XMLDesc(0)
    operations_before = Operation.objects.count()

    with pytest.raises(ValidationError) as refused:
        guest_hostdev_request(action=ATTACH, guest=guest, values={"pci_address": device.pci_address}, actor=admin,
                              source=AuditSource.WEB)  # fmt: skip
    message = " ".join(refused.value.message_dict["non_field_errors"])
    assert "cannot assign PCI devices" in message and "IOMMU no" in message

    api = APIClient()
    api.force_authenticate(admin)
    answer = api.post(f"/api/guests/{guest.pk}/hostdevs/", {"pci_address": device.pci_address, "kind": "hostdev"},
                      format="json")  # fmt: skip
    assert answer.status_code == 400 and "cannot assign PCI devices" in answer.json()["non_field_errors"][0]

    assert Operation.objects.count() == operations_before  # nothing was queued, so no worker asked libvirt
    assert conn.lookupByName("pt01").XMLDesc(0) == config_before
    assert "<hostdev" not in conn.lookupByName("pt01").XMLDesc(0)
    resynced = operation_run(host_services.host_request_sync(host=host, actor=admin, source=AuditSource.WEB).pk)
    assert resynced.status == OperationStatus.SUCCEEDED
    assert Guest.objects.get(pk=guest.pk).hostdev_addresses == []
