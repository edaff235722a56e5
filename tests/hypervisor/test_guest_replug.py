"""A replug (unplug + plug) whose guest is slow to release the NIC, or whose plugs are refused.

No database. The timing is played by a stand-in guest: a real guest that never acknowledges an
unplug cannot be made here (each test guest's kernel answers within seconds), and a paused one,
which holds the unplug until it runs again, is proved on the real daemon in
tests/realvirt/test_guest_interfaces_real.py. The stand-in plays only what the replug reads: the
live XML, and the detach and attach calls.
"""

import time
from types import SimpleNamespace

import libvirt
import pytest

from networks.hypervisor import guests as hv_guests
from networks.hypervisor import xml
from networks.hypervisor.errors import HypervisorError
from networks.services.interfaces import runs

MAC = "52:54:00:ab:10:01"
OLD = f"<interface type='network'><mac address='{MAC}'/><source network='a'/><model type='virtio'/></interface>"
NEW = f"<interface type='network'><mac address='{MAC}'/><source network='a'/><model type='e1000'/></interface>"


class StandInGuest:
    """A running guest (its own connection too) with interface OLD. An unplug is acknowledged
    `release_after` seconds after it was asked (None: never); the first `refusals` attaches
    are refused."""

    def __init__(self, release_after: float | None, refusals: int = 0):
        self.release_after, self.refusals = release_after, refusals
        self.interface = OLD
        self.unplug_asked: float | None = None
        self.attached: list[str] = []
        self.attach_calls = 0

    def lookupByName(self, name):  # libvirt's names
        return self

    def XMLDesc(self, flags=0):
        asked, wait = self.unplug_asked, self.release_after
        if asked is not None and wait is not None and time.monotonic() - asked >= wait:
            self.interface, self.unplug_asked = "", None
        return f"<domain><name>vm</name><devices>{self.interface}</devices></domain>"

    def detachDeviceFlags(self, device, flags):
        assert flags == hv_guests.LIVE
        self.unplug_asked = time.monotonic()

    def attachDeviceFlags(self, device, flags):
        assert flags == hv_guests.LIVE and not self.interface, "plugged while the old NIC is still there"
        self.attach_calls += 1
        if self.refusals:
            self.refusals -= 1
            raise libvirt.libvirtError(f"refused attach {self.attach_calls}")
        self.attached.append(device)
        self.interface = device


@pytest.fixture
def short_waits(monkeypatch):
    monkeypatch.setattr(hv_guests, "POLL_S", 0.02)
    monkeypatch.setattr(hv_guests, "DETACH_WAIT_S", 0.3)
    monkeypatch.setattr(hv_guests, "DETACH_GRACE_S", 1.0)


def test_a_guest_slower_than_the_first_wait_is_waited_for_and_gets_the_new_nic(short_waits):
    guest, lines = StandInGuest(release_after=0.8), []
    change = hv_guests.replug_interface(guest, "vm", NEW, log=lines.append)
    assert change.method == hv_guests.REPLUG
    assert xml.parse(change.interface_xml).xpath("string(model/@type)") == "e1000"
    assert lines == [f"vm has not released interface {MAC} after 0.3 s: waiting 1 s more"]


def test_a_guest_that_never_releases_the_nic_fails_the_replug_with_the_xml_to_plug_in(short_waits):
    guest = StandInGuest(release_after=None)
    started = time.monotonic()
    with pytest.raises(hv_guests.DetachPending) as pending:
        hv_guests.replug_interface(guest, "vm", NEW)
    assert time.monotonic() - started >= 1.3, "the first wait and the grace, both"
    message = str(pending.value)
    assert message.splitlines()[0] == (
        f"Detach pending: vm has not released interface {MAC} within 1.3 s; the NIC will disappear when the guest "
        "releases it; re-add it (virsh attach-device --live) with this interface XML:"
    )
    assert message.endswith(pending.value.interface_xml)
    plug = xml.parse(pending.value.interface_xml)
    assert plug.xpath("string(mac/@address)") == MAC and plug.xpath("string(model/@type)") == "e1000"
    assert guest.attached == [], "nothing was plugged while the old NIC was still there"


