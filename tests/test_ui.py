"""The web UI in headless Chromium, against the real ``twistd -n heartbeat`` process.

Playwright drives Debian's chromium (never a downloaded browser). The server runs
as a subprocess (tests.support.ServerProcess): sync Playwright and an in-process
reactor would starve each other. One server with users serves the module; each
test uses host names of its own. Every page is checked to fire no dialog and log
no console error, so markup that ran as script, or a CSP violation, fails the test.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from heartbeat.passwords import hash_password
from heartbeat.protocol import next_seq, seal
from tests.support import ServerProcess, wait_until

pytestmark = pytest.mark.integration

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
Page = playwright_api.Page

CHROMIUM = "/usr/bin/chromium"
XSS_MSG = "<img src=x onerror=alert('msg')>"
XSS_KEY = "<img src=x onerror=alert('key')>"
XSS_VALUE = "<script>alert('value')</script>"
XSS_NAME = "<img src=x onerror=alert('name')>"
SECRET = "smtp-secret-never-shown"
FLEET_KEY = "ui-fleet-key-0123456789abcdef"
TIMEOUT = 5000


@cache
def _hash(name: str) -> str:
    return hash_password(f"{name}-password")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's chromium, kept off every network but loopback."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing (.ci/apt-install installs Debian's chromium)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM,
            "args": ["--disable-gpu",
                     "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]}


class Site:
    """The module's server with a session per user (each login costs a real hash)."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.base = f"http://127.0.0.1:{server.http_port}"
        self._tokens: dict[str, str] = {}

    def send(self, message: dict[str, Any]) -> None:
        self.server.send(message)

    def token(self, name: str) -> str:
        if name not in self._tokens:
            status, body = self.server.request(
                "POST", "/api/0/auth/login", {"username": name, "password": f"{name}-password"})
            assert status == 200, body
            self._tokens[name] = body["token"]
        return self._tokens[name]

    def request(self, path: str, name: str = "alice") -> tuple[int, Any]:
        return self.server.request("GET", path,
                                   headers={"Authorization": f"Bearer {self.token(name)}"})

    def api(self, path: str, name: str = "alice") -> Any:
        status, body = self.request(path, name)
        assert status == 200, (path, body)
        return body

    def samples(self, host: str, plugin: str) -> int:
        status, body = self.request(f"/api/0/hosts/{host}/plugins/{plugin}?limit=100")
        return len(body["samples"]) if status == 200 else 0

    def log_in(self, page: Page, name: str) -> None:
        page.context.add_cookies([{"name": "hb_session", "value": self.token(name),
                                   "url": self.base}])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One server with users, thresholds and a short grace for the whole module."""
    server = ServerProcess(
        tmp_path_factory.mktemp("ui"), grace=0.5,
        users={"alice": {"admin": True, "password": _hash("alice"), "full_name": "Alice A"},
               "bob": {"password": _hash("bob")},
               "mallory": {"password": _hash("mallory"), "full_name": XSS_NAME},
               "dave": {"password": _hash("dave")}, "mike": {"password": _hash("mike")}},
        hosts={"web1": {"monitors": ["bob"]}, "ui-xss": {"managers": ["mallory"]},
               "ui-ops": {"managers": ["mike"]}, "ui-router": {},
               "ui-child": {"parents": ["ui-router"]}},
        email={"smtp_host": "smtp.example.test", "username": "hb", "password": SECRET},
        thresholds={"cpu_monitor": {"cpu_percent": {"warning": 80, "critical": 90}}},
        keys={"fleet": FLEET_KEY},
    ).start()
    yield Site(server)
    server.stop()


class Watch:
    """What a page did that it must not: dialogs, script errors, failed API calls.

    A page itself may answer 401/403/404 (a refused login, a host one may not see);
    the requests its scripts make must all succeed.
    """

    def __init__(self, page: Page) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("response", self._response)

    def _console(self, message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def _response(self, response: Any) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            self.errors.append(f"{response.status} {response.url}")


@pytest.fixture
def ui(page: Page) -> Iterator[tuple[Page, Watch]]:
    """A fresh browser page whose dialogs and console errors fail the test."""
    page.set_default_timeout(TIMEOUT)
    watch = Watch(page)
    yield page, watch
    assert watch.dialogs == []
    assert watch.errors == []


def _live(page: Page) -> None:
    expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")


def _open_live(ui: tuple[Page, Watch], site: Site, user: str) -> Page:
    """``user``'s /live, once its feed is live."""
    page, _ = ui
    site.log_in(page, user)
    page.goto(site.base + "/live")
    _live(page)
    return page


def _plugins(i: int, cpu: float) -> dict[str, Any]:
    return {
        "cpu_monitor": {"cpu_percent": cpu, "load_1min": 0.5 + i, "load_5min": 0.4,
                        "load_15min": 0.3, "cpu_count": 2},
        "disk_monitor": {"partitions": {"/": {"device": "/dev/sda1", "fstype": "ext4",
                                              "total_gb": 48.9, "used_gb": 20.1,
                                              "free_gb": 26.3, "percent": 43.3}}},
        "zfs_monitor": {"pools": {"tank": {
            "health": "DEGRADED", "health_ok": 0, "size": 9981503995904,
            "alloc": 3046184919040, "free": 6935319076864, "capacity": 30, "fragmentation": 9,
            "dedup_ratio": 1.0, "read_ops": 64, "write_ops": 12, "read_bytes": 281656,
            "write_bytes": 308598, "vdevs": [{"name": "mirror-0", "state": "DEGRADED",
                                              "depth": 1, "read": 0, "write": 0, "cksum": 0,
                                              "note": None}]}}, "pool_count": 1},
    }


