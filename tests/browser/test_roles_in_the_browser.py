"""Roles as a person meets them: what a viewer is shown, and an operator's change watched to its end.

A DNS TXT value is free text, so it carries markup an attacker would try; it must render as
text on every page that shows it, and no script may run.
"""

import time

import pytest

from networks.choices import AuditSource
from networks.models import AuditEvent, Network, Operation
from networks.services import hosts as host_services
from tests.factories import UserFactory

from .conftest import log_in, sync_from_host_page

pytestmark = pytest.mark.browser

MARKUP = "<img src=x onerror=alert(1)>"


def _wait_until_ended(kind: str, timeout: float = 60) -> Operation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        operation = Operation.objects.filter(kind=kind).first()
        if operation is not None and operation.is_terminal:
            return operation
        time.sleep(0.2)
    pytest.fail(f"the {kind} operation did not end: {list(Operation.objects.values_list('kind', 'status'))}")


def test_a_viewer_is_shown_no_change_buttons(page, live_server, celery_worker_process, demo_uri):
    UserFactory(username="operator", password="op-password", role="operator")
    UserFactory(username="viewer", password="view-password", role="viewer")
    host = host_services.host_create(name="demo", uri=demo_uri, actor=None, source=AuditSource.SYSTEM, sync=False)
    log_in(page, live_server, "operator", "op-password")
    sync_from_host_page(page, live_server, host)
    page.click("text=Log out")

    log_in(page, live_server, "viewer", "view-password")
    page.goto(f"{live_server.url}{host.get_absolute_url()}")
    assert "Sync now" not in page.inner_text("main")
    page.click("#host-networks >> text=default")
    text = page.inner_text("main")
    assert "52:54:00:0a:00:11" in text, "a viewer reads the network"
    for button in ("Restart", "Stop", "Edit XML", "Rename", "Undefine", "Add reservation", "Import CSV", "Add TXT"):
        assert button not in text
    assert page.locator("form[method=post] button").count() == 1, "only the Log out button posts"


def test_an_operator_adds_a_record_watches_it_finish_and_markup_stays_text(
    page,
    live_server,
    celery_worker_process,
    demo_uri,
):
    UserFactory(username="operator", password="op-password", role="operator")
    host = host_services.host_create(name="demo", uri=demo_uri, actor=None, source=AuditSource.SYSTEM, sync=False)
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, live_server, "operator", "op-password")
    sync_from_host_page(page, live_server, host)

    page.click("#host-networks >> text=default")
    assert "Stop" not in page.inner_text(".actions"), "an operator may restart but not stop"
    page.click("text=Add TXT record")
    page.fill("#id_name", "note")
    page.fill("#id_value", MARKUP)
    page.click("text=Preview")
    page.wait_for_selector("#preview")
    page.click("#preview >> text=Apply")
    page.wait_for_selector("text=requested")  # the network page, with the operation under way or done
    # (the progress card's polling and reload are what test_dashboard and test_csp watch)
    operation = _wait_until_ended("network.update")
    assert operation.status == "succeeded", operation.error

    network = Network.objects.get(host=host, name="default")
    page.goto(f"{live_server.url}{network.get_absolute_url()}")
    assert MARKUP in page.inner_text("main"), "the value shows as the text it is"
    event = AuditEvent.objects.get(action="network.update.succeeded", operation=operation)
    for url in (operation.get_absolute_url(), event.get_absolute_url()):
        page.goto(f"{live_server.url}{url}")
        assert page.locator("img[src=x]").count() == 0
    assert "onerror=alert(1)" in page.inner_text("main"), "the audit diff shows the value as text"
    assert dialogs == []
