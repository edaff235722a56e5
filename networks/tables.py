"""The list pages' tables (django-tables2): sortable columns, sorted and paginated in the database.

Counts (a host's networks, a network's guests…) are computed for the rows of the page only, in
one grouped query each (`page_counts`), never over the whole table before paging. Row links are
built from one reversed URL per table, not one `reverse()` per row.
"""

from __future__ import annotations

from urllib.parse import quote

import django_tables2 as tables
from django.db.models import Count
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.timezone import localtime

from networks.models import Guest, GuestInterface, Host, Network, NodeDevice, PortForward
from networks.templatetags.forwards import forward_state

_SENTINEL = 987654321


class RowUrl:
    """`reverse(viewname, args=[pk])` for many rows from a single reverse()."""

    def __init__(self, viewname: str):
        self.head, self.tail = reverse(viewname, args=[_SENTINEL]).split(str(_SENTINEL))

    def __call__(self, pk) -> str:
        return f"{self.head}{pk}{self.tail}"


def link(url: str, text) -> str:
    return format_html('<a href="{}">{}</a>', url, text)


def badge(css: str, text) -> str:
    return format_html('<span class="badge {}">{}</span>', css, text)


def _when(value) -> str:
    """A time as the pages show it (the current time zone), "" for none."""
    return f"{localtime(value):%Y-%m-%d %H:%M:%S}" if value else ""


def grouped_counts(queryset, key: str, counted: str = "pk", distinct: bool = False) -> dict:
    rows = queryset.values(key).annotate(n=Count(counted, distinct=distinct)).order_by()
    return {row[key]: row["n"] for row in rows}


class ListTable(tables.Table):
    """Common settings. `page_counts` maps an attribute set on each row of the page to a function
    of the page's ids returning {id: count}."""

    page_counts: dict = {}

    class Meta:
        order_by_field = "sort"
        page_field = "page"
        per_page_field = "per_page"
        template_name = "networks/partials/table.html"
        attrs = {"class": "list"}

    def body_html(self):
        """The page's rows as HTML, built here in one pass: django-tables2's own cell rendering
        (a template context and a signature inspection per cell) cost more than the rest of
        the page. Columns keep their meaning: `render_<name>(record)` or the accessor's value,
        the column's default when empty, and the column's td class."""
        columns = []
        for bound in self.columns:
            td_class = bound.column.attrs.get("td", {}).get("class", "")
            cell = format_html('<td class="{}">', td_class) if td_class else mark_safe("<td>")
            columns.append((getattr(self, f"render_{bound.name}", None), bound.accessor, bound.default, cell))
        rows = []
        for record in self.paginated_rows.data:
            cells = []
            for render, accessor, default, cell in columns:
                value = render(record) if render else accessor.resolve(record, quiet=True)
                cells.append((cell, default if value in (None, "") else value))
            rows.append(format_html("<tr>{}</tr>", format_html_join("", "{}{}</td>", cells)))
        if not rows:
            return format_html('<tr><td colspan="{}" class="muted">{}</td></tr>', len(columns), self.empty_text)
        return mark_safe("\n".join(rows))  # each row escaped by format_html

    def fill_page_counts(self, records: list) -> None:
        ids = [record.pk for record in records]
        for attribute, counter in self.page_counts.items():
            counts = counter(ids) if ids else {}
            for record in records:
                setattr(record, attribute, counts.get(record.pk, 0))