def test_login_form_returns_to_the_page(ui: tuple[Page, Watch], site: Site) -> None:
    """A page opened without a session goes to /login and, after the login, back to it."""
    page, _ = ui
    site.send({"ID": "HTB", "name": "web1"})
    wait_until(lambda: site.request("/api/0/hosts/web1")[0] == 200)
    page.goto(site.base + "/plugins/web1")
    assert page.url == site.base + "/login?next=%2Fplugins%2Fweb1"
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "not-her-password")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("Wrong user name or password.")
    page.fill("input[name=password]", "alice-password")
    page.click("button[type=submit]")
    expect(page.locator("#host-name")).to_have_text("web1")
    assert page.url == site.base + "/plugins/web1"
    expect(page.locator("#who")).to_have_text("Alice A")


def test_live_host_appears_and_goes_down(ui: tuple[Page, Watch], site: Site) -> None:
    """A host appears on /live with its first datagram and turns DOWN when it stops, no reload."""
    page, _ = ui
    site.log_in(page, "alice")
    page.goto(site.base + "/live")
    _live(page)
    page.evaluate("window.notReloaded = true")
    site.send({"ID": "HTB", "name": "ui-live", "interval": 1, "rtt": 0.25})
    row = page.locator("tr[data-host='ui-live']")
    expect(row).to_have_attribute("data-state", "UP")
    expect(row.locator("td[data-label=RTT]")).to_have_text("0.25 ms")
    expect(row.locator("a")).to_have_attribute("href", "/plugins/ui-live")
    site.send({"ID": "MSG", "name": "ui-live", "text": "disk check done", "level": "info"})
    expect(row.locator("td[data-label='Latest message']")).to_contain_text("disk check done")
    expect(page.locator("#messages li").first).to_contain_text("disk check done")
    expect(row).to_have_attribute("data-state", "DOWN")  # interval 1 s + grace 0.5 s
    expect(row.locator("td[data-label=State]")).to_contain_text("(timeout)")
    assert page.evaluate("window.notReloaded") is True


def test_live_messages_load_after_the_snapshot_each_once(ui: tuple[Page, Watch],
                                                         site: Site) -> None:
    """/live asks for the journal's messages once its snapshot is in: after a reload they
    are there, newest first, each once, with those the feed brings after it on top."""
    page = _open_live(ui, site, "alice")
    site.send({"ID": "HTB", "name": "ui-msgs", "interval": 3600})
    site.send({"ID": "MSG", "name": "ui-msgs", "text": "first note"})
    site.send({"ID": "MSG", "name": "ui-msgs", "text": "second note"})
    items = page.locator("#messages li", has_text="ui-msgs")
    expect(items).to_have_count(2)
    journal = "/api/0/messages?limit=50&types=MSG"
    wait_until(lambda: sum(m["message"].get("name") == "ui-msgs"
                           for m in site.api(journal)["messages"]) == 2)
    page.reload()
    _live(page)
    expect(page.locator("tr[data-host='ui-msgs']")).to_have_count(1)
    expect(items).to_have_count(2)
    expect(items.first).to_contain_text("second note")
    site.send({"ID": "MSG", "name": "ui-msgs", "text": "third note"})
    latest = page.locator("tr[data-host='ui-msgs'] td[data-label='Latest message']")
    expect(latest).to_contain_text("third note")  # the feed's (a read-only default once broke it)
    expect(items).to_have_count(3)
    expect(items.first).to_contain_text("third note")
    for text in ("first note", "second note", "third note"):
        expect(page.locator("#messages li", has_text=text)).to_have_count(1)


def _race_the_journal(page: Page, site: Site, host: str, answer_before_it: bool) -> None:
    """``host`` with an "older note" in the journal, and the page's journal requests held
    until a "raced note" has come by the feed and reached the journal: answered as the
    journal is then, or as it was before the note (``answer_before_it``)."""
    site.send({"ID": "HTB", "name": host, "interval": 3600})
    site.send({"ID": "MSG", "name": host, "text": "older note"})
    journal = f"/api/0/messages?host={host}&limit=50"

    def journaled(text: str) -> bool:
        return any(m["message"].get("text") == text for m in site.api(journal)["messages"])

    wait_until(lambda: journaled("older note"))

    def answer(route: Any) -> None:
        before = route.fetch() if answer_before_it else None
        site.send({"ID": "MSG", "name": host, "text": "raced note"})
        wait_until(lambda: journaled("raced note"))  # the feed sent it before
        route.fulfill(response=before or route.fetch())

    site.log_in(page, "alice")
    page.route("**/api/0/messages?*", answer)


def test_live_shows_a_message_once_when_the_journal_and_the_feed_both_bring_it(
        ui: tuple[Page, Watch], site: Site) -> None:
    """A message the feed brings while /live's request for the journal is under way, and
    which the journal's answer holds too, is listed once. (The journal keeps times to the
    millisecond and the feed to the microsecond: the page once told them apart by the
    time as written, and listed such a message twice.)"""
    page, _ = ui
    _race_the_journal(page, site, "ui-race", answer_before_it=False)
    page.goto(site.base + "/live")
    _live(page)
    expect(page.locator("#messages li", has_text="older note")).to_have_count(1)
    expect(page.locator("#messages li", has_text="raced note")).to_have_count(1)
    page.unroute("**/api/0/messages?*")


def test_a_host_page_keeps_a_message_the_feed_brought_while_the_journal_was_asked(
        ui: tuple[Page, Watch], site: Site) -> None:
    """A message the feed brings to /plugins/<host> while the page waits for a journal
    answer read before it came stays listed, on top. (The page asked the journal before
    its feed was open and replaced the list with the answer: the message was gone until
    the next reload.)"""
    page, _ = ui
    _race_the_journal(page, site, "ui-hostrace", answer_before_it=True)
    page.goto(site.base + "/plugins/ui-hostrace")
    items = page.locator("#messages li")
    expect(items).to_have_count(2)
    expect(items.first).to_contain_text("raced note")
    expect(items.nth(1)).to_contain_text("older note")
    page.unroute("**/api/0/messages?*")


