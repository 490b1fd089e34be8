"""/settings for one's own account in headless Chromium: API keys (and the second factor)."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Iterator

import pytest

from tests.support import ServerProcess
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
        tmp_path_factory.mktemp("ui-account"),
        users={"alice": {"admin": True, "password": _hash("alice")},
               "bob": {"password": _hash("bob")}, "dave": {"password": _hash("dave")},
               "erin": {"password": _hash("erin")}},
        hosts={"web1": {"monitors": ["bob", "dave"], "managers": ["erin"]}}).start()
    yield Site(server)
    server.stop()


def test_make_use_and_revoke_an_api_key(ui: tuple[Page, Watch], site: Site) -> None:  # noqa: F811
    """Bob makes a read-only key on /settings, sees its token once, the API takes it; he
    revokes it and the API refuses it."""
    page, _ = ui
    site.send({"ID": "HTB", "name": "web1"})
    site.log_in(page, "bob")
    page.goto(site.base + "/settings")
    expect(page.locator("#keys-note")).to_have_text("You have no API keys.")
    page.fill("#key-form input[name=name]", "grafana")
    page.select_option("#key-form select[name=scope]", "ro")
    expires = datetime.date.today() + datetime.timedelta(days=30)
    page.fill("#key-form input[name=expires]", expires.isoformat())
    page.click("#key-make")
    token = page.locator("#new-key-token")
    expect(token).to_have_text(re.compile(r"^hbk_ro_[0-9a-f]{8}_\S{43}$"))
    secret = token.inner_text()
    row = page.locator("#keys tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("grafana")
    expect(row.locator("td[data-label=Access]")).to_have_text("read-only")
    expect(row.locator("td[data-label='Last used']")).to_have_text("never")
    status, hosts = site.server.request("GET", "/api/0/hosts",
                                        headers={"Authorization": f"Bearer {secret}"})
    assert (status, [h["name"] for h in hosts["hosts"]]) == (200, ["web1"])
    page.click("#new-key-done")
    expect(page.locator("#new-key")).to_be_hidden()
    assert secret not in page.content()
    page.reload()
    expect(row.locator("td[data-label='Last used']")).to_contain_text("ago from 127.0.0.1")
    row.get_by_role("button", name="Revoke").click()
    row.get_by_role("button", name="Yes, revoke").click()
    expect(page.locator("#keys tbody tr")).to_have_count(0)
    assert site.server.request("GET", "/api/0/hosts",
                               headers={"Authorization": f"Bearer {secret}"})[0] == 401


def _code(secret: str, steps: int = 0) -> str:
    from heartbeat.server.totp import code_at, step_at

    return code_at(secret, step_at(time.time()) + steps)


def _enrol_in_page(page: Page) -> list[str]:
    """Set up the authenticator on /settings as a user would: scan (read the key), confirm
    with a code of the step before (the app's clock a little behind), keep the codes."""
    page.get_by_role("button", name="Set up an authenticator app").click()
    expect(page.locator("#totp-enrol")).to_be_visible()
    assert page.locator("#totp-qr").evaluate("img => img.complete && img.naturalWidth") > 100
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    from heartbeat.server.totp import PERIOD

    left = PERIOD - time.time() % PERIOD
    if left < 3:  # the server checks a moment later: a step turning meanwhile (a loaded
        page.wait_for_timeout((left + 0.1) * 1000)  # machine) would put -1 out of reach
    page.fill("#totp-enrol input[name=code]", _code(secret, -1))
    page.click("#totp-confirm")
    codes = page.locator("#totp-codes-list li")
    expect(codes).to_have_count(10)
    return [secret, *codes.all_inner_texts()]


def _log_in_with_form(page: Page, site: Site, name: str) -> None:
    page.goto("about:blank")  # the last page's scripts must not race the login
    page.context.clear_cookies()
    page.goto(site.base + "/login?next=%2Flive")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", f"{name}-password")
    page.click("button[type=submit]")


def test_enrol_a_second_factor_then_log_in_with_it(ui: tuple[Page, Watch],  # noqa: F811
                                                   site: Site) -> None:
    """Dave sets up TOTP on /settings (QR made by the server), then the login form asks for
    the code: a wrong one is refused, the right one and later a recovery code let him in."""
    page, _ = ui
    site.log_in(page, "dave")
    page.goto(site.base + "/settings")
    expect(page.locator("#totp-status")).to_contain_text("Off.")
    secret, *codes = _enrol_in_page(page)
    expect(page.locator("#totp-status")).to_contain_text("10 recovery codes left")
    page.get_by_role("button", name="I have kept them").click()
    expect(page.locator("#totp-codes")).to_be_hidden()
    _log_in_with_form(page, site, "dave")
    expect(page.locator("h1")).to_have_text("Log in: second factor")
    page.fill("#totp-code", "000000" if _code(secret) != "000000" else "111111")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("That code is wrong, used or expired.")
    page.fill("#totp-code", _code(secret))
    page.click("button[type=submit]")
    expect(page).to_have_url(site.base + "/live")
    _log_in_with_form(page, site, "dave")
    page.fill("#totp-code", codes[0])
    page.click("button[type=submit]")
    expect(page).to_have_url(site.base + "/live")
    page.goto(site.base + "/settings")
    expect(page.locator("#totp-status")).to_contain_text("9 recovery codes left")


def test_required_second_factor_is_set_up_before_anything_else(
        ui: tuple[Page, Watch], site: Site) -> None:  # noqa: F811
    """An admin requires TOTP for managers on /settings; Erin (a manager) logs in, lands on
    the enrolment with nothing else shown, sets it up and then reaches /live."""
    page, _ = ui
    site.log_in(page, "alice")
    page.goto(site.base + "/settings")
    page.select_option("#totp-policy", "privileged")
    expect(page.locator("#totp-policy-note")).to_have_text(
        "Set here (it wins over the configuration).")
    try:
        _log_in_with_form(page, site, "erin")
        expect(page).to_have_url(site.base + "/settings#account-section")
        expect(page.locator("#totp-required-note")).to_be_visible()
        expect(page.locator("#users-section")).to_be_hidden()
        expect(page.locator("#keys-box")).to_be_hidden()
        page.goto(site.base + "/live")
        expect(page).to_have_url(site.base + "/settings#account-section")
        _enrol_in_page(page)
        page.get_by_role("button", name="I have kept them").click()
        expect(page).to_have_url(site.base + "/live")
        expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")
    finally:
        site.server.request("DELETE", "/api/0/auth/policy",
                            headers={"Authorization": f"Bearer {site.token('alice')}"})