class HostTable(ListTable):
    name = tables.Column(order_by=("name",))
    status = tables.Column(order_by=("status", "name"))
    libvirt_version = tables.Column(verbose_name="libvirt", orderable=False)
    hypervisor = tables.Column(empty_values=(), orderable=False)
    network_count = tables.Column(verbose_name="Networks", empty_values=(), orderable=False)
    guest_count = tables.Column(verbose_name="Guests", empty_values=(), orderable=False)
    last_sync_at = tables.Column(verbose_name="Last sync", default="never")
    last_error = tables.Column(orderable=False, attrs={"td": {"class": "errorlist"}})

    page_counts = {
        "network_count": lambda ids: grouped_counts(Network.objects.filter(host_id__in=ids), "host_id"),
        "guest_count": lambda ids: grouped_counts(Guest.objects.filter(host_id__in=ids), "host_id"),
    }

    class Meta(ListTable.Meta):
        model = Host
        fields = ()
        empty_text = "No hosts yet."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.host_url = RowUrl("networks:host_detail")

    def render_name(self, record):
        return link(self.host_url(record.pk), record.name)

    def render_status(self, record):
        return badge(record.status, record.get_status_display())

    def render_hypervisor(self, record):
        return f"{record.hypervisor_type} {record.hypervisor_version}".strip()

    def render_last_sync_at(self, record):
        return _when(record.last_sync_at)

    def render_last_error(self, record):
        value = record.last_error
        return value if len(value) <= 120 else value[:119] + "…"


class NetworkTable(ListTable):
    name = tables.Column(order_by=("name", "host__name"))
    host = tables.Column(order_by=("host__name", "name"))
    mode = tables.Column(verbose_name="Mode", accessor="forward_mode", order_by=("forward_mode", "host__name", "name"))
    bridge = tables.Column(order_by=("bridge", "host__name", "name"))
    state = tables.Column(accessor="active", order_by=("active", "host__name", "name"), empty_values=())
    autostart = tables.Column(order_by=("autostart", "host__name", "name"))
    guest_count = tables.Column(verbose_name="Guests", empty_values=(), orderable=False)

    page_counts = {
        "guest_count": lambda ids: grouped_counts(
            GuestInterface.objects.filter(network_id__in=ids), "network_id", "guest_id", distinct=True
        )
    }

    class Meta(ListTable.Meta):
        model = Network
        fields = ()
        empty_text = "No networks."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.network_url, self.host_url = RowUrl("networks:network_detail"), RowUrl("networks:host_detail")

    def render_name(self, record):
        badges = []
        if record.drifted:
            badges.append(("drifted", "running config differs from persistent config", "drifted"))
        if not record.persistent:
            badges.append(("", "", "transient"))
        extra = format_html_join("", ' <span class="badge {}" title="{}">{}</span>', badges)
        return format_html("{}{}", link(self.network_url(record.pk), record.name), extra)

    def render_host(self, record):
        return link(self.host_url(record.host_id), record.host.name)

    def render_mode(self, record):
        return record.mode_label

    def render_state(self, record):
        return badge("active" if record.active else "", "active" if record.active else "inactive")

    def render_autostart(self, record):
        return "yes" if record.autostart else "no"


class GuestTable(ListTable):
    name = tables.Column(order_by=("name", "host__name"))
    host = tables.Column(order_by=("host__name", "name"))
    state = tables.Column(order_by=("state", "host__name", "name"))
    interface_count = tables.Column(verbose_name="Interfaces", empty_values=(), orderable=False)

    page_counts = {
        "interface_count": lambda ids: grouped_counts(GuestInterface.objects.filter(guest_id__in=ids), "guest_id")
    }

    class Meta(ListTable.Meta):
        model = Guest
        fields = ()
        empty_text = "No guests."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.guest_url, self.host_url = RowUrl("networks:guest_detail"), RowUrl("networks:host_detail")

    def render_name(self, record):
        return link(self.guest_url(record.pk), record.name)

    def render_host(self, record):
        return link(self.host_url(record.host_id), record.host.name)

    def render_state(self, record):
        return badge(record.state, record.get_state_display())


class HostNetworkTable(NetworkTable):
    """A host's networks on its page: the host column is the page itself."""

    class Meta(NetworkTable.Meta):
        exclude = ("host",)
        prefix = "networks-"


class HostGuestTable(GuestTable):
    """A host's guests on its page."""

    class Meta(GuestTable.Meta):
        exclude = ("host",)
        prefix = "guests-"


