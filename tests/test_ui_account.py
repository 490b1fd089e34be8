"""/settings for one's own account in headless Chromium: API keys (and the second factor)."""

from __future__ import annotations

import datetime
import re
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
               "bob": {"password": _hash("bob")}},
        hosts={"web1": {"monitors": ["bob"]}}).start()
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
