"""The port forward form: ports as a person types them ("8080" or "8000-8009")."""

from __future__ import annotations

import re

from django import forms

from networks.choices import ForwardProtocol
from networks.models import Guest, Host
from networks.services.forwards import COMMENT_MAX, ForwardSpec

PORTS_RE = re.compile(r"^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$")
# Service field names → the form field that shows their errors.
FIELD_OF = {"host_port": "host_ports", "host_port_end": "host_ports", "guest_port": "guest_ports",
            "guest_port_end": "guest_ports", "host": None}  # fmt: skip


def parse_ports(text: str) -> tuple[int, int | None]:
    """(start, end) from "8080" (end None) or "8000-8009"; the service checks the numbers."""
    match = PORTS_RE.match(text or "")
    if not match:
        raise forms.ValidationError("Give a port (8080) or a range (8000-8009).")
    start, end = match.groups()
    return int(start), int(end) if end is not None else None


class PortForwardForm(forms.Form):
    guest = forms.ModelChoiceField(queryset=Guest.objects.none(), help_text="On a NAT or routed network of this host")
    protocol = forms.ChoiceField(choices=ForwardProtocol.choices, initial=ForwardProtocol.TCP)
    host_address = forms.CharField(required=False, max_length=15, help_text="Empty: every address of the host")
    host_ports = forms.CharField(label="Host port(s)", max_length=11, help_text="8080, or a range 8000-8009")
    guest_ports = forms.CharField(label="Guest port(s)", max_length=11, help_text="A range as long as the host's")
    source_cidrs = forms.CharField(
        label="Allowed sources", required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2, "cols": 40}),
        help_text="IPv4 networks allowed to connect, one per line or comma-separated; empty: any source",
    )  # fmt: skip
    enabled = forms.BooleanField(required=False, initial=True)
    comment = forms.CharField(required=False, max_length=COMMENT_MAX)
    message = forms.CharField(max_length=500, required=False, help_text="Why (kept in the audit log)")

    def __init__(self, *args, host: Host, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["guest"].queryset = Guest.objects.filter(host=host).order_by("name")
        self.fields["guest"].label_from_instance = lambda guest: guest.name  # the host is the page's

    def clean_host_ports(self):
        return parse_ports(self.cleaned_data["host_ports"])

    def clean_guest_ports(self):
        return parse_ports(self.cleaned_data["guest_ports"])

    def clean_source_cidrs(self):
        return [item for item in re.split(r"[\s,]+", self.cleaned_data["source_cidrs"]) if item]

    def spec(self) -> ForwardSpec:
        data = self.cleaned_data
        (host_start, host_end), (guest_start, guest_end) = data["host_ports"], data["guest_ports"]
        return ForwardSpec(
            guest=data["guest"], protocol=data["protocol"], host_address=data["host_address"].strip(),
            host_port_start=host_start, host_port_end=host_end, guest_port_start=guest_start,
            guest_port_end=guest_end, source_cidrs=data["source_cidrs"], enabled=data["enabled"],
            comment=data["comment"],
        )  # fmt: skip

    def add_service_errors(self, error) -> None:
        """Show a service refusal on the field it names (the form's names differ for ports)."""
        for name, messages in error.message_dict.items():
            field = FIELD_OF.get(name, name) if name in FIELD_OF or name in self.fields else None
            for message in messages:
                self.add_error(field, message)


def initial_of(forward) -> dict:
    return {
        "guest": forward.guest_id,
        "protocol": forward.protocol,
        "host_address": forward.host_address or "",
        "host_ports": forward.host_ports,
        "guest_ports": forward.guest_ports,
        "source_cidrs": "\n".join(forward.source_cidrs),
        "enabled": forward.enabled,
        "comment": forward.comment,
    }
