"""Logins, sessions, throttling, CSRF and the unauthenticated mode, through the real API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.logger import globalLogPublisher

from heartbeat.passwords import parse_hash
from heartbeat.server import auth as auth_module
from heartbeat.server.sessions import LoginThrottle
from heartbeat.server.web.auth import COOKIE
from tests.apistack import FAST, Stack, fired, user

IDLE = 3600.0


@pytest.fixture
def stack(tmp_path: Any) -> Iterator[Stack]:
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True),
                                   "bob": user("bob-password")},
                  idle_timeout=IDLE, throttle=LoginThrottle(free_attempts=3, base_delay=2.0,
                                                            max_delay=60.0))
    stack.heartbeat("web1")
    yield stack
    stack.close()


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """Formatted log lines emitted during the test."""
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        from twisted.logger import formatEvent

        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def test_login_returns_token_and_strict_cookie(stack: Stack) -> None:
    """A login answers the token, CSRF token and user, and sets an HttpOnly strict cookie."""
    response = stack.login("alice")
    assert response.status == 200
    body = response.json
    assert set(body) == {"token", "csrf_token", "user", "idle_timeout", "totp_enrolment_required"}
    assert body["totp_enrolment_required"] is False
    assert body["user"] == {"name": "alice", "full_name": "", "avatar": None, "admin": True,
                            "email": None, "notification_channels": [], "pushover_user": None,
                    "mattermost_user": None,
                            "signal_number": None, "has_password": True}
    assert body["idle_timeout"] == IDLE
    morsel = response.cookies()[COOKIE]
    assert morsel.value == body["token"]
    assert (morsel["httponly"], morsel["samesite"].lower(), morsel["path"], morsel["secure"]) \
        == (True, "strict", "/", "")


def test_cookie_is_secure_over_tls(stack: Stack) -> None:
    """Served over TLS, the session cookie also carries Secure."""
    response = stack.call("POST", "/api/0/auth/login",
                          {"username": "alice", "password": "alice-password"}, secure=True)
    assert response.cookies()[COOKIE]["secure"] is True


def test_bearer_and_cookie_both_authenticate(stack: Stack) -> None:
    """The token works as a bearer header and as the cookie, for the same user."""
    token = stack.token("bob")
    by_bearer = stack.call("GET", "/api/0/me", token=token).json
    by_cookie = stack.call("GET", "/api/0/me", cookie=token).json
    assert (by_bearer["name"], by_bearer["auth"]) == ("bob", "bearer")
    assert (by_cookie["name"], by_cookie["auth"]) == ("bob", "cookie")


@pytest.mark.parametrize("header", ["Bearer nonsense", "Basic YWxpY2U6eA==", "Bearer "])
def test_bad_authorization_is_401(stack: Stack, header: str) -> None:
    """An unknown token or another scheme is 401, never a fallback to the cookie."""
    token = stack.token("alice")
    response = stack.call("GET", "/api/0/hosts", headers={"Authorization": header},
                          cookie=token)
    assert (response.status, response.json["error"]) == (401, "unauthenticated")


def test_logout_ends_session_and_clears_cookie(stack: Stack) -> None:
    """After logout the token is refused and the cookie is expired."""
    token = stack.token("bob")
    response = stack.call("POST", "/api/0/auth/logout", token=token)
    assert (response.status, response.json) == (200, {"logged_out": True})
    cleared = response.cookies()[COOKIE]
    assert (cleared.value, cleared["max-age"]) == ("", "0")
    assert stack.call("GET", "/api/0/me", token=token).status == 401


def test_session_expires_when_idle(stack: Stack) -> None:
    """Use keeps a session alive; idle past session_idle_timeout it is gone."""
    token = stack.token("bob")
    for _ in range(3):
        stack.clock.advance(IDLE - 1)
        assert stack.call("GET", "/api/0/me", token=token).status == 200
    stack.clock.advance(IDLE + 1)
    response = stack.call("GET", "/api/0/me", token=token)
    assert (response.status, response.json["detail"]) == (
        401, "the token is unknown or has expired: log in again")
    assert len(stack.auth.sessions) == 0


def test_idle_sessions_are_swept_and_deleted_from_store(stack: Stack) -> None:
    """The expiry sweep ends idle sessions in memory and in the store."""
    stack.token("bob")
    stack.auth.startService()
    stack.clock.advance(IDLE + stack.auth.sweep_interval)
    stack.auth.stopService()
    stack.store.flush()
    rows = stack.store.backend.conn.execute(  # type: ignore[attr-defined]
        "SELECT COUNT(*) FROM sessions").fetchone()[0]
    assert (len(stack.auth.sessions), rows) == (0, 0)


def test_session_survives_restart(stack: Stack) -> None:
    """Sessions live in the store: after a restart the same token still works."""
    token = stack.token("bob")
    again = stack.restarted()
    try:
        assert again.call("GET", "/api/0/me", token=token).json["name"] == "bob"
    finally:
        again.close()


def test_session_idle_across_restart_is_refused(stack: Stack) -> None:
    """A session that went idle while the server was down does not come back."""
    token = stack.token("bob")
    stack.clock.advance(IDLE + 1)
    again = stack.restarted()
    try:
        assert again.call("GET", "/api/0/me", token=token).status == 401
    finally:
        again.close()


def test_wrong_password_and_unknown_user_look_alike(stack: Stack, monkeypatch: Any) -> None:
    """Both fail 401 with the same body, each after one hash of the same cost."""
    costs: list[int] = []
    real = auth_module.verify_password

    def spy(password: str, encoded: str, *args: Any) -> bool:
        costs.append(parse_hash(encoded, 1).iterations)
        return real(password, encoded, *args)

    monkeypatch.setattr(auth_module, "verify_password", spy)
    wrong = stack.login("alice", "not-her-password")
    unknown = stack.login("mallory", "not-her-password")
    assert (wrong.status, wrong.json) == (unknown.status, unknown.json) == (
        401, {"error": "invalid_credentials", "detail": "wrong user name or password"})
    assert costs == [FAST, FAST]


def test_failed_logins_back_off_per_user(stack: Stack, logged: list[str]) -> None:
    """After the free attempts each failure blocks the name longer; 429 has Retry-After."""
    statuses = [stack.login("alice", "guess").status for _ in range(3)]
    assert statuses == [401, 401, 401]
    blocked = stack.login("alice")  # even the right password waits
    assert (blocked.status, blocked.json["error"], blocked.header("Retry-After")) == (
        429, "too_many_attempts", "2")
    stack.clock.advance(2)
    assert stack.login("alice", "guess").status == 401  # 4th failure: 4 s
    stack.clock.advance(3)
    assert stack.login("alice").header("Retry-After") == "1"
    stack.clock.advance(1)
    assert stack.login("alice").status == 200
    assert any("failed login for 'alice' from 127.0.0.1" in line for line in logged)
    assert any("login for 'alice' from 127.0.0.1 throttled" in line for line in logged)


@pytest.mark.parametrize("name", ["bob", "nobody"])
def test_throttle_counts_unknown_names_like_known_ones(stack: Stack, name: str) -> None:
    """Guessing a name that does not exist is throttled exactly like a real one."""
    responses = [stack.login(name, "guess") for _ in range(4)]
    assert [(r.status, r.json, r.header("Retry-After")) for r in responses] == [
        *[(401, {"error": "invalid_credentials", "detail": "wrong user name or password"},
           None)] * 3,
        (429, {"error": "too_many_attempts", "detail": "too many failed logins: retry in 2s"},
         "2")]


def test_failed_logins_back_off_per_address(tmp_path: Any) -> None:
    """Spreading guesses over many names from one address still hits the address's limit."""
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True)},
                  throttle=LoginThrottle(free_attempts=3))
    statuses = [stack.login(f"name{i}", "guess").status for i in range(4)]
    stack.close()
    assert statuses == [401, 401, 401, 429]


