"""One FilterSet per list, shared by its page and its API list (as NetBox does).

A page ignores a filter it cannot read (the field shows its error, the list is not narrowed);
the API answers 400 for it (DRF's filter backend)."""

import django_filters
from django import forms
from django.db.models import Q
from django.forms.utils import flatatt
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from networks.choices import AuditSource, ForwardMode, GuestState, OperationKind, OperationStatus
from networks.models import AuditEvent, Guest, Host, Network, NodeDevice, Operation, PortForward
from networks.services.permissions import scoped, visible_hosts

SEARCH_MAX = 200
# ForwardMode.NONE is "", which a form reads as "no choice": the filter names it "isolated"
ISOLATED = "isolated"
MODE_CHOICES = [(mode.value or ISOLATED, mode.label) for mode in ForwardMode]


class LeanSelect(forms.Select):
    """A select rendered in Python: Django renders each option through a template, which for
    the host filter of a 500-host fleet cost more than the rest of a list page."""

    def render(self, name, value, attrs=None, renderer=None):
        context = self.get_context(name, value, attrs)["widget"]
        options = format_html_join(
            "",
            '<option value="{}"{}>{}</option>',
            (
                (option["value"], mark_safe(" selected") if option["selected"] else "", option["label"])
                for _group, group_options, _index in context["optgroups"]
                for option in group_options
            ),
        )
        attributes = flatatt({**context["attrs"], "name": context["name"]})
        return format_html("<select{}>{}</select>", attributes, options)


class HostScopedFilterSet(django_filters.FilterSet):
    """`?host=` (and `?network=`) choose among what the user may see: another host's id answers
    like one that does not exist, so a scoped user cannot tell hidden hosts apart."""

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, request=request, **kwargs)
        user = getattr(request, "user", None)
        if "host" in self.filters:
            self.filters["host"].queryset = visible_hosts(user).only("id", "name").order_by("name")
            self.filters["host"].extra.update(empty_label="All hosts", widget=LeanSelect)
        if "network" in self.filters:
            self.filters["network"].queryset = scoped(Network.objects, user)


def _search(fields):
    def method(queryset, _name, value):
        query = Q()
        for field in fields:
            query |= Q(**{f"{field}__icontains": value})
        return queryset.filter(query)

    return method


def search_filter(*fields, label="Search"):
    return django_filters.CharFilter(method=_search(fields), max_length=SEARCH_MAX, label=label)


class HostFilterSet(django_filters.FilterSet):
    q = search_filter("name", "hostname", label="Search")
    status = django_filters.ChoiceFilter(choices=Host._meta.get_field("status").choices, empty_label="Any status")

    class Meta:
        model = Host
        fields = ["q", "status"]


class NetworkFilterSet(HostScopedFilterSet):
    """`mode` offers "Any mode" first; Isolated (forward mode "") is `mode=isolated`."""

    mode = django_filters.ChoiceFilter(choices=MODE_CHOICES, empty_label="Any mode", method="filter_mode", label="Mode")
    state = django_filters.ChoiceFilter(
        choices=[("active", "Active"), ("inactive", "Inactive")],
        empty_label="Any state",
        method="filter_state",
        label="State",
    )
    q = search_filter("name", "bridge")

    class Meta:
        model = Network
        fields = ["host", "mode", "state", "q", "name", "forward_mode", "active"]

    page_fields = ("host", "mode", "state", "q")

    def filter_mode(self, queryset, _name, value):
        return queryset.filter(forward_mode="" if value == ISOLATED else value)

    def filter_state(self, queryset, _name, value):
        return queryset.filter(active=value == "active")


class GuestFilterSet(HostScopedFilterSet):
    state = django_filters.ChoiceFilter(choices=GuestState.choices, empty_label="Any state")
    q = search_filter("name")

    class Meta:
        model = Guest
        fields = ["host", "state", "q", "name"]

    page_fields = ("host", "state", "q")


class NodeDeviceFilterSet(HostScopedFilterSet):
    q = search_filter("name", "pci_address", "product", "net_interface")

    class Meta:
        model = NodeDevice
        fields = ["host", "capability", "q"]

    page_fields = ("host", "q")


class OperationFilterSet(HostScopedFilterSet):
    status = django_filters.ChoiceFilter(choices=OperationStatus.choices, empty_label="Any status")
    kind = django_filters.ChoiceFilter(choices=OperationKind.choices, empty_label="Any kind")

    class Meta:
        model = Operation
        fields = ["host", "network", "status", "kind"]

    page_fields = ("host", "status", "kind")


class AuditEventFilterSet(HostScopedFilterSet):
    """`host` takes the id of an existing host; `host_name` also finds removed hosts' events."""

    action = django_filters.CharFilter(lookup_expr="startswith", max_length=100, help_text="Prefix, e.g. network.start")
    host_name = django_filters.CharFilter(
        max_length=100, label="Host", widget=forms.TextInput(attrs={"list": "audit-host-names"})
    )
    source = django_filters.ChoiceFilter(choices=AuditSource.choices, empty_label="Any source")
    actor_name = django_filters.CharFilter(max_length=150, label="Who")
    q = search_filter("object_name", "message")

    class Meta:
        model = AuditEvent
        fields = ["host", "host_name", "source", "action", "actor_name", "operation", "q"]

    page_fields = ("action", "actor_name", "host_name", "source", "q")


class PortForwardFilterSet(HostScopedFilterSet):
    """`?guest=` chooses among the guests of the user's hosts, like `?host=`."""

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, request=request, **kwargs)
        self.filters["guest"].queryset = scoped(Guest.objects, getattr(request, "user", None))

    class Meta:
        model = PortForward
        fields = ["host", "guest"]

    page_fields = ("host", "guest")


def page_form(filterset) -> forms.Form:
    """The filterset's form with only the fields its page shows (the API takes them all)."""
    form = filterset.form
    for name in list(form.fields):
        if name not in getattr(filterset, "page_fields", form.fields):
            del form.fields[name]
    return form