class AttachedGuestTable(ListTable):
    """The guest interfaces on a network (rows are GuestInterface, with their guest)."""

    guest = tables.Column(order_by=("guest__name", "position"))
    state = tables.Column(accessor="guest__state", order_by=("guest__state", "guest__name", "position"))
    mac = tables.Column(verbose_name="MAC", order_by=("mac",))
    model = tables.Column(order_by=("model", "guest__name", "position"))
    target_dev = tables.Column(verbose_name="Device", order_by=("target_dev", "guest__name", "position"))
    portgroup = tables.Column(order_by=("portgroup", "guest__name", "position"))

    class Meta(ListTable.Meta):
        model = GuestInterface
        fields = ()
        empty_text = "No guest interfaces on this network."
        attrs = {"id": "attached-guests", "class": "list"}
        prefix = "guests-"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.guest_url = RowUrl("networks:guest_detail")

    def render_guest(self, record):
        return link(self.guest_url(record.guest_id), record.guest.name)

    def render_state(self, record):
        return badge(record.guest.state, record.guest.get_state_display())

    def render_mac(self, record):
        return format_html("<code>{}</code>", record.mac)


class DeviceTable(ListTable):
    host = tables.Column(order_by=("host__name", "capability", "name"))
    name = tables.Column(order_by=("name", "host__name"))
    capability = tables.Column(verbose_name="Kind", order_by=("capability", "host__name", "name"))
    pci_address = tables.Column(verbose_name="PCI address", order_by=("pci_address", "host__name"))
    driver = tables.Column(order_by=("driver", "host__name", "name"))
    product = tables.Column(empty_values=(), order_by=("vendor", "product", "host__name", "name"))
    iommu_group = tables.Column(verbose_name="IOMMU group", default="", order_by=("iommu_group", "host__name"))
    sriov = tables.Column(verbose_name="SR-IOV", empty_values=(), orderable=False)
    net = tables.Column(empty_values=(), orderable=False)

    page_counts = {
        "vf_count": lambda ids: grouped_counts(
            NodeDevice.objects.filter(physical_function_id__in=ids), "physical_function_id"
        )
    }

    class Meta(ListTable.Meta):
        model = NodeDevice
        fields = ()
        empty_text = "No devices."

    def render_host(self, record):
        return record.host.name

    def render_pci_address(self, record):
        return format_html("<code>{}</code>", record.pci_address)

    def render_product(self, record):
        return f"{record.vendor} {record.product}".strip()

    def render_sriov(self, record):
        if record.is_sriov_pf:
            plural = "" if record.vf_count == 1 else "s"
            limit = f" (max {record.vf_max})" if record.vf_max else ""
            return f"PF: {record.vf_count} VF{plural}{limit}"
        if record.physical_function_id:
            return format_html("VF of <code>{}</code>", record.physical_function.pci_address)
        return ""

    def render_net(self, record):
        return f"{record.net_interface} {record.net_mac}".strip()


