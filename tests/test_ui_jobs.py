"""/jobs in headless Chromium against the real twistd: the jobs a user may see with their
level, last run and next expected time, live as pings arrive, and a job's runs."""

from __future__ import annotations

import urllib.request
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
UUID = "0f8e6d4c-2b1a-4c3d-9e8f-7a6b5c4d3e2f"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    server = ServerProcess(
        tmp_path_factory.mktemp("ui-jobs"),
        users={"alice": {"admin": True, "password": _hash("alice")},
               "bob": {"password": _hash("bob")}},
        hosts={"db1": {"monitors": ["bob"]}},
        jobs={"backup": {"period": "1h", "grace": "10m", "uuid": UUID, "host": "db1"},
              "certs": {"schedule": "0 4 * * *", "timezone": "UTC", "grace": "1h"}},
    ).start()
    yield Site(server)
    server.stop()


def _ping(site: Site, action: str, body: bytes) -> None:
    request = urllib.request.Request(f"{site.base}/ping/{UUID}/{action}", data=body,
                                     method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


def _rows(page: Page) -> list[tuple[str | None, str | None]]:
    return [(tr.get_attribute("data-job"), tr.get_attribute("data-level"))
            for tr in page.locator("#jobs tbody tr").all()]


def test_jobs_page_is_live_and_shows_a_jobs_runs(ui: tuple[Page, Watch],  # noqa: F811
                                                 site: Site) -> None:
    page, watch = ui
    site.log_in(page, "alice")
    page.goto(site.base + "/jobs")
    expect(page.locator("#jobs tbody tr")).to_have_count(2)
    assert _rows(page) == [("backup", "OK"), ("certs", "OK")]
    expect(page.locator("[data-nav=jobs]")).to_have_attribute("aria-current", "page")
    _ping(site, "start", b"")
    _ping(site, "2", b"copying\nerror: <b>disk</b> full\n")
    # The feed's job event reloads the list: the failed job first.
    expect(page.locator("tr[data-job=backup]")).to_have_attribute("data-level", "CRITICAL")
    assert _rows(page)[0] == ("backup", "CRITICAL")
    row = page.locator("tr[data-job=backup]")
    expect(row.locator("td[data-label='Last run']")).to_contain_text("fail (exit 2)")
    expect(row).to_contain_text("failed (exit code 2)")
    row.locator("button.name").click()
    expect(page.locator("#job-runs-title")).to_have_text("Runs of backup")
    expect(page.locator("#job-ping")).to_contain_text(f"/ping/{UUID}")
    run = page.locator("#runs tbody tr").first
    expect(run).to_have_attribute("data-outcome", "fail")
    expect(run.locator("pre.job-log")).to_have_text("copying\nerror: <b>disk</b> full")
    assert page.locator("#runs b").count() == 0  # a log is text, never markup
    _ping(site, "0", b"all good\n")
    expect(page.locator("tr[data-job=backup]")).to_have_attribute("data-level", "OK")
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    assert (watch.errors, watch.dialogs) == ([], [])


def test_a_monitor_sees_the_job_but_not_its_ping_url(ui: tuple[Page, Watch],  # noqa: F811
                                                     site: Site) -> None:
    page, watch = ui
    site.log_in(page, "bob")
    page.goto(site.base + "/jobs")
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    assert _rows(page)[0][0] == "backup"
    page.locator("tr[data-job=backup] button.name").click()
    expect(page.locator("#job-runs-title")).to_have_text("Runs of backup")
    expect(page.locator("#job-ping")).to_have_text("")
    assert (watch.errors, watch.dialogs) == ([], [])