def test_success_resets_the_name_counter(stack: Stack) -> None:
    """A successful login forgets that name's earlier failures."""
    for _ in range(2):
        stack.login("bob", "guess")
    assert stack.login("bob").status == 200
    assert stack.auth.throttle.failures("user:bob") == 0


def test_cookie_change_without_csrf_proof_is_refused(stack: Stack) -> None:
    """A cookie-authenticated POST needs X-CSRF-Token or a same-origin Origin."""
    login = stack.login("alice").json
    cookie, csrf = login["token"], login["csrf_token"]
    body = {"cmd": "uptime"}
    path = "/api/0/hosts/web1/commands"
    refused = stack.call("POST", path, body, cookie=cookie)
    assert (refused.status, refused.json["error"]) == (403, "csrf")
    cross = stack.call("POST", path, body, cookie=cookie,
                       headers={"Origin": "http://evil.test"})
    assert cross.status == 403
    forged = stack.call("POST", path, body, cookie=cookie, headers={"X-CSRF-Token": "x" * 32})
    assert forged.status == 403
    assert stack.call("POST", path, body, cookie=cookie,
                      headers={"X-CSRF-Token": csrf}).status == 202
    assert stack.call("POST", path, body, cookie=cookie,
                      headers={"Origin": "http://heartbeat.test"}).status == 202
    assert stack.call("POST", path, body, token=cookie).status == 202  # bearer: no CSRF
    assert stack.call("GET", "/api/0/hosts/web1", cookie=cookie).status == 200  # reads: none


