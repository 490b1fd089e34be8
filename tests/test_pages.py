"""The pages' server side: login form, redirects, roles, headers, templates and /static."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from heartbeat.config.server import HostConfig, ServerConfig
from heartbeat.server.compose import make_pages
from heartbeat.server.web.pages import (
    PACKAGED_STATIC,
    PACKAGED_TEMPLATES,
    PAGE_CSP,
    Templates,
    safe_next,
)
from tests.apistack import Response, Stack, user

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True),
                                   "bob": user("bob-password"),
                                   "carol": user("carol-password")},
                  hosts={"web1": HostConfig(monitors=["bob"], managers=["carol"])})
    stack.heartbeat("web1")
    stack.heartbeat("web2")
    yield stack
    stack.close()


@pytest.fixture
def open_stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path)
    yield stack
    stack.close()


def _post_login(stack: Stack, headers: dict[str, str] | None = None,
                **fields: str) -> Response:
    return stack.call("POST", "/login", raw=urlencode(fields).encode(),
                      headers={**FORM, **(headers or {})})


def _cookie(stack: Stack, name: str) -> str:
    response = stack.login(name)
    assert response.status == 200, response
    token: str = response.json["token"]
    return token


def test_pages_send_a_browser_without_session_to_the_login(stack: Stack) -> None:
    """Every page answers 303 to /login?next=<the page> without a session."""
    for path in ("/live", "/alerts", "/jobs", "/settings", "/plugins/web1?range=3600"):
        response = stack.call("GET", path)
        assert (response.status, response.header("location")) == (
            303, "/login?next=" + path.replace("/", "%2F").replace("?", "%3F")
            .replace("=", "%3D")), path


def test_login_form_sets_the_cookie_and_returns(stack: Stack) -> None:
    """A right name and password set the HttpOnly session cookie and go back to next."""
    response = _post_login(stack, username="alice", password="alice-password",
                           next="/plugins/web1")
    assert (response.status, response.header("location")) == (303, "/plugins/web1")
    morsel = response.cookies()["hb_session"]
    assert (bool(morsel.value), morsel["httponly"], morsel["samesite"]) == (True, True, "strict")
    page = stack.call("GET", "/plugins/web1", cookie=morsel.value)
    assert page.status == 200
    assert 'data-host="web1"' in page.text


def test_login_form_refuses_a_wrong_password(stack: Stack) -> None:
    """A wrong password shows the form again with an error (401) and sets no cookie."""
    response = _post_login(stack, username="alice", password="wrong-password", next="/alerts")
    assert response.status == 401
    assert "hb_session" not in response.cookies()
    assert "Wrong user name or password." in response.text
    assert 'name="next" value="/alerts"' in response.text
    assert 'value="alice"' in response.text


def test_login_form_from_another_site_is_refused(stack: Stack) -> None:
    """A login POST whose Origin is another site is refused (login CSRF), no cookie."""
    response = _post_login(stack, {"Origin": "http://evil.example"}, username="alice",
                           password="alice-password")
    assert (response.status, "hb_session" in response.cookies()) == (403, False)


def test_login_form_behind_a_tls_proxy_is_accepted(stack: Stack) -> None:
    """Behind a TLS proxy (X-Forwarded-Proto: https) the form's https Origin is our own."""
    proxied = {"Origin": "https://heartbeat.test", "X-Forwarded-Proto": "https"}
    response = _post_login(stack, proxied, username="alice", password="alice-password",
                           next="/alerts")
    assert (response.status, response.header("location")) == (303, "/alerts")
    assert response.cookies()["hb_session"]["secure"] is True
    downgraded = _post_login(stack, {"Origin": "http://heartbeat.test",
                                     "X-Forwarded-Proto": "https"},
                             username="alice", password="alice-password")
    assert (downgraded.status, "hb_session" in downgraded.cookies()) == (403, False)


def test_login_form_page(stack: Stack) -> None:
    """GET /login shows the form (no error) with next kept, escaped."""
    response = stack.call("GET", "/login?next=%2Falerts%3Fa%3D%22x")
    assert response.status == 200
    assert 'name="next" value="/alerts?a=&quot;x"' in response.text
    assert re.search(r'id="login-error" role="alert" hidden>', response.text)


