"""The guest interface page's form: it collects the fields; the service checks them (the same
checks and messages as the API)."""

from __future__ import annotations

from django import forms

from networks.hypervisor.guests import InterfaceSettings
from networks.services.interfaces import checks


def _choices(values, blank: str = ""):
    return ([("", blank)] if blank else []) + [(value, value) for value in values]


def _text(label: str, **attrs) -> forms.CharField:
    return forms.CharField(label=label, required=False, widget=forms.TextInput(attrs=attrs))


class InterfaceForm(forms.Form):
    """Every setting of an interface. Choice fields only offer what the service accepts; the
    service still checks everything, so a hand-made POST gets the same answers as the API."""

    source_type = forms.ChoiceField(label="Connect to", choices=_choices(checks.SOURCE_TYPES), required=False)
    source = _text("Network, bridge or host interface", list="interface-sources")
    portgroup = _text("Portgroup (networks)")
    mode = forms.ChoiceField(label="macvtap mode", choices=_choices(checks.DIRECT_MODES, "—"), required=False)
    # No model for an SR-IOV pool: the guest drives the VF itself.
    model = forms.ChoiceField(
        label="Model", choices=[*_choices(checks.MODELS), ("", "none (SR-IOV pool)")], required=False
    )
    mac = _text("MAC (empty: a free one in 52:54:00)", placeholder="52:54:00:…")
    link = forms.ChoiceField(label="Link", choices=_choices(checks.LINK_STATES), required=False)
    vlan_tags = _text("VLAN tags (Open vSwitch, SR-IOV pools)", placeholder="10, 20")
    inbound_average = _text("Inbound average (KiB/s)")
    inbound_peak = _text("Inbound peak (KiB/s)")
    inbound_burst = _text("Inbound burst (KiB)")
    outbound_average = _text("Outbound average (KiB/s)")
    outbound_peak = _text("Outbound peak (KiB/s)")
    outbound_burst = _text("Outbound burst (KiB)")
    scope = forms.ChoiceField(label="Apply to", choices=[], required=False)
    message = _text("Why (kept in the audit log)", size="60")

    def __init__(self, *args, running: bool, adding: bool, **kwargs):
        super().__init__(*args, **kwargs)
        if running:
            self.fields["scope"].choices = [
                ("both", "the running guest and its persistent config"),
                ("live", "the running guest only (lost at its next start)"),
                ("config", "the persistent config only (at its next start)"),
            ]
        else:
            self.fields["scope"].choices = [("config", "the persistent config (the guest is not running)")]
        if not adding:
            del self.fields["mac"]

    def service_values(self, current: InterfaceSettings | None = None) -> dict:
        """The request the service takes. For a change, only the fields that differ from
        `current`: a field left as it was is not part of the change."""
        data = self.cleaned_data
        values = {name: data.get(name, "") for name in ("source_type", "source", "portgroup", "mode", "model", "link")}
        values["vlan_tags"] = data.get("vlan_tags", "")
        values["mac"] = data.get("mac", "")
        for direction in ("inbound", "outbound"):
            limit = {key: data.get(f"{direction}_{key}", "") for key in checks.BANDWIDTH_KEYS}
            values[direction] = {key: value for key, value in limit.items() if value} or None
        if data.get("scope"):
            values["scope"] = data["scope"]
        if current is None:
            return {key: value for key, value in values.items() if value not in ("", None)}
        values.pop("mac")
        return _differing(values, current)


def _differing(values: dict, current: InterfaceSettings) -> dict:
    now = initial_values(current)
    changed = {}
    for name, value in values.items():
        if name in ("inbound", "outbound"):
            before = {key: now[f"{name}_{key}"] for key in checks.BANDWIDTH_KEYS if now[f"{name}_{key}"]} or None
            if value != before:
                changed[name] = value
        elif name == "scope" or str(value) != str(now.get(name, "")):
            changed[name] = value
    if any(name in changed for name in checks.SOURCE_FIELDS):  # a move names its whole source
        changed.update({name: values[name] for name in checks.SOURCE_FIELDS if values[name] or name == "portgroup"})
    return changed


def initial_values(settings: InterfaceSettings) -> dict:
    """The form's fields for an interface as it is."""
    values = {
        "source_type": settings.source_type,
        "source": settings.source,
        "portgroup": settings.portgroup,
        "mode": settings.mode,
        "model": settings.model,
        "link": settings.link or "up",
        "vlan_tags": ", ".join(str(tag) for tag in settings.vlan_tags),
    }
    for direction in ("inbound", "outbound"):
        limit = getattr(settings, direction)
        for key in checks.BANDWIDTH_KEYS:
            figure = getattr(limit, key) if limit is not None else None
            values[f"{direction}_{key}"] = str(figure) if figure is not None else ""
    return values
