"""The audit log and operations of the API page by cursor, newest first: no count over the
table and no offset, however deep the page."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from networks.models import AuditEvent, Host, Operation


@pytest.fixture
def events(db):
    now = timezone.now()
    # Three events per second: pages must still be exact where created_at ties
    return AuditEvent.objects.bulk_create(
        [AuditEvent(action="test.event", source="system", object_type="x", object_name=f"e{i:02d}",
                    created_at=now - timedelta(seconds=30 - i // 3)) for i in range(30)]
    )  # fmt: skip


def _walk(api, url):
    names, pages = [], 0
    while url:
        body = api.get(url).json()
        assert "count" not in body
        names += [row["object_name"] for row in body["results"]]
        url, pages = body["next"], pages + 1
    return names, pages


def test_the_audit_log_walks_newest_first_a_page_at_a_time(api, events):
    names, pages = _walk(api, "/api/audit/?action=test.&limit=7")
    assert names == [f"e{i:02d}" for i in range(29, -1, -1)] and pages == 5


def test_a_previous_link_comes_back_to_the_same_page(api, events):
    first = api.get("/api/audit/", {"action": "test.", "limit": 10}).json()
    assert first["previous"] is None
    second = api.get(first["next"]).json()
    back = api.get(second["previous"]).json()
    assert [r["object_name"] for r in back["results"]] == [r["object_name"] for r in first["results"]]


def test_operations_page_by_cursor_and_keep_their_filters(api, db):
    host = Host.objects.create(name="kvm1", uri="test:///default")
    Operation.objects.bulk_create(
        [Operation(kind="host.sync", host=host, host_name="kvm1", lock_key="x", status=s)
         for s in ["failed"] * 12 + ["succeeded"] * 3]
    )  # fmt: skip
    first = api.get("/api/operations/", {"status": "failed", "limit": 10}).json()
    rest = api.get(first["next"]).json()
    assert len(first["results"]) == 10 and len(rest["results"]) == 2 and rest["next"] is None
    assert {row["status"] for row in first["results"] + rest["results"]} == {"failed"}


@pytest.mark.parametrize("collection", ["audit", "operations"])
def test_a_deep_page_counts_nothing_and_skips_nothing(api, events, collection):
    url = "/api/audit/?limit=5" if collection == "audit" else "/api/operations/?limit=5"
    body = api.get(url).json()
    with CaptureQueriesContext(connection) as queries:
        assert api.get(body["next"] or url).status_code == 200
    sql = " ".join(q["sql"] for q in queries).upper()
    # At most the few rows sharing the cursor's timestamp are skipped, never the rows before it
    assert "COUNT(" not in sql and all(int(n) <= 5 for n in re.findall(r" OFFSET (\d+)", sql))


@pytest.mark.parametrize("cursor", ["abc", "%00", "cD0x", "x" * 3000, "cj0xJnA9MjAyNi0xMy0wMQ=="])
@pytest.mark.parametrize("collection", ["audit", "operations"])
def test_a_cursor_that_cannot_be_read_is_a_400(api, db, collection, cursor):
    response = api.get(f"/api/{collection}/?cursor={cursor}")
    assert response.status_code == 400


def test_a_huge_limit_is_capped(api, events):
    assert len(api.get("/api/audit/?action=test.&limit=99999999999999999999").json()["results"]) == 30
