"""A person's path through the dashboard, in Debian's chromium driven by Playwright."""

import pytest

from networks.choices import AuditSource
from networks.services import hosts as host_services
from tests.factories import UserFactory

pytestmark = pytest.mark.browser


def test_an_admin_logs_in_syncs_the_demo_host_and_sees_its_networks(
    page, live_server, celery_worker_process, demo_uri, tmp_path
):
    UserFactory(username="admin", password="correct-horse")
    host = host_services.host_create(name="demo", uri=demo_uri, actor=None, source=AuditSource.SYSTEM, sync=False)

    page.goto(f"{live_server.url}/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "correct-horse")
    page.click("button[type=submit]")
    page.click("text=demo")
    assert page.url.endswith(f"/hosts/{host.pk}/")
    assert "No networks." in page.inner_text("#host-networks")

    page.click("text=Sync now")
    page.wait_for_selector("[data-status=running], [data-status=queued], [data-status=succeeded]")
    # The progress card polls until the operation ends, then the page reloads with the mirror.
    page.wait_for_selector("#host-networks >> text=lan-bridge", timeout=30_000)
    networks = page.inner_text("#host-networks")
    for name in ["default", "isolated", "routed", "dualstack", "sriov-pool"]:
        assert name in networks
    page.screenshot(path=str(tmp_path / "host.png"), full_page=True)

    page.click("#host-networks >> text=default")
    assert "192.168.122.1/24" in page.content()
