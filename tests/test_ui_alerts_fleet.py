"""/alerts and the navigation's count in headless Chromium with more problems than the page
shows: 620 hosts DOWN at once against the real twistd (the page keeps the worst 500)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests import test_ui
from tests.support import ServerProcess, wait_until
from tests.test_ui import Site, Watch

pytestmark = pytest.mark.integration
browser_type_launch_args = test_ui.browser_type_launch_args  # the fixtures test_ui's pages use
ui = test_ui.ui
expect = test_ui.expect
Page = test_ui.playwright_api.Page
FLEET = 620
SHOWN = 500  # alerts.js


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    server = ServerProcess(
        tmp_path_factory.mktemp("ui-fleet"), grace=0.5, monitor_interval=0.2,
        users={"alice": {"admin": True, "password": test_ui._hash("alice")}},
    ).start()
    site = Site(server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for n in range(FLEET):
            sock.sendto(json.dumps({"ID": "HTB", "name": f"fleet{n:04d}", "interval": 1}).encode(),
                        ("127.0.0.1", server.udp_port))
            if n % 100 == 99:
                wait_until(lambda n=n: site.api("/api/0/status")["hosts"]["total"] >= n)
    wait_until(lambda: site.api("/api/0/status")["hosts"]["DOWN"] == FLEET, timeout=30)
    yield site
    server.stop()


def test_alerts_shows_the_worst_500_and_counts_them_all(ui: tuple[Page, Watch],
                                                        site: Site) -> None:
    """With 620 hosts DOWN, /alerts lists the first 500 in the API's order, says how many
    there are, and counts all of them in its tiles and the navigation's pie (which asks
    only the counts); a filter is the server's, so a host's problems past the first 500
    are found by narrowing."""
    page, _ = ui
    site.log_in(page, "alice")
    page.goto(site.base + "/alerts")
    rows = page.locator("#alerts tbody tr")
    expect(rows).to_have_count(SHOWN)
    whole = site.api("/api/0/alerts")
    assert whole["total"] == FLEET
    names = [tr.get_attribute("data-host") for tr in rows.all()]
    assert names == [a["host"] for a in whole["alerts"][:SHOWN]]
    more = page.locator("#alerts-more")
    expect(more).to_be_visible()
    expect(more).to_contain_text(f"first {SHOWN} of {FLEET} problems")
    expect(page.locator(".tile[data-level=HOSTS] strong")).to_have_text(str(FLEET))
    expect(page.locator(".tile[data-level=CRITICAL] strong")).to_have_text(str(FLEET))
    expect(page.locator("#alert-pie")).to_have_attribute("data-total", str(FLEET))
    page.locator("#kind-filter input[value=host]").uncheck()
    expect(rows).to_have_count(0)
    expect(more).to_be_hidden()
    expect(page.locator("#no-alerts")).to_have_text("No problems of the chosen kinds.")


def test_the_pie_asks_only_the_counts(ui: tuple[Page, Watch],
                                      site: Site) -> None:
    """Every page's navigation count asks /api/0/alerts?limit=0: at fleet size the list is
    megabytes the count does not need."""
    page, _ = ui
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    site.log_in(page, "alice")
    page.goto(site.base + "/live")
    expect(page.locator("#alert-pie")).to_have_attribute("data-total", str(FLEET))
    alerts = [url for url in asked if "/api/0/alerts" in url]
    assert alerts and all(url.endswith("/api/0/alerts?limit=0") for url in alerts), alerts
