"""The network list as a new user first meets it, in Debian's chromium driven by Playwright."""

import pytest

from networks.models import Host, Network
from tests.factories import UserFactory

from .conftest import log_in

pytestmark = pytest.mark.browser


def test_a_new_user_sees_every_network_and_the_mode_filter_reads_any(page, live_server):
    UserFactory(username="newcomer", password="first-day-password", role="viewer")
    host = Host.objects.create(name="kvm1", uri="test:///default", status="reachable")
    Network.objects.bulk_create(
        [Network(host=host, name="backend", forward_mode=""), Network(host=host, name="frontend", forward_mode="nat")]
    )
    log_in(page, live_server, "newcomer", "first-day-password")
    page.goto(f"{live_server.url}/networks/")

    mode = page.locator("select[name=mode]")
    assert mode.evaluate("select => select.options[select.selectedIndex].text") == "Any mode"
    assert mode.input_value() == ""
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 2 and "backend" in rows.all_inner_texts()[0] and "frontend" in rows.all_inner_texts()[1]

    mode.select_option(label="Isolated")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**mode=isolated**")
    (only,) = page.locator("table.list tbody tr").all_inner_texts()
    assert "backend" in only
    assert page.locator("select[name=mode]").input_value() == "isolated"

    page.goto(f"{live_server.url}/networks/")
    page.click("table.list th >> text=Name")  # sort by name, then the other way
    page.wait_for_url("**sort=name")
    page.click("table.list th >> text=Name")
    page.wait_for_url("**sort=-name")
    names = [text.split()[0] for text in page.locator("table.list tbody tr").all_inner_texts()]
    assert names == ["frontend", "backend"]
