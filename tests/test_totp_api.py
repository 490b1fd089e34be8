"""Second factors through the API: enrol with a confirm step, log in with a code once,
recovery codes, the policy that requires it, removal, restarts, and the reset tool."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heartbeat.server.access import HostAccess
from heartbeat.server.sessions import LoginThrottle
from heartbeat.server.totp import code_at, step_at
from tests.apistack import Stack, user

USERS = {"alice": user("alice-password", admin=True), "bob": user("bob-password"),
         "carol": user("carol-password")}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, users=USERS, throttle=LoginThrottle(free_attempts=3))
    stack.heartbeat("web1")
    stack.auth.set_access("web1", HostAccess("alice", ("bob",), ()))
    yield stack
    stack.close()


def _code(stack: Stack, secret: str, steps_later: int = 0) -> str:
    return code_at(secret, step_at(stack.clock.seconds()) + steps_later)


def _enrol(stack: Stack, name: str) -> tuple[str, list[str]]:
    """Enrol ``name``'s second factor as the page does: (its secret, the recovery codes)."""
    token = stack.token(name)
    started = stack.call("POST", f"/api/0/users/{name}/totp", token=token)
    assert started.status == 201, started
    secret = started.json["secret"]
    done = stack.call("POST", f"/api/0/users/{name}/totp/confirm",
                      {"code": _code(stack, secret)}, token=token)
    assert done.status == 200, done
    stack.clock.advance(30)  # the code that confirmed is spent: the next login needs another
    return secret, done.json["recovery_codes"]


def _login(stack: Stack, name: str, code: str | None = None) -> Any:
    body = {"username": name, "password": f"{name}-password"}
    if code is not None:
        body["totp"] = code
    return stack.call("POST", "/api/0/auth/login", body)


def test_enrolment_needs_a_matching_code_and_gives_recovery_codes_once(stack: Stack) -> None:
    """Start gives a secret, otpauth URI and a local SVG QR code; a wrong code is refused;
    the right one enrols and hands out ten recovery codes."""
    token = stack.token("bob")
    started = stack.call("POST", "/api/0/users/bob/totp", token=token).json
    assert started["uri"] == (f"otpauth://totp/heartbeat%20heartbeat.test%3Abob?secret="
                              f"{started['secret']}&issuer=heartbeat+heartbeat.test&algorithm="
                              f"SHA1&digits=6&period=30")
    assert started["qr"].startswith("data:image/svg+xml;charset=utf-8,")
    wrong = stack.call("POST", "/api/0/users/bob/totp/confirm",
                       {"code": _code(stack, started["secret"], 5)}, token=token)
    assert (wrong.status, wrong.json["error"]) == (400, "invalid_totp")
    assert stack.call("GET", "/api/0/users/bob/totp", token=token).json["enrolled"] is False
    done = stack.call("POST", "/api/0/users/bob/totp/confirm",
                      {"code": _code(stack, started["secret"])}, token=token).json
    assert len(set(done["recovery_codes"])) == 10
    assert {k: done[k] for k in ("enrolled", "recovery_codes_left", "required", "policy")} == {
        "enrolled": True, "recovery_codes_left": 10, "required": False, "policy": "off"}
    again = stack.call("POST", "/api/0/users/bob/totp", token=token)
    assert (again.status, again.json["error"]) == (409, "totp_enrolled")
    conn = sqlite3.connect(stack.path)
    stack.store.flush()
    (stored,) = conn.execute("SELECT recovery FROM totp WHERE user = 'bob'").fetchone()
    conn.close()
    assert not any(code in stored for code in done["recovery_codes"])


def test_login_needs_the_code_and_each_code_works_once(stack: Stack) -> None:
    """No code: totp_required; a wrong one: invalid_totp; the right one logs in; the same
    code again is refused, the next step's code is taken."""
    secret, _ = _enrol(stack, "bob")
    assert _login(stack, "bob").json["error"] == "totp_required"
    assert _login(stack, "bob", _code(stack, secret, 7)).json["error"] == "invalid_totp"
    code = _code(stack, secret)
    ok = _login(stack, "bob", code)
    assert ok.status == 200 and ok.json["totp_enrolment_required"] is False
    replay = _login(stack, "bob", code)
    assert (replay.status, replay.json["error"]) == (401, "invalid_totp")
    stack.clock.advance(30)
    assert _login(stack, "bob", _code(stack, secret)).status == 200


