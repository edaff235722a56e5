"""Port forwards as an operator uses them in chromium: the host page, the form, the warning with its
link to reserve the guest's address, the delete confirm; and no page breaks the CSP."""

import os

import pytest
from django.utils import timezone

from networks.models import Host, PortForward
from tests.factories import UserFactory

from .conftest import log_in
from .test_csp import RECORD_VIOLATIONS

pytestmark = pytest.mark.browser
SHOTS = os.environ.get("KVMWEB_SCREENSHOTS", "")  # a directory: save what the person saw


def _shot(page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def test_an_operator_forwards_a_port_and_deletes_it_again(page, live_server, redis_socket, demo_host):
    violations = []
    page.add_init_script(RECORD_VIOLATIONS)
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    Host.objects.filter(pk=demo_host.pk).update(queue="demo-host", worker_seen_at=timezone.now())
    UserFactory(username="op", password="correct-horse", role="operator")
    log_in(page, live_server, "op", "correct-horse")

    page.goto(f"{live_server.url}{demo_host.get_absolute_url()}")
    page.click("text=Add port forward…")
    page.select_option("#id_guest", label="build01")  # no reservation on routed
    page.fill("#id_host_ports", "2222")
    page.fill("#id_guest_ports", "22")
    page.fill("#id_source_cidrs", "203.0.113.0/24")
    _shot(page, "port-forward-form")
    page.click("text=Create and apply")

    page.wait_for_selector("text=its address may change: reserve it")
    forward = PortForward.objects.get()
    assert page.url.endswith(forward.get_absolute_url())
    assert page.is_visible("a:has-text('Reserve an address for build01')")
    _shot(page, "port-forward-detail")

    page.goto(f"{live_server.url}{demo_host.get_absolute_url()}")
    assert page.is_visible("#port-forwards")
    assert "tcp/2222 → 22" in page.inner_text("table.port-forwards")
    _shot(page, "host-page-forwards")

    page.goto(f"{live_server.url}{forward.get_absolute_url()}")
    page.click("text=Delete…")
    page.click("text=Delete the forward")
    page.wait_for_selector("text=removes its rules")
    assert not PortForward.objects.exists()
    assert page.evaluate("window.__csp || []") == [] and violations == []