@pytest.mark.parametrize(("target", "expected"), [
    ("/plugins/web1", "/plugins/web1"),
    ("/alerts?level=CRITICAL", "/alerts?level=CRITICAL"),
    (None, "/live"),
    ("", "/live"),
    ("//evil.example/x", "/live"),
    ("https://evil.example/", "/live"),
    ("/\\evil.example", "/live"),
    ("javascript:alert(1)", "/live"),
    ("/login?next=/x", "/live"),
    ("/live\r\nSet-Cookie: x=1", "/live"),
])
def test_safe_next(target: str | None, expected: str) -> None:
    """Only a same-site path is followed after a login; anything else goes home."""
    assert safe_next(target) == expected


def test_unauthenticated_mode_needs_no_login(open_stack: Stack) -> None:
    """With no users: / and /login go to /live, and /live is served at once."""
    assert (open_stack.call("GET", "/").status, open_stack.call("GET", "/").header("location")) \
        == (303, "/live")
    login = open_stack.call("GET", "/login?next=%2Fsettings")
    assert (login.status, login.header("location")) == (303, "/settings")
    live = open_stack.call("GET", "/live")
    assert live.status == 200
    assert 'data-page="live"' in live.text and 'data-auth="off"' in live.text


def test_host_overview_is_for_owners_and_managers(stack: Stack) -> None:
    """A manager and an admin get the overview; a monitor 403; no role or no host 404."""
    carol, bob, alice = (_cookie(stack, n) for n in ("carol", "bob", "alice"))
    assert stack.call("GET", "/plugins/web1", cookie=carol).status == 200
    assert stack.call("GET", "/plugins/web2", cookie=alice).status == 200
    denied = stack.call("GET", "/plugins/web1", cookie=bob)
    assert denied.status == 403 and "Not yours to inspect" in denied.text
    assert "<title>403 Not yours to inspect · heartbeat</title>" in denied.text
    assert "<title>web1 · heartbeat</title>" in stack.call("GET", "/plugins/web1",
                                                            cookie=carol).text
    for cookie, path in ((bob, "/plugins/web2"), (carol, "/plugins/web2"),
                         (alice, "/plugins/nowhere")):
        response = stack.call("GET", path, cookie=cookie)
        assert response.status == 404 and "No such host" in response.text, path
        assert "<title>404 No such host · heartbeat</title>" in response.text, path


def test_page_headers(stack: Stack) -> None:
    """Pages are HTML, never cached, and carry the CSP that forbids inline script."""
    response = stack.call("GET", "/live", cookie=_cookie(stack, "alice"))
    assert (response.header("content-type"), response.header("cache-control"),
            response.header("content-security-policy"),
            response.header("x-content-type-options")) == (
        "text/html; charset=utf-8", "no-store", PAGE_CSP, "nosniff")
    assert "script-src 'self';" in PAGE_CSP and "unsafe-inline" not in PAGE_CSP


def test_names_in_pages_are_escaped(stack: Stack) -> None:
    """A name taken from the URL is escaped in the page (here the 404 text)."""
    response = stack.call("GET", "/plugins/%3Cimg%20src=x%20onerror=alert(1)%3E",
                          cookie=_cookie(stack, "alice"))
    assert response.status == 404
    assert "<img src=x" not in response.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in response.text


def test_unknown_paths_stay_json_errors(stack: Stack) -> None:
    """Paths that are neither pages nor API still answer the API's JSON 404."""
    response = stack.call("GET", "/nothing/here")
    assert (response.status, response.json) == (
        404, {"error": "not_found", "detail": "no endpoint /nothing/here"})


def test_static_files(stack: Stack) -> None:
    """Scripts and styles are served with their types; no directory listing, no escape."""
    script = stack.call("GET", "/static/ui.js")
    assert (script.status, script.header("content-type"), script.header("cache-control")) == (
        200, "text/javascript; charset=utf-8", "no-cache")
    assert stack.call("GET", "/static/heartbeat.css").header("content-type") == \
        "text/css; charset=utf-8"
    assert stack.call("GET", "/static/").status == 404
    assert stack.call("GET", "/static/..%2Fpages.py").status == 404
    assert stack.call("GET", "/static/nope.js").status == 404
    etag = script.header("etag")
    again = stack.call("GET", "/static/ui.js", headers={"If-None-Match": etag or ""})
    assert (again.status, again.raw) == (304, b"")


def test_every_asset_a_page_or_module_names_exists() -> None:
    """Each /static/ URL in the templates and each module import resolves to a file."""
    names = set()
    for template in PACKAGED_TEMPLATES.glob("*.html"):
        names |= set(re.findall(r'/static/([\w.-]+)', template.read_text()))
    for script in PACKAGED_STATIC.glob("*.js"):
        names |= set(re.findall(r'(?:from |import\()"\./([\w.-]+)"', script.read_text()))
    assert {"ui.js", "heartbeat.css", "common.js", "chart.js", "uPlot.esm.js", "live.js",
            "theme-boot.js"} <= names
    assert sorted(n for n in names if not (PACKAGED_STATIC / n).is_file()) == []


