"""The Content-Security-Policy as chromium enforces it: no page breaks it, and htmx polling still works."""

import pytest

from networks.choices import AuditSource
from networks.forms import SECTION_FIELDS
from networks.models import AuditEvent, Network, Operation
from networks.services import hosts as host_services
from tests.factories import UserFactory

from .conftest import log_in, sync_from_host_page

pytestmark = pytest.mark.browser

# Runs before any page script, outside the page's CSP (Playwright injects it itself).
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


@pytest.fixture
def watched(page):
    """The page, and every CSP violation it reports (events and console errors)."""
    violations = []
    page.add_init_script(RECORD_VIOLATIONS)
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)

    def collect(url):
        violations.extend(page.evaluate("window.__csp || []"))
        return [f"{url}: {v}" for v in violations]

    return page, collect


def test_no_page_breaks_the_policy_and_polling_still_works(watched, live_server, celery_worker_process, demo_uri):
    page, collect = watched
    UserFactory(username="admin", password="correct-horse")
    host = host_services.host_create(name="demo", uri=demo_uri, actor=None, source=AuditSource.SYSTEM, sync=False)

    log_in(page, live_server, "admin", "correct-horse")
    sync_from_host_page(page, live_server, host)  # htmx polls the progress card every second meanwhile
    assert collect("host page while polling") == []

    network = Network.objects.get(host=host, name="default")
    operation = Operation.objects.filter(host=host).first()
    paths = [
        "/", "/hosts/", f"/hosts/{host.pk}/", "/networks/", f"/networks/{network.pk}/",
        f"/networks/{network.pk}/xml/", f"/networks/{network.pk}/rename/",
        f"/networks/{network.pk}/reservations/import/", f"/hosts/{host.pk}/networks/create/",
        "/guests/", "/devices/", "/addresses/?q=52:54:00", "/operations/", f"/operations/{operation.pk}/",
        "/audit/", f"/audit/{AuditEvent.objects.first().pk}/", "/users/", "/account/tokens/",
        *(f"/networks/{network.pk}/edit/{section}/" for section in SECTION_FIELDS),
    ]  # fmt: skip
    for path in paths:
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        page.wait_for_load_state("load")
        assert collect(path) == []

    page.goto(f"{live_server.url}/account/tokens/")
    page.fill("#id_name", "browser")
    page.click("text=Create token")
    assert len(page.inner_text("#token-key")) == 43
    assert collect("token created") == []


def test_the_policy_would_be_caught(watched, live_server, db):
    """The listener sees a violation: an inline script on a page served with the policy."""
    page, collect = watched
    UserFactory(username="admin", password="correct-horse")
    page.goto(f"{live_server.url}/accounts/login/")
    page.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.ran = 1';
                             document.body.appendChild(s); }""")
    page.wait_for_timeout(200)
    assert page.evaluate("window.ran") is None
    assert any("script-src" in v for v in collect("login"))