def test_live_shows_whether_the_last_datagram_was_signed(ui: tuple[Page, Watch],
                                                         site: Site) -> None:
    """/live marks a host whose last datagram was signed, with the key, and updates live."""
    page = _open_live(ui, site, "alice")
    site.send({"ID": "HTB", "name": "ui-signed"})
    signed = page.locator("tr[data-host='ui-signed'] td[data-label=Signed]")
    expect(signed).to_have_text("no")
    datagram = seal(json.dumps({"ID": "HTB", "name": "ui-signed"}).encode(), "fleet",
                    FLEET_KEY.encode(), next_seq(0, time.time()))
    site.server.send(datagram)
    expect(signed).to_have_text("yes (fleet)")
    page.reload()
    _live(page)
    expect(signed).to_have_text("yes (fleet)")


def test_overview_chart_cards_and_live_samples(ui: tuple[Page, Watch],
                                               site: Site) -> None:
    """The overview charts the history, shows bars and pools, and adds new samples live."""
    page, _ = ui
    site.send({"ID": "HTB", "name": "ui-chart"})
    for i, cpu in enumerate((10.0, 35.5, 20.0, 55.0, 40.0)):
        site.send({"ID": "PLG", "name": "ui-chart", "plugins": _plugins(i, cpu)})
    wait_until(lambda: site.samples("ui-chart", "cpu_monitor") == 5)
    site.log_in(page, "alice")
    page.goto(site.base + "/plugins/ui-chart")
    cpu = page.locator("figure[data-chart=cpu] .plot")
    expect(cpu).to_have_attribute("data-count", "5")
    expect(cpu.locator("canvas")).to_have_count(1)
    expect(page.locator("figure[data-chart=load] .legend")).to_have_text("1 min5 min15 min")
    expect(cpu.locator(".u-legend")).to_contain_text("CPU40 %")
    expect(page.locator("figure[data-chart=cpu]")).to_have_attribute("data-limits", "80,90")
    bar = page.locator(".plugin[data-plugin=disk_monitor] .partition[data-mount='/'] .bar")
    expect(bar).to_have_attribute("aria-valuenow", "43.3")
    pool = page.locator(".pool[data-pool=tank]")
    expect(pool).to_have_attribute("data-health", "DEGRADED")
    expect(pool.locator(".health").first).to_have_text("DEGRADED")
    expect(pool).to_contain_text("Fragmentation9 %")
    expect(pool).to_contain_text("read 64 op/s, 275 KiB/s")
    expect(page.locator("#host-alerts tr[data-metric='zfs_monitor.pools.tank.health_ok']")) \
        .to_contain_text("CRITICAL")
    _live(page)  # a sample sent before the feed opens comes with the next page load only
    site.send({"ID": "PLG", "name": "ui-chart", "plugins": _plugins(5, 60.0)})
    expect(cpu).to_have_attribute("data-count", "6")
    expect(cpu.locator(".u-legend")).to_contain_text("CPU60 %")
    page.select_option("#range", "3600")
    expect(cpu).to_have_attribute("data-count", "6")


def test_alert_appears_and_pie_updates(ui: tuple[Page, Watch], site: Site) -> None:
    """A PLG over a threshold shows on /alerts and in the nav pie without a reload."""
    page, _ = ui
    site.log_in(page, "alice")
    page.goto(site.base + "/alerts")
    _live(page)
    before = _current(site.api("/api/0/alerts")["summary"])
    pie = page.locator("#alert-pie")
    expect(pie).to_have_attribute("data-total", str(before))
    site.send({"ID": "PLG", "name": "ui-alert", "plugins": {"cpu_monitor": {
        "cpu_percent": 95.0}}})
    row = page.locator("#alerts tr[data-host='ui-alert']")
    expect(row).to_have_attribute("data-level", "CRITICAL")
    expect(row).to_contain_text("cpu_monitor.cpu_percent")
    expect(row.locator("td[data-label=Limit]")).to_have_text("90 %")
    expect(row.locator("td[data-label=Value]")).to_have_text("95 %")
    # An admin owns every host, the new one too (/api/0/me's default_role).
    expect(row.locator("a.name")).to_have_text("ui-alert")
    expect(row.get_by_role("button", name="Acknowledge")).to_have_count(1)
    expect(pie).to_have_attribute("data-total", str(before + 1))
    expect(pie.locator("[data-level=CRITICAL]")).to_have_count(1)
    critical = site.api("/api/0/alerts")["summary"]["CRITICAL"]
    expect(page.locator(".tile[data-level=CRITICAL] strong")).to_have_text(str(critical))
    page.uncheck("#level-filter input[value=CRITICAL]")
    expect(row).to_have_count(0)
    page.check("#level-filter input[value=CRITICAL]")
    expect(row).to_have_count(1)
    site.send({"ID": "PLG", "name": "ui-alert", "plugins": {"cpu_monitor": {
        "cpu_percent": 85.0}}})
    expect(row).to_have_attribute("data-level", "WARNING")
    site.send({"ID": "PLG", "name": "ui-alert", "plugins": {"cpu_monitor": {
        "cpu_percent": 10.0}}})
    expect(row).to_have_count(0)
    expect(pie).to_have_attribute("data-total", str(before))


def _current(summary: dict[str, int]) -> int:
    return sum(summary[level] for level in ("CRITICAL", "WARNING", "UNKNOWN"))


