"""`GET /metrics`: what a Prometheus server scraping kvmweb with an API token reads."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from networks.models import Host, Operation, UserRole
from tests.factories import HostFactory, UserFactory

pytestmark = pytest.mark.django_db


def _client_for(user, capsys) -> APIClient:
    call_command("apitoken", user.username)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {capsys.readouterr().out.strip()}")
    return client


def _samples(response) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from the exposition text."""
    found = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _operation(host, kind, status, seconds=None):
    started = timezone.now() - timedelta(minutes=5)
    return Operation.objects.create(
        kind=kind,
        status=status,
        host=host,
        host_name=host.name,
        lock_key=f"host:{host.pk}",
        started_at=started if seconds is not None else None,
        finished_at=started + timedelta(seconds=seconds) if seconds is not None else None,
    )


def test_a_scrape_without_a_token_is_refused():
    response = APIClient().get("/metrics")
    assert response.status_code in (401, 403)
    assert b"kvmweb_" not in response.content


def test_operations_by_kind_and_status_and_their_durations(demo_host, admin, capsys):
    _operation(demo_host, "network.restart", "succeeded", seconds=2)
    _operation(demo_host, "network.restart", "failed", seconds=4)
    _operation(demo_host, "network.restart", "queued")
    response = _client_for(admin, capsys).get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = _samples(response)
    assert samples[("kvmweb_operations", (("kind", "network.restart"), ("status", "succeeded")))] == 1
    assert samples[("kvmweb_operations", (("kind", "network.restart"), ("status", "queued")))] == 1
    # the demo host's first sync ran in-process: one succeeded host.sync
    assert samples[("kvmweb_operations", (("kind", "host.sync"), ("status", "succeeded")))] == 1
    # a queued operation has no duration: two finished restarts, 2 s and 4 s
    assert samples[("kvmweb_operation_duration_seconds_count", (("kind", "network.restart"),))] == 2
    assert samples[("kvmweb_operation_duration_seconds_sum", (("kind", "network.restart"),))] == pytest.approx(6)


def test_host_reachability_sync_age_and_dhcp_pools(demo_host, admin, capsys):
    HostFactory(name="never-synced")
    Host.objects.filter(pk=demo_host.pk).update(last_sync_at=timezone.now() - timedelta(seconds=90))
    samples = _samples(_client_for(admin, capsys).get("/metrics"))
    assert samples[("kvmweb_host_up", (("host", "demo"),))] == 1
    assert samples[("kvmweb_host_up", (("host", "never-synced"),))] == 0
    assert 90 <= samples[("kvmweb_host_sync_age_seconds", (("host", "demo"),))] < 150
    assert ("kvmweb_host_sync_age_seconds", (("host", "never-synced"),)) not in samples
    # demo/fleet.xml: default's range is 192.168.122.2-254; dualstack has 10.30.0.100-199 and fd00:30::100-1ff
    assert samples[("kvmweb_dhcp_pool_size", (("host", "demo"), ("network", "default")))] == 253
    assert samples[("kvmweb_dhcp_pool_size", (("host", "demo"), ("network", "dualstack")))] == 100 + 256


def test_a_user_scoped_to_some_hosts_sees_only_those(demo_host, capsys):
    HostFactory(name="elsewhere")
    scoped = UserFactory(username="scoped", role="viewer")
    grant = UserRole.objects.get(user=scoped)
    grant.all_hosts = False
    grant.save()
    grant.hosts.set([Host.objects.get(name="elsewhere")])
    text = _client_for(scoped, capsys).get("/metrics").content.decode()
    assert 'host="elsewhere"' in text
    assert 'host="demo"' not in text


def test_event_watcher_age_and_lag(demo_host, admin, capsys):
    HostFactory(name="unwatched")
    Host.objects.filter(pk=demo_host.pk).update(
        watched_at=timezone.now() - timedelta(seconds=20), event_lag_seconds=0.25
    )
    samples = _samples(_client_for(admin, capsys).get("/metrics"))
    assert 20 <= samples[("kvmweb_host_watcher_age_seconds", (("host", "demo"),))] < 80
    assert samples[("kvmweb_host_event_lag_seconds", (("host", "demo"),))] == 0.25
    assert ("kvmweb_host_watcher_age_seconds", (("host", "unwatched"),)) not in samples
    assert ("kvmweb_host_event_lag_seconds", (("host", "unwatched"),)) not in samples
