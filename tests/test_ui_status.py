"""A public status page in headless Chromium: no login, live over its feed, and whole
without JavaScript."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import ServerProcess, wait_until
from tests.test_ui import (  # noqa: F401 - browser_type_launch_args and ui are fixtures
    Site,
    Watch,
    _hash,
    browser_type_launch_args,
    expect,
    playwright_api,
    ui,
)

pytestmark = pytest.mark.integration
Page = playwright_api.Page


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    server = ServerProcess(
        tmp_path_factory.mktemp("ui-status"), grace=0.5,
        users={"alice": {"admin": True, "password": _hash("alice")}},
        hosts={"mail1": {}},
        status_pages={"public": {"title": "Example status", "hosts": ["web*", "mail1"]},
                      # One test's own: the hosts the others add (web*) are not on it.
                      "lively": {"title": "Lively status", "hosts": ["live*", "mail1"]}},
    ).start()
    yield Site(server)
    server.stop()


def _rows(page: Page) -> list[tuple[str, str]]:
    return [(tr.get_attribute("data-host"), tr.get_attribute("data-state"))
            for tr in page.locator("#status-hosts tbody tr").all()]


def test_page_updates_live_without_login(ui: tuple[Page, Watch],  # noqa: F811
                                         site: Site) -> None:
    """Anyone opens it; a host appears, goes down and comes back on the page as it happens.

    On a page of its own: xdist may run the module's other tests first on this worker's
    server, and the hosts they add (web*) would be on the shared page."""
    page, _ = ui
    site.send({"ID": "HTB", "name": "live1", "interval": 30})
    wait_until(lambda: site.request("/api/0/hosts/live1")[0] == 200)
    page.goto(site.base + "/status/lively")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    assert _rows(page) == [("mail1", "UNKNOWN"), ("live1", "UP")]
    expect(page.locator("#overall")).to_have_attribute("data-overall", "degraded")
    site.send({"ID": "HTB", "name": "live2", "interval": 1})
    expect(page.locator("tr[data-host=live2]")).to_have_attribute("data-state", "UP")
    expect(page.locator("tr[data-host=live2]")).to_have_attribute("data-state", "DOWN")
    assert _rows(page)[0] == ("live2", "DOWN")  # the worst first
    expect(page.locator("#counts")).to_have_text("1 up, 1 down, 1 unknown of 3")
    site.send({"ID": "HTB", "name": "mail1", "interval": 30})
    site.send({"ID": "HTB", "name": "live2", "interval": 30})
    expect(page.locator("#overall")).to_have_attribute("data-overall", "operational")
    expect(page.locator("#overall-text")).to_have_text("All systems operational")
    badge = page.locator("#status-badge")
    assert badge.evaluate("img => img.complete && img.naturalWidth") > 50


def test_page_is_whole_without_javascript(browser: Any, site: Site) -> None:
    """With scripts off the server-rendered page has every host, its state and the counts."""
    # web1 too: xdist may run this test on a worker that did not run the one before.
    for name in ("web1", "web3"):
        site.send({"ID": "HTB", "name": name, "interval": 30})
    wait_until(lambda: all(site.request(f"/api/0/hosts/{name}")[0] == 200
                           for name in ("web1", "web3")))
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(site.base + "/status/public")
        states = dict(_rows(page))
        assert (states["web3"], set(states) >= {"mail1", "web1", "web3"}) == ("UP", True)
        expect(page.locator("#live-state")).to_have_text("· reloads every minute")
        expect(page.locator("h1")).to_have_text("Example status")
        assert page.locator("meta[http-equiv=refresh]").count() == 1
    finally:
        context.close()


def test_phone_width(browser: Any, site: Site) -> None:
    """At 390 px the table stacks into labelled cells, no sideways scrolling."""
    context = browser.new_context(viewport={"width": 390, "height": 800})
    try:
        page = context.new_page()
        page.goto(site.base + "/status/public")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        context.close()


def test_a_window_opened_through_the_api_shows_live_and_without_javascript(
        ui: tuple[Page, Watch], browser: Any, site: Site) -> None:  # noqa: F811
    """An admin opens a window over web5 (DOWN) through the API: the open page marks it
    in maintenance over its feed, the page counts it so and not as down, the page
    rendered without scripts says the same, and nothing of the window shows; deleting
    the window takes the marker away, live."""
    page, _ = ui
    site.send({"ID": "HTB", "name": "web5", "interval": 1})
    wait_until(lambda: site.request("/api/0/hosts/web5")[0] == 200)
    page.goto(site.base + "/status/public")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    row = page.locator("tr[data-host=web5]")
    expect(row).to_have_attribute("data-state", "DOWN")
    auth = {"Authorization": f"Bearer {site.token('alice')}"}
    status, window = site.server.request("POST", "/api/0/maintenance", {
        "hosts": ["web5"], "start": time.time() - 60, "duration": "1h",
        "comment": "secret-kernel-upgrade"}, headers=auth)
    assert status == 201, window
    try:
        expect(row).to_have_attribute("data-maintenance", "true")
        expect(row.locator(".marker-maintenance")).to_have_text("maintenance")
        expect(row).to_have_attribute("data-state", "DOWN")
        expect(page.locator("#counts")).to_contain_text("1 in maintenance")
        assert "secret-kernel-upgrade" not in page.content()
        context = browser.new_context(java_script_enabled=False)
        try:
            plain = context.new_page()
            plain.goto(site.base + "/status/public")
            still = plain.locator("tr[data-host=web5]")
            expect(still).to_have_attribute("data-maintenance", "true")
            expect(still.locator("td[data-label=State]")).to_have_text("DOWN maintenance")
            expect(plain.locator("#counts")).to_contain_text("0 down")
            assert "secret-kernel-upgrade" not in plain.content()
        finally:
            context.close()
    finally:
        status, _ = site.server.request("DELETE", f"/api/0/maintenance/{window['id']}",
                                        headers=auth)
    assert status == 200
    expect(row).not_to_have_attribute("data-maintenance", "true")
    expect(row.locator(".marker-maintenance")).to_have_count(0)