def test_a_down_host_is_a_problem(ui: tuple[Page, Watch], site: Site) -> None:
    """A host going DOWN shows on /alerts as a host problem, its metric alerts as stale."""
    page, _ = ui
    site.log_in(page, "alice")
    page.goto(site.base + "/alerts")
    _live(page)
    site.send({"ID": "HTB", "name": "ui-down", "interval": 1})
    site.send({"ID": "PLG", "name": "ui-down", "plugins": {"cpu_monitor": {"cpu_percent": 95.0}}})
    metric = page.locator("#alerts tr[data-host='ui-down'][data-kind=metric]")
    expect(metric).to_have_attribute("data-stale", "no")
    host = page.locator("#alerts tr[data-host='ui-down'][data-kind=host]")
    expect(host).to_have_attribute("data-level", "CRITICAL")  # interval 1 s + grace 0.5 s
    expect(host.locator("td[data-label=Problem]")).to_have_text("host DOWN (timeout)")
    expect(metric).to_have_attribute("data-stale", "yes")
    rows = page.locator("#alerts tbody tr").evaluate_all(
        "rows => rows.map(r => [r.dataset.host, r.dataset.kind, r.dataset.stale])")
    assert rows.index(["ui-down", "host", "no"]) < rows.index(["ui-down", "metric", "yes"])
    assert all(stale == "yes" for _, _, stale in rows[rows.index(["ui-down", "metric", "yes"]):])
    summary = site.api("/api/0/alerts")["summary"]
    expect(page.locator("#alert-pie")).to_have_attribute("data-total", str(_current(summary)))
    page.uncheck("#show-stale")
    expect(metric).to_have_count(0)
    expect(host).to_have_count(1)
    site.send({"ID": "HTB", "name": "ui-down", "interval": 60})
    expect(host).to_have_count(0)


def test_markup_from_datagrams_and_users_is_text(ui: tuple[Page, Watch],
                                                 site: Site) -> None:
    """Markup in a MSG, in plugin keys and values and in a full name shows as text."""
    page, watch = ui
    site.send({"ID": "HTB", "name": "ui-xss"})
    site.send({"ID": "MSG", "name": "ui-xss", "text": XSS_MSG, "level": "warning"})
    site.send({"ID": "PLG", "name": "ui-xss", "plugins": {
        "custom_probe": {XSS_KEY: XSS_VALUE, "nested": {"deeper": XSS_VALUE}},
        "nagios_runner": {"check_x_status_code": 2, "check_x_output": XSS_VALUE}}})
    wait_until(lambda: site.samples("ui-xss", "custom_probe") == 1)
    site.log_in(page, "alice")
    page.goto(site.base + "/live")
    row = page.locator("tr[data-host='ui-xss']")
    expect(row.locator("td[data-label='Latest message']")).to_contain_text(XSS_MSG)
    page.goto(site.base + "/plugins/ui-xss")
    card = page.locator(".plugin[data-plugin=custom_probe]")
    expect(card).to_contain_text(XSS_KEY)
    expect(card).to_contain_text(XSS_VALUE)
    expect(page.locator(".check[data-check=check_x]")).to_contain_text(XSS_VALUE)
    expect(page.locator("#messages")).to_contain_text(XSS_MSG)
    page.goto(site.base + "/settings")
    expect(page.locator("#users tr[data-user=mallory]")).to_contain_text(XSS_NAME)
    page.goto("about:blank")
    page.context.clear_cookies()
    site.log_in(page, "mallory")
    page.goto(site.base + "/plugins/ui-xss")
    expect(page.locator("#who")).to_have_text(XSS_NAME)
    expect(page.locator("#messages")).to_contain_text(XSS_MSG)
    assert page.locator("img[src=x], script:not([src])").count() == 0
    assert watch.dialogs == []


def test_monitor_sees_only_own_hosts(ui: tuple[Page, Watch], site: Site) -> None:
    """bob (monitor of web1) sees web1 without its overview, and nothing of other hosts."""
    page, _ = ui
    for name in ("web1", "web2"):
        site.send({"ID": "HTB", "name": name})
        site.send({"ID": "MSG", "name": name, "text": f"hello from {name}"})
    wait_until(lambda: {"web1", "web2"} <= {h["name"] for h in site.api("/api/0/hosts")["hosts"]})
    site.log_in(page, "bob")
    page.goto(site.base + "/live")
    expect(page.locator("tr[data-host=web1]")).to_have_count(1)
    expect(page.locator("#messages")).to_contain_text("hello from web1")
    assert page.locator("#hosts tbody tr[data-host]").evaluate_all(
        "rows => rows.map(r => r.dataset.host)") == ["web1"]
    expect(page.locator("tr[data-host=web1] a")).to_have_count(0)
    assert "web2" not in page.locator("main").inner_text()
    page.goto(site.base + "/plugins/web1")
    expect(page.locator("main h1")).to_have_text("Not yours to inspect")
    page.goto(site.base + "/plugins/web2")
    expect(page.locator("main h1")).to_have_text("No such host")
    page.goto(site.base + "/settings")
    expect(page.locator("#users-note")).to_have_text("Only admins manage users.")
    expect(page.locator("#config-section")).to_be_hidden()
    expect(page.locator("#threshold-host option")).to_have_text(["web1"])


