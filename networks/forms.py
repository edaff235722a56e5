"""Forms parse input; the services own the rules."""

from django import forms

from networks.choices import ForwardMode, OperationStatus
from networks.models import Host


class HostForm(forms.ModelForm):
    class Meta:
        model = Host
        fields = ["name", "uri", "queue"]


class ConfirmForm(forms.Form):
    message = forms.CharField(max_length=500, required=False, help_text="Why (kept in the audit log)")


class AutostartForm(ConfirmForm):
    enabled = forms.BooleanField(required=False)


class HostScopedFilterForm(forms.Form):
    """A filter form whose host choice lists only the hosts the user may see (`hosts`)."""

    def __init__(self, *args, hosts, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["host"].queryset = hosts


class NetworkFilterForm(HostScopedFilterForm):
    host = forms.ModelChoiceField(queryset=Host.objects.all(), required=False, empty_label="All hosts")
    mode = forms.ChoiceField(choices=[("all", "All modes"), *ForwardMode.choices], required=False)
    state = forms.ChoiceField(
        choices=[("", "Any state"), ("active", "Active"), ("inactive", "Inactive")], required=False
    )
    q = forms.CharField(required=False, label="Search")


class OperationFilterForm(HostScopedFilterForm):
    host = forms.ModelChoiceField(queryset=Host.objects.all(), required=False, empty_label="All hosts")
    status = forms.ChoiceField(choices=[("", "Any status"), *OperationStatus.choices], required=False)


class AuditFilterForm(forms.Form):
    """Filters of the audit log. `host` is a host name, so removed hosts' events stay findable."""

    action = forms.CharField(required=False, max_length=100, help_text="Prefix, e.g. network.start")
    actor = forms.CharField(required=False, max_length=150)
    host = forms.ChoiceField(required=False)
    source = forms.ChoiceField(
        choices=[("", "Any source"), ("web", "Web"), ("api", "API"), ("task", "Task"), ("system", "System")],
        required=False,
    )
    q = forms.CharField(required=False, max_length=200, label="Search")

    def __init__(self, *args, host_names=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["host"].choices = [("", "All hosts"), *((name, name) for name in sorted(host_names))]


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
