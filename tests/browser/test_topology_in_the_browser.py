"""The topology pictures in Debian's chromium: reached from the host page and the nav, every box
leads to a page that opens, a click lands where the box says, and the CSP lets them draw.

With KVMWEB_SCREENSHOTS=1 it also writes the README's screenshots (docs/img/topology-*.png)
from the demo fleet; other runs leave those files alone."""

import os
import time
from pathlib import Path

import pytest

from networks.choices import ACTIVE_STATUSES, AuditSource, HostStatus
from networks.models import Guest, Host, Network, Operation
from networks.services import hosts as host_services
from tests.factories import UserFactory

from .conftest import log_in
from .test_csp import RECORD_VIOLATIONS

pytestmark = pytest.mark.browser

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "img"


def synced(names_and_uris: list[tuple[str, str]]) -> list[Host]:
    """Hosts registered as `make run` does: their first syncs run on the Celery worker."""
    hosts = [
        host_services.host_create(name=name, uri=uri, actor=None, source=AuditSource.SYSTEM)
        for name, uri in names_and_uris
    ]
    deadline = time.monotonic() + 60
    while Operation.objects.filter(host__in=hosts, status__in=ACTIVE_STATUSES).exists():
        assert time.monotonic() < deadline, "the first syncs did not end within a minute"
        time.sleep(0.2)
    return [Host.objects.get(pk=host.pk) for host in hosts]


def box_links(page, frame: str) -> list[str]:
    return page.eval_on_selector_all(f"{frame} svg a", "links => links.map(a => a.getAttribute('href'))")


def test_both_pictures_open_their_links_lead_to_pages_and_the_policy_holds(
    page, live_server, celery_worker_process, demo_uri, tmp_path
):
    UserFactory(username="admin", password="correct-horse")
    # the demo fleet twice (a second host for the fleet picture), and a host whose sync fails
    demo, _, lost = synced([("demo", demo_uri), ("demo-b", demo_uri), ("lost", f"test://{tmp_path}/gone.xml")])
    assert demo.status == HostStatus.REACHABLE and lost.status == HostStatus.UNREACHABLE
    Network.objects.filter(host__name="demo-b", name="isolated").update(drifted=True)
    violations = []
    page.add_init_script(RECORD_VIOLATIONS)
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.set_viewport_size({"width": 1320, "height": 1000})
    log_in(page, live_server, "admin", "correct-horse")

    page.goto(f"{live_server.url}{demo.get_absolute_url()}")
    page.click("#topology-link")
    page.wait_for_url(f"**/hosts/{demo.pk}/topology/")
    assert page.locator("#host-topology svg").bounding_box()["width"] > 800  # drawn, and styled by its CSS
    links = box_links(page, "#host-topology")
    for network in Network.objects.filter(host=demo):
        assert network.get_absolute_url() in links, network.name
    for guest in Guest.objects.filter(host=demo):
        assert guest.get_absolute_url() in links, guest.name
    for href in sorted(set(links)):
        assert page.request.get(f"{live_server.url}{href}").status == 200, href
    if os.environ.get("KVMWEB_SCREENSHOTS") == "1":
        page.locator("main").screenshot(path=str(IMAGES / "topology-host.png"))

    web01 = Guest.objects.get(host=demo, name="web01")
    page.click(f'#host-topology svg a[data-key="guest:{web01.pk}"]')
    page.wait_for_url(f"**{web01.get_absolute_url()}")
    assert "52:54:00:0a:00:11" in page.content()

    page.click("header.top >> text=Topology")
    page.wait_for_url("**/topology/")
    fleet = page.locator("#fleet-topology svg")
    texts = fleet.inner_html()
    assert "Unreachable (1)" in texts and "Reachable, with drifted networks (1)" in texts and "Reachable (1)" in texts
    for href in sorted(set(box_links(page, "#fleet-topology"))):
        assert page.request.get(f"{live_server.url}{href}").status == 200, href
    if os.environ.get("KVMWEB_SCREENSHOTS") == "1":
        page.locator("main").screenshot(path=str(IMAGES / "topology-fleet.png"))
    page.click(f'#fleet-topology svg a[data-key="host:{demo.pk}"]')
    page.wait_for_url(f"**/hosts/{demo.pk}/topology/")

    violations.extend(page.evaluate("window.__csp || []"))
    assert violations == []