def test_an_admin_changes_their_own_password_on_settings(ui: tuple[Page, Watch],
                                                         site: Site) -> None:
    """Editing oneself asks for the current password; the page goes on with the session
    that replaced its own (a second change needs its new CSRF token)."""
    page, _ = ui
    status, _body = site.server.request(
        "POST", "/api/0/users", {"name": "erin", "password": "erin-password", "admin": True},
        {"Authorization": f"Bearer {site.token('alice')}"})
    assert status == 201
    site.log_in(page, "erin")
    page.goto(site.base + "/settings")
    erin = page.locator("#users tr[data-user=erin]")
    erin.get_by_role("button", name="Edit").click()
    expect(page.locator("#user-current-password")).to_be_visible()
    page.fill("#user-form input[name=password]", "erin-new-password")
    page.fill("#user-form input[name=current_password]", "erin-password")
    page.click("#user-save")
    expect(page.locator("#user-form")).to_be_hidden()
    erin.get_by_role("button", name="Edit").click()
    page.fill("#user-form input[name=full_name]", "Erin E")
    page.click("#user-save")
    expect(erin).to_contain_text("Erin E")
    assert site.server.request("POST", "/api/0/auth/login", {
        "username": "erin", "password": "erin-new-password"})[0] == 200
    page.locator("#users tr[data-user=bob]").get_by_role("button", name="Edit").click()
    expect(page.locator("#user-current-password")).to_be_hidden()
    site.server.request("DELETE", "/api/0/users/erin",
                        headers={"Authorization": f"Bearer {site.token('alice')}"})


def test_settings_users_config_and_thresholds(ui: tuple[Page, Watch],
                                              site: Site) -> None:
    """An admin adds, edits and removes a user; the config hides secrets; rules per host."""
    page, _ = ui
    site.send({"ID": "HTB", "name": "web1"})
    site.log_in(page, "alice")
    page.goto(site.base + "/settings")
    expect(page.locator("#users tr[data-user=bob]")).to_contain_text("web1: monitor")
    expect(page.locator("#users tr[data-user=alice]")).to_contain_text(
        "admin: owner of every host")
    page.click("#user-add")
    page.fill("#user-form input[name=name]", "carol")
    page.fill("#user-form input[name=full_name]", "Carol C")
    page.fill("#user-form input[name=password]", "carol-password")
    page.click("#user-save")
    carol = page.locator("#users tr[data-user=carol]")
    expect(carol).to_contain_text("Carol C")
    assert site.api("/api/0/users/carol")["full_name"] == "Carol C"
    carol.get_by_role("button", name="Edit").click()
    page.fill("#user-form input[name=full_name]", "Carol Changed")
    page.click("#user-save")
    expect(carol).to_contain_text("Carol Changed")
    carol.get_by_role("button", name="Remove").click()
    carol.get_by_role("button", name="Yes, remove").click()
    expect(carol).to_have_count(0)
    assert site.request("/api/0/users/carol")[0] == 404
    email = page.locator("#config tr[data-key=email]")
    email.locator("summary").first.click()
    expect(email).to_contain_text('"password": "********"')
    assert SECRET not in page.content()
    page.select_option("#threshold-host", "web1")
    rule = page.locator("#thresholds tr[data-metric='cpu_monitor.cpu_percent']")
    expect(rule.locator("td[data-label=Warning]")).to_have_text("80 %")
    expect(rule.locator("td[data-label=Critical]")).to_have_text("90 %")


@pytest.mark.parametrize("path", ["/login", "/live", "/plugins/ui-phone", "/alerts",
                                  "/operations", "/settings"])
def test_pages_fit_a_phone(ui: tuple[Page, Watch], site: Site, path: str) -> None:
    """At 390 px wide no page scrolls sideways, even with long unbroken data."""
    page, _ = ui
    long = "x" * 300
    plugins = _plugins(0, 20.0)
    docker = "/var/lib/docker/overlay2/" + "0123456789abcdef" * 4 + "/merged"
    plugins["disk_monitor"]["partitions"][docker] = plugins["disk_monitor"]["partitions"]["/"]
    plugins["zfs_monitor"]["pools"]["tank"]["vdevs"].append(
        {"name": "ata-WDC_WD40EFRX-68N32N0_WD-WCC7K0123456", "state": "ONLINE", "depth": 2,
         "read": 0, "write": 0, "cksum": 0, "note": None})
    site.send({"ID": "HTB", "name": "ui-phone"})
    site.send({"ID": "MSG", "name": "ui-phone", "text": long})
    site.send({"ID": "PLG", "name": "ui-phone", "plugins": {**plugins, "custom": {long: long},
                                                              "k" * 100: {"v": 1}}})
    wait_until(lambda: site.samples("ui-phone", "custom") >= 1)
    page.set_viewport_size({"width": 390, "height": 844})
    if path != "/login":
        site.log_in(page, "alice")
    page.goto(site.base + path)
    page.wait_for_load_state("networkidle")
    if path != "/login":
        _live(page)
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths == [390, 390]


def test_feed_reconnects_by_itself(page: Page, server_factory: Any, tmp_path: Path) -> None:
    """Without users no login is needed; a lost feed says so, reconnects and goes on."""
    page.set_default_timeout(10000)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    server = server_factory(tmp_path / "a")
    page.goto(f"http://127.0.0.1:{server.http_port}/")
    assert page.url.endswith("/live")
    _live(page)
    server.stop()
    expect(page.locator("#feed-state")).to_have_attribute("data-state", "reconnecting")
    expect(page.locator("#banner")).to_contain_text("Connection to the server lost")
    again = server_factory(tmp_path / "b", hb_port=server.udp_port,
                           hbd_port=server.http_port, ws_port=server.ws_port)
    _live(page)
    expect(page.locator("#banner")).to_have_text("Reconnected: the page is live again.")
    again.send({"ID": "HTB", "name": "after-restart"})
    expect(page.locator("tr[data-host='after-restart']")).to_have_attribute("data-state", "UP")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/live", page.url)
    assert dialogs == []