class PortForwardTable(ListTable):
    forward = tables.Column(empty_values=(), order_by=("protocol", "host_port_start", "pk"))
    host = tables.Column(order_by=("host__name", "protocol", "host_port_start"))
    host_address = tables.Column(default="every address", orderable=False)
    guest = tables.Column(empty_values=(), order_by=("guest_name", "pk"))
    guest_address = tables.Column(default="—", orderable=False)
    sources = tables.Column(accessor="source_cidrs", empty_values=(), orderable=False)
    state = tables.Column(empty_values=(), orderable=False)
    comment = tables.Column(orderable=False)

    class Meta(ListTable.Meta):
        model = PortForward
        fields = ()
        empty_text = "No port forwards."
        attrs = {"class": "list port-forwards"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.forward_url = RowUrl("networks:port_forward_detail")
        self.guest_url, self.host_url = RowUrl("networks:guest_detail"), RowUrl("networks:host_detail")

    def render_forward(self, record):
        return link(self.forward_url(record.pk), f"{record.protocol}/{record.host_ports} → {record.guest_ports}")

    def render_host(self, record):
        return link(self.host_url(record.host_id), record.host.name)

    def render_guest(self, record):
        name = link(self.guest_url(record.guest_id), record.guest_name) if record.guest_id else record.guest_name
        return format_html("{} <code>{}</code>", name, record.guest_mac)

    def render_sources(self, record):
        return ", ".join(record.source_cidrs) or "any"

    def render_state(self, record):
        html = render_to_string("networks/partials/forward_state.html", forward_state(record))
        if record.checked_at:
            html += format_html(' <span class="muted">{}</span>', f"{localtime(record.checked_at):%Y-%m-%d %H:%M}")
        return mark_safe(html)  # a template's output (escaped there) and format_html's


class ReservationTable(ListTable):
    """A network's DHCP reservations; the edit/delete links share one reversed URL."""

    mac = tables.Column(verbose_name="MAC / id", empty_values=(), order_by=("mac", "host_id"))
    address = tables.Column(verbose_name="IP", order_by=("ip__position", "address"))
    name = tables.Column(order_by=("name", "address"))
    subnet = tables.Column(accessor="ip", empty_values=(), orderable=False)
    actions = tables.Column(verbose_name="", empty_values=(), orderable=False)

    class Meta(ListTable.Meta):
        fields = ()
        empty_text = "No reservations."
        attrs = {"id": "reservations", "class": "list"}
        prefix = "res-"

    def __init__(self, *args, edit_url: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.edit_url = edit_url  # empty when the user may not edit

    def render_mac(self, record):
        return format_html("<code>{}</code>", record.mac or record.host_id)

    def render_subnet(self, record):
        return str(record.ip) if record.ip_id else ""

    def render_actions(self, record):
        if not self.edit_url:
            return ""
        key = record.mac or record.host_id or record.name
        return format_html(
            '<a href="{0}?command=modify&amp;key={1}">edit</a> <a href="{0}?command=delete&amp;key={1}">delete</a>',
            self.edit_url,
            quote(key, safe=""),
        )


class OperationTable(ListTable):
    """Shown newest first with keyset pagination (no sorting: the order is the cursor's)."""

    id = tables.Column(verbose_name="#", orderable=False)
    kind = tables.Column(orderable=False)
    target_name = tables.Column(verbose_name="Target", orderable=False)
    host_name = tables.Column(verbose_name="Host", orderable=False)
    status = tables.Column(orderable=False)
    by = tables.Column(empty_values=(), orderable=False)
    created_at = tables.Column(verbose_name="Created", orderable=False)
    took = tables.Column(empty_values=(), orderable=False)

    class Meta(ListTable.Meta):
        fields = ()
        empty_text = "No operations."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.operation_url = RowUrl("networks:operation_detail")

    def render_id(self, record):
        return link(self.operation_url(record.pk), record.pk)

    def render_kind(self, record):
        return record.get_kind_display()

    def render_status(self, record):
        return badge(record.status, record.get_status_display())

    def render_by(self, record):
        return record.requested_by_name or record.get_source_display()

    def render_created_at(self, record):
        return _when(record.created_at)

    def render_took(self, record):
        seconds = record.duration_seconds
        return "" if seconds is None else f"{seconds:.2f} s"


class AuditTable(ListTable):
    """Newest first with keyset pagination."""

    created_at = tables.Column(verbose_name="When", orderable=False)
    actor_name = tables.Column(verbose_name="Who", default="—", orderable=False)
    source = tables.Column(orderable=False)
    action = tables.Column(orderable=False)
    object = tables.Column(empty_values=(), orderable=False)
    host_name = tables.Column(verbose_name="Host", orderable=False)
    message = tables.Column(orderable=False)
    operation = tables.Column(accessor="operation_id", empty_values=(), orderable=False)

    class Meta(ListTable.Meta):
        fields = ()
        empty_text = "No events."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.event_url, self.operation_url = RowUrl("networks:audit_detail"), RowUrl("networks:operation_detail")

    def render_created_at(self, record):
        return link(self.event_url(record.pk), _when(record.created_at))

    def render_source(self, record):
        return record.get_source_display()

    def render_action(self, record):
        return format_html("<code>{}</code>", record.action)

    def render_object(self, record):
        return f"{record.object_type} {record.object_name}".strip()

    def render_operation(self, record):
        return link(self.operation_url(record.operation_id), f"#{record.operation_id}") if record.operation_id else ""