def test_the_old_nic_is_plugged_in_again_when_the_new_one_is_refused(short_waits):
    guest = StandInGuest(release_after=0.0, refusals=1)
    with pytest.raises(HypervisorError) as refused:
        hv_guests.replug_interface(guest, "vm", NEW)
    assert str(refused.value) == "The new interface was refused (refused attach 1); the old one is plugged in again."
    assert not isinstance(refused.value, hv_guests.NicUnplugged)
    assert xml.parse(guest.interface).xpath("string(model/@type)") == "virtio"


def test_when_the_old_nic_is_refused_too_the_error_says_the_nic_is_unplugged_with_its_xml(short_waits):
    guest = StandInGuest(release_after=0.0, refusals=2)
    with pytest.raises(hv_guests.NicUnplugged) as unplugged:
        hv_guests.replug_interface(guest, "vm", NEW)
    message = str(unplugged.value)
    assert message.splitlines()[0] == (
        "The new interface was refused (refused attach 1), and plugging the old one in again failed too "
        "(refused attach 2): the NIC is now unplugged; its XML:"
    )
    assert message.endswith(unplugged.value.interface_xml)
    assert xml.parse(unplugged.value.interface_xml).xpath("string(model/@type)") == "virtio"
    assert guest.interface == ""


def test_a_recovery_that_cannot_plug_back_the_old_nic_says_the_nic_is_unplugged(short_waits):
    guest = StandInGuest(release_after=0.0, refusals=2)
    guest.interface = ""  # the worker died after the unplug
    operation = SimpleNamespace(
        checkpoint={"old_interface_xml": OLD, "new_interface_xml": NEW, "replugging": True},
        target_name="vm", params={"mac": MAC},
    )  # fmt: skip
    lines = []
    with pytest.raises(hv_guests.NicUnplugged) as unplugged:
        runs._plug_back(guest, operation, SimpleNamespace(log=lines.append))
    assert str(unplugged.value).splitlines()[0] == (
        "The new interface was refused (refused attach 1), and plugging the old one in again failed too "
        "(refused attach 2): the NIC is now unplugged; its XML:"
    )
    assert unplugged.value.interface_xml == OLD and lines[-1] == str(unplugged.value)


HOSTDEV = (
    "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
    "<address domain='0x0000' bus='0x41' slot='0x00' function='0x0'/></source></hostdev>"
)


class StandInHostdevGuest:
    """A running guest holding the PCI device 0000:41:00.0 until `release_after` s from now (None: never)."""

    def __init__(self, release_after: float | None):
        self.release_at = None if release_after is None else time.monotonic() + release_after

    def lookupByName(self, name):
        return self

    def XMLDesc(self, flags=0):
        held = self.release_at is None or time.monotonic() < self.release_at
        return f"<domain><name>vm</name><devices>{HOSTDEV if held else ''}</devices></domain>"


def test_a_pci_device_unplug_is_waited_for_until_the_guest_releases_it(short_waits):
    guest = StandInHostdevGuest(release_after=0.1)
    hv_guests._wait_until_released(guest, "vm", "0000:41:00.0")
    assert "<hostdev" not in guest.XMLDesc()


def test_a_pci_device_the_guest_keeps_fails_after_the_wait(short_waits):
    started = time.monotonic()
    with pytest.raises(HypervisorError) as kept:
        hv_guests._wait_until_released(StandInHostdevGuest(release_after=None), "vm", "0000:41:00.0", timeout=0.3)
    assert time.monotonic() - started >= 0.3
    assert str(kept.value) == (
        "vm has not released PCI device 0000:41:00.0 within 0.3 s (the guest must acknowledge an unplug)."
    )