def test_wrong_codes_are_throttled_like_passwords(stack: Stack) -> None:
    """Wrong codes count against the name: past the free attempts even the right code waits."""
    secret, _ = _enrol(stack, "bob")
    statuses = [_login(stack, "bob", "000000" if _code(stack, secret) != "000000"
                       else "111111").status for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    assert _login(stack, "bob", _code(stack, secret)).status == 429


def test_recovery_code_works_once_and_can_be_renewed(stack: Stack) -> None:
    """A recovery code logs in once; new codes (for a current code) replace the old ones."""
    secret, codes = _enrol(stack, "bob")
    assert _login(stack, "bob", codes[0]).status == 200
    assert _login(stack, "bob", codes[0]).json["error"] == "invalid_totp"
    token = _login(stack, "bob", codes[1]).json["token"]
    status = stack.call("GET", "/api/0/users/bob/totp", token=token).json
    assert status["recovery_codes_left"] == 8
    renewed = stack.call("POST", "/api/0/users/bob/totp/recovery",
                         {"code": _code(stack, secret)}, token=token).json["recovery_codes"]
    assert _login(stack, "bob", codes[2]).json["error"] == "invalid_totp"
    assert _login(stack, "bob", renewed[0]).status == 200


def test_policy_privileged_restricts_managers_until_they_enrol(stack: Stack) -> None:
    """privileged: bob (a manager) gets a session that may only enrol; carol (no role) is
    free; all: carol too. Enrolling lifts the restriction of the waiting session."""
    admin = stack.token("alice")
    policy = stack.call("PUT", "/api/0/auth/policy", {"totp_required": "privileged"},
                        token=admin)
    assert policy.json == {"totp_required": "privileged", "source": "api"}
    login = _login(stack, "bob").json
    assert login["totp_enrolment_required"] is True
    bob = login["token"]
    refused = stack.call("GET", "/api/0/hosts", token=bob)
    assert (refused.status, refused.json["error"]) == (403, "totp_enrolment_required")
    me = stack.call("GET", "/api/0/me", token=bob).json
    assert (me["totp_enrolment_required"], me["totp"]["required"]) == (True, True)
    assert _login(stack, "carol").json["totp_enrolment_required"] is False
    started = stack.call("POST", "/api/0/users/bob/totp", token=bob).json
    stack.call("POST", "/api/0/users/bob/totp/confirm",
               {"code": _code(stack, started["secret"])}, token=bob)
    assert stack.call("GET", "/api/0/hosts", token=bob).status == 200
    stack.call("PUT", "/api/0/auth/policy", {"totp_required": "all"}, token=admin)
    assert _login(stack, "carol").json["totp_enrolment_required"] is True
    assert stack.call("DELETE", "/api/0/auth/policy", token=admin).json == {
        "totp_required": "off", "source": "config"}


def test_removal_by_the_user_needs_a_code_by_an_admin_none(stack: Stack) -> None:
    """The user removes theirs with a current code; an admin removes anyone's without."""
    secret, _ = _enrol(stack, "bob")
    token = _login(stack, "bob", _code(stack, secret)).json["token"]
    stack.clock.advance(30)
    no = stack.call("DELETE", "/api/0/users/bob/totp", {"code": "123"}, token=token)
    assert (no.status, no.json["error"]) == (400, "invalid_totp")
    yes = stack.call("DELETE", "/api/0/users/bob/totp", {"code": _code(stack, secret)},
                     token=token)
    assert yes.json["enrolled"] is False
    assert _login(stack, "bob").status == 200
    _enrol(stack, "bob")
    assert stack.call("DELETE", "/api/0/users/bob/totp", token=stack.token("alice")).status \
        == 200
    assert _login(stack, "bob").status == 200


def test_enrolment_and_spent_step_survive_a_restart(stack: Stack) -> None:
    """After a restart the user still needs a code, and the code used before it is spent."""
    secret, _ = _enrol(stack, "bob")
    code = _code(stack, secret)
    assert _login(stack, "bob", code).status == 200
    again = stack.restarted()
    try:
        assert _login(again, "bob").json["error"] == "totp_required"
        assert _login(again, "bob", code).json["error"] == "invalid_totp"
    finally:
        again.close()


def test_removing_the_row_behind_the_servers_back_takes_effect_at_the_next_login(
        stack: Stack) -> None:
    """What heartbeat passwd --reset-totp does (delete the row) is seen by the next login."""
    _enrol(stack, "bob")
    stack.store.flush()
    conn = sqlite3.connect(stack.path)
    conn.execute("DELETE FROM totp WHERE user = 'bob'")
    conn.commit()
    conn.close()
    assert _login(stack, "bob").status == 200
    assert stack.call("GET", "/api/0/users/bob/totp",
                      token=stack.token("alice")).json["enrolled"] is False


def test_api_keys_need_no_second_factor_and_cannot_touch_it(stack: Stack) -> None:
    """A key made by an enrolled user works without a code, and is refused on /totp."""
    secret, _ = _enrol(stack, "bob")
    session = _login(stack, "bob", _code(stack, secret)).json["token"]
    key = stack.call("POST", "/api/0/users/bob/keys", {"name": "k", "scope": "rw"},
                     token=session).json["token"]
    assert stack.call("GET", "/api/0/hosts", token=key).status == 200
    assert stack.call("GET", "/api/0/users/bob/totp", token=key).json["error"] == \
        "key_not_allowed"


def test_restricted_session_gets_no_feed(stack: Stack) -> None:
    """A session that must enrol first is refused the WebSocket feed (403)."""
    from heartbeat.server.web.errors import ApiError

    stack.call("PUT", "/api/0/auth/policy", {"totp_required": "all"}, token=stack.token("alice"))
    token = _login(stack, "carol").json["token"]
    with pytest.raises(ApiError) as refused:
        stack.web_auth.feed_viewer({}, {"token": [token]}, "heartbeat.test")
    assert (refused.value.status, refused.value.code) == (403, "totp_enrolment_required")