def test_cookie_change_behind_a_tls_proxy_accepts_its_https_origin(stack: Stack) -> None:
    """With X-Forwarded-Proto: https the page's https Origin is same-origin, http is not."""
    cookie = stack.login("alice").json["token"]
    path = "/api/0/hosts/web1/commands"
    https = stack.call("POST", path, {"cmd": "uptime"}, cookie=cookie,
                       headers={"Origin": "https://heartbeat.test", "X-Forwarded-Proto": "https"})
    http = stack.call("POST", path, {"cmd": "uptime"}, cookie=cookie,
                      headers={"Origin": "http://heartbeat.test", "X-Forwarded-Proto": "https"})
    assert (https.status, http.status) == (202, 403)


def test_csrf_token_is_the_sessions(stack: Stack) -> None:
    """Another session's CSRF token does not unlock this session's cookie."""
    mine = stack.login("alice").json
    other = stack.login("alice").json
    response = stack.call("POST", "/api/0/auth/logout", cookie=mine["token"],
                          headers={"X-CSRF-Token": other["csrf_token"]})
    assert response.status == 403
    assert stack.call("GET", "/api/0/me", cookie=mine["token"]).json["csrf_token"] == \
        mine["csrf_token"]


def test_page_viewer_redirects_browsers_to_login(stack: Stack) -> None:
    """The check pages call: no session -> a 303 to /login?next=<page>; a cookie -> the user."""
    from klein import Klein
    from treq.testing import StubTreq

    pages = Klein()

    @pages.route("/live")
    def live(request: Any) -> Any:
        viewer = stack.web_auth.page_viewer(request)
        if viewer is None:
            return stack.web_auth.redirect_to_login(request)
        return f"hello {viewer.name}"

    http = StubTreq(pages.resource())
    anonymous = fired(http.get("http://heartbeat.test/live?x=1", allow_redirects=False))
    assert (anonymous.code, anonymous.headers.getRawHeaders("location")) == (
        303, ["/login?next=%2Flive%3Fx%3D1"])
    token = stack.token("bob")
    known = fired(http.get("http://heartbeat.test/live", cookies={COOKIE: token}))
    assert (known.code, fired(http.content(known))) == (200, b"hello bob")


def test_deleted_user_loses_sessions(stack: Stack) -> None:
    """Deleting a user ends their sessions at once."""
    bob = stack.token("bob")
    assert stack.call("DELETE", "/api/0/users/bob", token=stack.token("alice")).status == 200
    assert stack.call("GET", "/api/0/me", token=bob).status == 401


# No users configured: the server behaves as before authentication existed.
@pytest.fixture
def open_stack(tmp_path: Any) -> Iterator[Stack]:
    stack = Stack(tmp_path, dns_trigger=lambda host: None)
    stack.heartbeat("web1")
    yield stack
    stack.close()


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("GET", "/api/0/hosts", None, 200),
    ("GET", "/api/0/hosts/web1", None, 200),
    ("GET", "/api/0/status", None, 200),
    ("GET", "/api/0/hosts/web1/access", None, 200),
    ("POST", "/api/0/hosts/web1/commands", {"cmd": "uptime"}, 202),
    ("POST", "/api/0/hosts/web1/dns", None, 202),
    ("POST", "/api/0/hosts/web1/upgrade", None, 202),
    ("GET", "/api/0/users", None, 200),
    ("DELETE", "/api/0/hosts/web1", None, 200),
])
def test_unauthenticated_mode_allows_everything(open_stack: Stack, method: str, path: str,
                                                body: Any, status: int) -> None:
    """With no users every endpoint answers without a token, cookie or CSRF header."""
    response = open_stack.call(method, path, body)
    assert response.status == status, response


def test_unauthenticated_mode_me_and_login(open_stack: Stack) -> None:
    """/me says nobody, all-powerful (owner of every host, none named); a login is
    refused as pointless (409)."""
    me = open_stack.call("GET", "/api/0/me").json
    assert me == {"name": None, "admin": True, "auth": "none", "authentication": False,
                  "default_role": "owner", "roles": {}, "admins": []}
    login = open_stack.login("alice")
    assert (login.status, login.json["error"]) == (409, "auth_disabled")
    host = open_stack.call("GET", "/api/0/hosts").json["hosts"][0]
    assert host["role"] == "owner"


def test_first_user_must_be_admin_then_auth_is_on(open_stack: Stack) -> None:
    """Creating the first user (from the server itself) needs admin: true, and from then on
    logins are required."""
    refused = open_stack.call("POST", "/api/0/users", {"name": "eve", "password": "12345678"},
                              host="localhost")
    assert (refused.status, refused.json["error"]) == (409, "first_user_must_be_admin")
    created = open_stack.call("POST", "/api/0/users",
                              {"name": "root", "password": "root-password", "admin": True},
                              host="localhost")
    assert created.status == 201
    assert open_stack.call("GET", "/api/0/hosts").status == 401
    assert open_stack.login("root", "root-password").status == 200