def test_ui_code_never_writes_markup() -> None:
    """No script builds markup from strings, no template has inline script, style or handlers."""
    for script in PACKAGED_STATIC.glob("*.js"):
        text = script.read_text()
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                       "eval(", "new Function", '"style"', "setAttribute(\"on"):
            assert banned not in text, (script.name, banned)
    for template in PACKAGED_TEMPLATES.glob("*.html"):
        text = template.read_text()
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", text) == [], template.name
        assert re.findall(r"\s(style|on\w+)\s*=", text) == [], template.name


def test_templates_dir_overrides_one_template(tmp_path: Path) -> None:
    """A template in templates_dir replaces the packaged one; the others stay packaged."""
    (tmp_path / "live.html").write_text("<h1>Our own $$live</h1>")
    templates = Templates(tmp_path)
    assert templates.render("live") == "<h1>Our own $live</h1>"
    assert templates.render("message", heading="<b>", detail="d") == \
        Templates().render("message", heading="<b>", detail="d")
    assert "&lt;b&gt;" in templates.render("message", heading="<b>", detail="d")


def test_missing_templates_dir_stops_startup(tmp_path: Path, open_stack: Stack) -> None:
    """A templates_dir that is not a directory stops start-up with one line naming the key."""
    config = ServerConfig(templates_dir=str(tmp_path / "nope"))
    with pytest.raises(SystemExit) as stopped:
        make_pages(config, open_stack.web_auth, open_stack.registry)
    assert str(stopped.value) == (f"heartbeat: templates_dir: cannot read the templates: "
                                  f"{tmp_path / 'nope'} is not a directory")


def test_settings_config_is_admin_only_and_masked(tmp_path: Path) -> None:
    """GET /api/0/config: admins only; secrets masked, every key with its default."""
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True),
                                   "bob": user("bob-password")})
    config = ServerConfig(hb_port=4000, keys={"k1": "shared-secret"})
    stack.api.config, stack.api.config_path = config, "/etc/hb.yaml"
    try:
        assert stack.call("GET", "/api/0/config").status == 401
        assert stack.call("GET", "/api/0/config", token=stack.token("bob")).status == 403
        response = stack.call("GET", "/api/0/config", token=stack.token("alice"))
        assert response.status == 200
        assert "shared-secret" not in response.raw.decode()
        keys = {row["key"]: row for row in response.json["keys"]}
        assert response.json["path"] == "/etc/hb.yaml"
        assert keys["hb_port"] == {"key": "hb_port", "value": 4000, "default": 50003,
                                   "changed": True, "doc": "UDP port for heartbeats",
                                   "unit": None, "secret": False}
        assert (keys["history_retention"]["unit"], keys["journal_max_size"]["unit"]) == (
            "seconds", "bytes")
        assert keys["keys"] == {"key": "keys", "value": {"k1": "********"}, "default": {},
                                "changed": True,
                                "doc": "shared keys by id for signed datagrams", "unit": None,
                                "secret": True}
    finally:
        stack.close()


def test_history_since_limits_the_range(stack: Stack) -> None:
    """?since= returns only the samples received at or after that time."""
    for value in (1, 2, 3):
        stack.send({"ID": "PLG", "name": "web1", "plugins": {"cpu": {"v": value}}})
        stack.clock.advance(10)
    start = stack.clock.seconds() - 30
    token = stack.token("alice")
    response = stack.call("GET", f"/api/0/hosts/web1/plugins/cpu?since={start + 10}", token=token)
    assert response.json == {"host": "web1", "plugin": "cpu", "samples": [
        {"ts": start + 20, "data": {"v": 3}}, {"ts": start + 10, "data": {"v": 2}}]}
    bad = stack.call("GET", "/api/0/hosts/web1/plugins/cpu?since=nan", token=token)
    assert (bad.status, bad.json["error"]) == (400, "bad_request")


def test_users_list_their_roles(stack: Stack) -> None:
    """Each user object lists the user's role per host; admins none (owners of all)."""
    users = stack.call("GET", "/api/0/users", token=stack.token("alice")).json["users"]
    assert {u["name"]: (u["default_role"], u["roles"]) for u in users} == {
        "alice": ("owner", {}), "bob": (None, {"web1": "monitor"}),
        "carol": (None, {"web1": "manager"})}