def test_live_with_a_thousand_hosts(ui: tuple[Page, Watch], server_factory: Any,
                                    tmp_path: Path) -> None:
    """1,000 hosts: all counted, few rendered, problems first; search, filters, sorting,
    scrolling to the last host; the latest message survives a reload."""
    page, _ = ui
    server = server_factory(tmp_path, hosts={"host0500": {"tags": ["db"]},
                                             "host0501": {"tags": ["db", "rack3"]}},
                            thresholds={"cpu_monitor": {"cpu_percent": {"critical": 90}}},
                            source_rate=100000)
    sock = server.socket
    for n in range(1000):
        sock.sendto(json.dumps({"ID": "HTB", "name": f"host{n:04d}", "interval": 600}).encode(),
                    ("127.0.0.1", server.udp_port))
        if n % 100 == 99:
            time.sleep(0.01)
    wait_until(lambda: server.get("/api/0/status")["hosts"]["total"] == 1000)
    for name in ("host0300", "host0700"):
        server.send({"ID": "SHUT", "name": name})
    server.send({"ID": "PLG", "name": "host0042", "plugins": {"cpu_monitor": {"cpu_percent": 99}}})
    server.send({"ID": "MSG", "name": "host0999", "text": "last one here", "level": "warning"})
    wait_until(lambda: server.get("/api/0/status")["hosts"]["DOWN"] == 2)
    page.goto(f"http://127.0.0.1:{server.http_port}/live")
    table = page.locator("#hosts")
    expect(table).to_have_attribute("data-shown", "1000")
    expect(page.locator("#summary")).to_contain_text("1000 hosts: 2 down, 998 up · 1 with alerts")
    assert int(table.get_attribute("data-rendered") or 0) < 80
    rows = page.locator("#hosts tbody tr[data-host]")
    expect(rows.nth(0)).to_have_attribute("data-host", "host0042")
    expect(rows.nth(1)).to_have_attribute("data-host", "host0300")
    expect(rows.nth(2)).to_have_attribute("data-host", "host0700")
    expect(rows.nth(3)).to_have_attribute("data-host", "host0000")
    expect(rows.nth(0).locator("td[data-label=Alerts]")).to_have_text("CRITICAL")
    page.fill("#live-search", "host0999")
    expect(table).to_have_attribute("data-shown", "1")
    expect(rows.first.locator("td[data-label='Latest message']")).to_contain_text("last one here")
    page.fill("#live-search", "")
    page.select_option("#filter-state", "DOWN")
    expect(table).to_have_attribute("data-shown", "2")
    page.select_option("#filter-state", "")
    page.select_option("#filter-level", "CRITICAL")
    expect(table).to_have_attribute("data-shown", "1")
    page.select_option("#filter-level", "")
    page.select_option("#filter-tag", "db")
    expect(table).to_have_attribute("data-shown", "2")
    page.select_option("#filter-tag", "")
    expect(table).to_have_attribute("data-shown", "1000")
    page.click("th[data-sort=name] button")
    expect(rows.first).to_have_attribute("data-host", "host0000")
    page.click("th[data-sort=name] button")
    expect(page.locator("th[data-sort=name]")).to_have_attribute("aria-sort", "descending")
    expect(rows.first).to_have_attribute("data-host", "host0999")
    page.click("th[data-sort=name] button")
    page.locator("#hosts-viewport").evaluate("v => { v.scrollTop = v.scrollHeight; }")
    expect(rows.last).to_have_attribute("data-host", "host0999")
    server.send({"ID": "HTB", "name": "host0300", "interval": 600})
    expect(page.locator("#summary")).to_contain_text("1 down, 999 up")
    page.reload()
    page.fill("#live-search", "host0999")
    expect(rows.first.locator("td[data-label='Latest message']")).to_contain_text("last one here")


def test_access_edited_in_the_ui(ui: tuple[Page, Watch], site: Site) -> None:
    """An admin makes bob owner of a host on its page; bob (not admin) adds a monitor;
    changes carry the CSRF token (cookie sessions); reset goes back to the config."""
    page, watch = ui
    site.send({"ID": "HTB", "name": "ui-access"})
    wait_until(lambda: site.request("/api/0/hosts/ui-access")[0] == 200)
    site.log_in(page, "alice")
    page.goto(site.base + "/plugins/ui-access")
    form = page.locator("#access-form")
    expect(form.locator("input[name=owner]")).to_have_value("alice")
    form.locator("input[name=owner]").fill("bob")
    form.locator("input[name=managers]").fill("nobody-such")
    page.click("#access-save")
    expect(page.locator("#access-error")).to_have_text("no such user: nobody-such")
    assert watch.errors == [f"400 {site.base}/api/0/hosts/ui-access/access"]
    watch.errors.clear()
    form.locator("input[name=managers]").fill("")
    page.click("#access-save")
    expect(page.locator("#access-saved")).to_have_text("Saved.")
    assert site.api("/api/0/hosts/ui-access/access") == {
        "host": "ui-access", "owner": "bob", "managers": [], "monitors": [], "source": "api"}
    page.context.clear_cookies()
    site.log_in(page, "bob")
    page.goto(site.base + "/plugins/ui-access")
    page.locator("#access-form input[name=monitors]").fill("mallory, dave")
    page.click("#access-save")
    expect(page.locator("#access-saved")).to_have_text("Saved.")
    assert site.api("/api/0/hosts/ui-access/access")["monitors"] == ["mallory", "dave"]
    page.click("#access-reset")
    expect(page.locator("#access-saved")).to_have_text("Reset to the config file's.")
    assert site.api("/api/0/hosts/ui-access/access")["source"] == "config"
    page.goto(site.base + "/plugins/ui-access")
    expect(page.locator("main h1")).to_have_text("No such host")
    assert page.title() == "404 No such host · heartbeat"


