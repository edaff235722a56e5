"""The fleet-wide searches in SQL (Addresses, the global search) and DHCP pool sizes in SQL.

1. Each subnet (`NetworkIp`) keeps its first and last address as 32 hex digits
   (`subnet_start`, `subnet_end`), indexed with its family: "which subnets contain this
   address" becomes an index range on SQLite and PostgreSQL alike.
2. Each DHCP range keeps its `size`, so a network's pool size is a SUM.
3. Indexes for exact MACs, addresses (and IPv6 ids) of reservations and leases, DNS values,
   guest and network UUIDs, network bridges, and case-insensitive name prefixes (indexes on
   LOWER(name)).
4. The rows already there get their bounds and sizes (the computation is frozen here).
"""

import ipaddress

import django.db.models.functions.text
from django.db import migrations, models


def _key(address) -> str:
    return f"{int(address):032x}"


def fill(apps, schema_editor):
    NetworkIp = apps.get_model("networks", "NetworkIp")
    DhcpRange = apps.get_model("networks", "DhcpRange")
    for ip in NetworkIp.objects.all().iterator(chunk_size=2000):
        try:
            subnet = ipaddress.ip_interface(f"{ip.address}/{ip.prefix}").network
        except ValueError:
            continue
        NetworkIp.objects.filter(pk=ip.pk).update(
            subnet_start=_key(subnet.network_address), subnet_end=_key(subnet.broadcast_address)
        )
    for row in DhcpRange.objects.all().iterator(chunk_size=2000):
        try:
            first, last = ipaddress.ip_address(row.start), ipaddress.ip_address(row.end)
        except ValueError:
            size = 0
        else:
            size = 0 if first.version != last.version or last < first else int(last) - int(first) + 1
        DhcpRange.objects.filter(pk=row.pk).update(size=min(size, 2**63 - 1))


class Migration(migrations.Migration):
    dependencies = [("networks", "0013_list_pages")]

    operations = [
        migrations.AddField(
            model_name="dhcprange",
            name="size",
            field=models.PositiveBigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="networkip",
            name="subnet_end",
            field=models.CharField(blank=True, editable=False, max_length=32),
        ),
        migrations.AddField(
            model_name="networkip",
            name="subnet_start",
            field=models.CharField(blank=True, editable=False, max_length=32),
        ),
        migrations.AddIndex(
            model_name="dhcplease",
            index=models.Index(fields=["mac"], name="lease_mac"),
        ),
        migrations.AddIndex(
            model_name="dhcplease",
            index=models.Index(fields=["address"], name="lease_address"),
        ),
        migrations.AddIndex(
            model_name="dhcplease",
            index=models.Index(django.db.models.functions.text.Lower("hostname"), name="lease_hostname_lower"),
        ),
        migrations.AddIndex(
            model_name="dhcpreservation",
            index=models.Index(fields=["mac"], name="reservation_mac"),
        ),
        migrations.AddIndex(
            model_name="dhcpreservation",
            index=models.Index(fields=["address"], name="reservation_address"),
        ),
        migrations.AddIndex(
            model_name="dhcpreservation",
            index=models.Index(fields=["host_id"], name="reservation_host_id"),
        ),
        migrations.AddIndex(
            model_name="dhcpreservation",
            index=models.Index(django.db.models.functions.text.Lower("name"), name="reservation_name_lower"),
        ),
        migrations.AddIndex(
            model_name="dnsrecord",
            index=models.Index(django.db.models.functions.text.Lower("name"), name="dns_record_name_lower"),
        ),
        migrations.AddIndex(
            model_name="dnsrecord",
            index=models.Index(fields=["value"], name="dns_record_value"),
        ),
        migrations.AddIndex(
            model_name="guest",
            index=models.Index(django.db.models.functions.text.Lower("name"), name="guest_name_lower"),
        ),
        migrations.AddIndex(
            model_name="guest",
            index=models.Index(fields=["uuid"], name="guest_uuid"),
        ),
        migrations.AddIndex(
            model_name="network",
            index=models.Index(django.db.models.functions.text.Lower("name"), name="network_name_lower"),
        ),
        migrations.AddIndex(
            model_name="network",
            index=models.Index(fields=["uuid"], name="network_uuid"),
        ),
        migrations.AddIndex(
            model_name="network",
            index=models.Index(fields=["bridge"], name="network_bridge"),
        ),
        migrations.AddIndex(
            model_name="networkip",
            index=models.Index(fields=["family", "subnet_start", "subnet_end"], name="ip_subnet_bounds"),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
