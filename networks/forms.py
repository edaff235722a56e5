"""Forms parse input; the services own the rules."""

from django import forms

from networks.models import Host


class HostForm(forms.ModelForm):
    class Meta:
        model = Host
        fields = ["name", "uri", "queue"]


class ConfirmForm(forms.Form):
    message = forms.CharField(max_length=500, required=False, help_text="Why (kept in the audit log)")


class AutostartForm(ConfirmForm):
    enabled = forms.BooleanField(required=False)


# The fields each net-update section takes, in the order the edit form shows them.
SECTION_FIELDS = {
    "ip-dhcp-host": [
        ("mac", "MAC address"),
        ("ip", "IP address"),
        ("name", "Host name"),
        ("host_id", "DHCPv6 id (IPv6)"),
    ],
    "ip-dhcp-range": [("start", "First address"), ("end", "Last address")],
    "dns-host": [("ip", "IP address"), ("hostnames", "Host names (space separated)")],
    "dns-txt": [("name", "Name"), ("value", "Value")],
    "dns-srv": [
        ("service", "Service"),
        ("protocol", "Protocol (tcp/udp)"),
        ("domain", "Domain"),
        ("target", "Target host"),
        ("port", "Port"),
        ("priority", "Priority"),
        ("weight", "Weight"),
    ],
    "portgroup": [
        ("name", "Name"),
        ("is_default", "Default (yes/no)"),
        ("vlan_tags", "VLAN tags"),
        ("inbound_average", "Inbound average (KiB/s)"),
        ("outbound_average", "Outbound average (KiB/s)"),
    ],
    "forward-interface": [("dev", "Interface")],
}
SECTION_TITLES = {
    "ip-dhcp-host": "DHCP reservation",
    "ip-dhcp-range": "DHCP range",
    "dns-host": "DNS host record",
    "dns-txt": "DNS TXT record",
    "dns-srv": "DNS SRV record",
    "portgroup": "Portgroup",
    "forward-interface": "Forward interface",
}
