"""The PCI assignment page's form: it collects the fields; the service checks them (the same
checks and messages as the API), so a hand-made POST gets the same answers."""

from __future__ import annotations

from django import forms

from networks.hypervisor.hostdevs import QBH


def _device_label(device) -> str:
    parts = [device.pci_address, device.product or device.name]
    if device.iommu_group is not None:
        parts.append(f"IOMMU group {device.iommu_group}")
    return " · ".join(parts)


def device_choices(vfs, others) -> list:
    """The select's options: free VFs first, then the other free PCI devices."""
    choices = [("", "— choose a free device —")]
    if vfs:
        choices.append(("Free SR-IOV VFs", [(d.pci_address, _device_label(d)) for d in vfs]))
    if others:
        choices.append(("Other free PCI devices", [(d.pci_address, _device_label(d)) for d in others]))
    return choices


def _text(label: str, **attrs) -> forms.CharField:
    return forms.CharField(label=label, required=False, widget=forms.TextInput(attrs=attrs))


class HostdevForm(forms.Form):
    """Every field of an assignment. Selects offer only what the service accepts (free devices,
    802.1Qbh), but the fields are text: the service has the last word."""

    pci_address = forms.CharField(label="Device", required=False, widget=forms.Select())
    kind = forms.CharField(
        label="Give it as",
        required=False,
        widget=forms.Select(
            choices=[
                ("interface", "interface type='hostdev' (an SR-IOV VF as a NIC: kvmweb sets its MAC)"),
                ("hostdev", "hostdev (any PCI device, handed over bare)"),
            ]
        ),
    )
    managed = forms.BooleanField(label="managed (libvirt binds it to vfio-pci itself)", required=False, initial=True)
    mac = _text("MAC (interface; empty: a free one in 52:54:00)", placeholder="52:54:00:…")
    vlan = _text("VLAN tag (interface)", placeholder="42")
    virtualport = forms.CharField(
        label="Port profile (interface)", required=False, widget=forms.Select(choices=[("", "none"), (QBH, QBH)])
    )
    profileid = _text("802.1Qbh profileid")
    scope = forms.ChoiceField(label="Apply to", choices=[], required=False)
    message = _text("Why (kept in the audit log)", size="60")

    def __init__(self, *args, devices: list, running: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["pci_address"].widget.choices = devices
        if running:
            self.fields["scope"].choices = [
                ("both", "the running guest and its persistent config"),
                ("live", "the running guest only (gone at its next start)"),
                ("config", "the persistent config only (at its next start)"),
            ]
        else:
            self.fields["scope"].choices = [("config", "the persistent config (the guest is not running)")]

    def service_values(self) -> dict:
        """The request the service takes; fields of a bare hostdev are left out when empty."""
        data = self.cleaned_data
        values = {
            name: data.get(name, "") for name in ("pci_address", "kind", "mac", "vlan", "virtualport", "profileid")
        }
        values["managed"] = bool(data.get("managed"))
        if data.get("scope"):
            values["scope"] = data["scope"]
        return {key: value for key, value in values.items() if value != ""}