def test_the_default_owner_holds_every_host_but_those_listed(ui: tuple[Page, Watch],
                                                             server_factory: Any,
                                                             tmp_path: Path) -> None:
    """A non-admin default owner owns each host nobody else owns, new ones too, and not
    a host another user owns: /live links the first and leaves out the second, and
    /settings tells an admin so, from /api/0/me's and /api/0/users' default_role."""
    page, _ = ui
    server = server_factory(
        tmp_path, default_owner="olga", hosts={"mail1": {"owner": "root"}},
        users={"root": {"admin": True, "password": _hash("root")},
               "olga": {"password": _hash("olga")}})
    for name in ("new1", "mail1"):
        server.send({"ID": "HTB", "name": name})
    site = Site(server)
    wait_until(lambda: site.api("/api/0/status", "root")["hosts"]["total"] == 2)
    site.log_in(page, "olga")
    page.goto(site.base + "/live")
    expect(page.locator("tr[data-host=new1] a")).to_have_count(1)
    expect(page.locator("#hosts")).to_have_attribute("data-shown", "1")
    assert site.api("/api/0/me", "olga")["roles"] == {"mail1": None}
    site.log_in(page, "root")
    page.goto(site.base + "/settings")
    expect(page.locator("#users tr[data-user=olga]")).to_contain_text(
        "owner of every host, except mail1: none")


def test_a_user_without_roles_is_told_who_grants_them(ui: tuple[Page, Watch],
                                                      site: Site) -> None:
    """A user holding no role sees why the live page is empty and who can change it."""
    page = _open_live(ui, site, "dave")
    expect(page.locator("#no-hosts")).to_contain_text("You hold no role on any host yet")
    expect(page.locator("#no-hosts")).to_contain_text("an admin: Alice A (alice)")


def test_dark_mode_time_zone_and_formats(browser: Any, site: Site) -> None:
    """Dark by the system's choice or the toggle (kept over a reload); times in the
    browser's zone with its offset, date and time from the same zone (UTC+14 here);
    settings show sizes and durations; an unavailable plugin is one collapsed line."""
    context = browser.new_context(timezone_id="Pacific/Kiritimati", color_scheme="dark")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    watch = Watch(page)
    try:
        site.send({"ID": "HTB", "name": "ui-zone"})
        site.send({"ID": "MSG", "name": "ui-zone", "text": "zone check"})
        site.send({"ID": "PLG", "name": "ui-zone", "plugins": {
            "zfs_monitor": {"available": False, "reason": "no zpool command"}}})
        wait_until(lambda: site.samples("ui-zone", "zfs_monitor") == 1)
        ts = site.api("/api/0/hosts/ui-zone")["latest_message"]["ts"]
        site.log_in(page, "alice")
        page.goto(site.base + "/live")
        background = "getComputedStyle(document.body).backgroundColor"
        assert page.evaluate(background) == "rgb(13, 17, 23)"
        page.fill("#live-search", "ui-zone")
        when = page.locator("tr[data-host=ui-zone] td[data-label='Latest message'] time")
        local = datetime.fromtimestamp(ts, ZoneInfo("Pacific/Kiritimati"))
        expect(when).to_have_attribute(
            "title", f"{local:%Y-%m-%d %H:%M:%S} GMT+14 (Pacific/Kiritimati)")
        expect(page.locator("#zone-note")).to_have_text("times in Pacific/Kiritimati (GMT+14)")
        page.click("#theme-toggle")  # auto -> dark
        page.click("#theme-toggle")  # dark -> light
        assert page.evaluate(background) == "rgb(245, 247, 250)"
        page.goto(site.base + "/plugins/ui-zone")
        assert page.evaluate(background) == "rgb(245, 247, 250)"
        card = page.locator("details[data-plugin=zfs_monitor]")
        expect(card).to_contain_text("not available: no zpool command")
        assert card.get_attribute("open") is None
        page.goto(site.base + "/settings")
        page.select_option("#display-zone", "UTC")
        expect(page.locator("#zone-note")).to_have_text("times in Pacific/Kiritimati (GMT+14)")
        expect(page.locator("#display-zone-note")).to_have_text(
            "Times are shown in UTC, now GMT.")
        page.select_option("#display-theme", "auto")
        assert page.evaluate(background) == "rgb(13, 17, 23)"
        expect(page.locator("#config tr[data-key=journal_max_size] td[data-label=Value]")) \
            .to_have_text("100 MiB (104,857,600 B)")
        expect(page.locator("#config tr[data-key=history_retention] td[data-label=Value]")) \
            .to_have_text("7 d 0 h (604,800 s)")
        expect(page.locator("#config tr[data-key=grace] td[data-label=Meaning]")) \
            .to_have_text("silence past the interval before a host is DOWN (s)")
        assert (watch.dialogs, watch.errors) == ([], [])
    finally:
        context.close()


