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


class NetworkFilterForm(forms.Form):
    host = forms.ModelChoiceField(queryset=Host.objects.all(), required=False, empty_label="All hosts")
    mode = forms.ChoiceField(choices=[("all", "All modes"), *ForwardMode.choices], required=False)
    state = forms.ChoiceField(
        choices=[("", "Any state"), ("active", "Active"), ("inactive", "Inactive")], required=False
    )
    q = forms.CharField(required=False, label="Search")


class OperationFilterForm(forms.Form):
    host = forms.ModelChoiceField(queryset=Host.objects.all(), required=False, empty_label="All hosts")
    status = forms.ChoiceField(choices=[("", "Any status"), *OperationStatus.choices], required=False)


class AuditFilterForm(forms.Form):
    action = forms.CharField(required=False, help_text="Prefix, e.g. network.start")
    actor = forms.CharField(required=False)
    host = forms.ModelChoiceField(queryset=Host.objects.all(), required=False, empty_label="All hosts")
    source = forms.ChoiceField(
        choices=[("", "Any source"), ("web", "Web"), ("api", "API"), ("task", "Task"), ("system", "System")],
        required=False,
    )
    q = forms.CharField(required=False, label="Search")