def test_maintenance_and_silences_made_and_ended_in_the_ui(ui: tuple[Page, Watch],
                                                           site: Site) -> None:
    """A manager makes a window for their host on /operations (the host shows it on /live),
    is refused one by glob, silences a metric, then ends both; the changes carry the CSRF
    token of the cookie session."""
    page, watch = ui
    site.send({"ID": "HTB", "name": "ui-ops", "interval": 3600})  # never DOWN in the module
    wait_until(lambda: site.request("/api/0/hosts/ui-ops")[0] == 200)
    site.log_in(page, "mike")
    page.goto(site.base + "/operations")
    _live(page)
    form = page.locator("#window-form")
    form.locator("input[name=hosts]").fill("ui-*")
    form.locator("input[name=comment]").fill("kernel")
    page.click("#window-save")
    expect(page.locator("#window-error")).to_contain_text("only an admin may make a "
                                                          "maintenance window by glob or tag")
    assert watch.errors == [f"403 {site.base}/api/0/maintenance"]
    watch.errors.clear()
    form.locator("input[name=hosts]").fill("ui-ops")
    page.click("#window-save")
    row = page.locator("#windows tr[data-active=yes]")
    expect(row).to_contain_text("ui-ops")
    expect(row).to_contain_text("kernel")
    (window,) = [w for w in site.api("/api/0/maintenance")["windows"]
                 if w["hosts"] == ["ui-ops"]]
    assert (window["author"], window["active"]) == ("mike", True)
    silence = page.locator("#silence-form")
    silence.locator("input[name=host]").fill("ui-ops")
    silence.locator("input[name=metric]").fill("cpu_monitor.*")
    silence.locator("input[name=comment]").fill("load test")
    page.click("#silence-save")
    silenced = page.locator("#silences tr[data-state=active]")
    expect(silenced).to_contain_text("load test")
    page.goto(site.base + "/live")
    _live(page)
    marker = page.locator("tr[data-host='ui-ops'] [data-marker=maintenance]")
    expect(marker).to_have_count(1)
    status, _ = site.server.request("DELETE", f"/api/0/maintenance/{window['id']}",
                                    headers={"Authorization": f"Bearer {site.token('mike')}"})
    assert status == 200
    expect(marker).to_have_count(0)  # the window's end came over the feed
    assert site.api("/api/0/hosts/ui-ops")["in_maintenance"] is False
    page.goto(site.base + "/operations")
    expect(page.locator(f"#windows tr[data-window='{window['id']}']")).to_have_count(0)
    silenced.get_by_role("button", name="End now").click()
    expect(page.locator("#silences tr[data-state=expired]")).to_contain_text("by mike")


def test_acknowledged_from_the_alerts_page(ui: tuple[Page, Watch], site: Site) -> None:
    """A manager acknowledges an alert on /alerts with a comment: the row says who; taking
    it back clears it. The acknowledgement is the API's (reminders stop)."""
    page, _ = ui
    site.send({"ID": "PLG", "name": "ui-ops", "plugins": {"cpu_monitor": {"cpu_percent": 95.0}}})
    site.log_in(page, "mike")
    page.goto(site.base + "/alerts")
    _live(page)
    row = page.locator("#alerts tr[data-host='ui-ops'][data-kind=metric]")
    expect(row).to_have_attribute("data-level", "CRITICAL")
    row.get_by_role("button", name="Acknowledge").click()
    row.locator("input[name=comment]").fill("on it")
    row.get_by_role("button", name="OK").click()
    expect(row.locator("[data-marker=acknowledged]")).to_have_count(1)
    (alert,) = [a for a in site.api("/api/0/alerts")["alerts"] if a["host"] == "ui-ops"]
    assert (alert["acknowledged"]["by"], alert["acknowledged"]["comment"]) == ("mike", "on it")
    row.get_by_role("button", name="Take back").click()
    expect(row.locator("[data-marker=acknowledged]")).to_have_count(0)
    expect(row.get_by_role("button", name="Acknowledge")).to_have_count(1)
    site.send({"ID": "PLG", "name": "ui-ops", "plugins": {"cpu_monitor": {"cpu_percent": 5.0}}})
    expect(row).to_have_count(0)


def test_unreachable_behind_a_down_parent(ui: tuple[Page, Watch], site: Site) -> None:
    """A host silent behind its down parent is UNREACHABLE on /live and a problem of its own
    kind on /alerts, without a reload."""
    page = _open_live(ui, site, "alice")
    for name in ("ui-router", "ui-child"):
        site.send({"ID": "HTB", "name": name, "interval": 1})
    child = page.locator("tr[data-host='ui-child']")
    expect(child.locator(".state")).to_have_text("UNREACHABLE")
    expect(page.locator("tr[data-host='ui-router'] .state")).to_have_text("DOWN")
    page.goto(site.base + "/alerts")
    _live(page)
    problem = page.locator("#alerts tr[data-host='ui-child'][data-kind=host]")
    expect(problem).to_have_attribute("data-level", "UNKNOWN")
    expect(problem.locator("td[data-label=Problem]")).to_have_text("host UNREACHABLE")
    for name in ("ui-router", "ui-child"):
        site.send({"ID": "HTB", "name": name, "interval": 3600})  # not DOWN again later
    expect(problem).to_have_count(0)


def test_a_window_by_glob_marks_live_hosts_as_it_opens_and_ends(ui: tuple[Page, Watch],
                                                                 site: Site) -> None:
    """An admin's window of a glob (its events name no host) marks the hosts it covers on
    /live when it opens, and unmarks them when it ends, without a reload."""
    for name in ("ui-glob1", "ui-glob2", "ui-other"):
        site.send({"ID": "HTB", "name": name, "interval": 3600})  # never DOWN in the module
    wait_until(lambda: site.request("/api/0/hosts/ui-other")[0] == 200)
    page = _open_live(ui, site, "alice")
    covered = page.locator("tr[data-host^='ui-glob'] [data-marker=maintenance]")
    expect(covered).to_have_count(0)
    bearer = {"Authorization": f"Bearer {site.token('alice')}"}
    status, window = site.server.request("POST", "/api/0/maintenance", {
        "hosts": ["ui-glob[0-9]"], "start": time.time() - 1, "duration": "1h"}, headers=bearer)
    assert status == 201
    expect(covered).to_have_count(2)
    expect(page.locator("tr[data-host='ui-other'] [data-marker=maintenance]")).to_have_count(0)
    status, _ = site.server.request("DELETE", f"/api/0/maintenance/{window['id']}",
                                    headers=bearer)
    assert status == 200
    expect(covered).to_have_count(0)
