"""An answer of 200 means it is on disk: API state changes commit before the answer.

The store is made unable to write the way a read-only or failed disk makes it
(SQLite's ``query_only``: every write fails with SQLITE_READONLY, an
OperationalError like a full or read-only file system's). Each change is then
refused with 503 and nothing changes, in memory or after a restart; once the
store can write again the same change is answered and kept. The real twistd on
a full file system: tests/test_durability_process.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heartbeat.server.registry import MAX_QUEUED_COMMANDS
from heartbeat.server.totp import code_at, step_at
from tests.apistack import Stack, user


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True),
                                   "bob": user("bob-password")}, hosts={})
    stack.heartbeat("web1")
    yield stack
    stack.close()


def read_only(stack: Stack, on: bool) -> None:
    stack.store.backend.conn.execute(  # type: ignore[attr-defined]
        f"PRAGMA query_only = {'ON' if on else 'OFF'}")


def refused(response: Any) -> None:
    assert response.status == 503, response
    assert response.json["error"] == "store_unavailable"
    assert "nothing changed" in response.json["detail"]


CHANGES = [
    ("POST", "/api/0/users", {"name": "carol", "password": "carol-password", "admin": False}),
    ("PUT", "/api/0/users/bob", {"password": "bob-new-password"}),
    ("PUT", "/api/0/users/bob", {"admin": True}),
    ("DELETE", "/api/0/users/bob", None),
    ("PUT", "/api/0/hosts/web1/access", {"owner": "bob", "managers": [], "monitors": []}),
    ("POST", "/api/0/hosts/web1/commands", {"cmd": "uptime"}),
    ("POST", "/api/0/users/alice/keys", {"name": "ci", "scope": "ro"}),
    ("PUT", "/api/0/auth/policy", {"totp_required": "all"}),
]


def _state(stack: Stack) -> Any:
    return (dict(stack.auth.directory.users), stack.auth.directory.access("web1"),
            dict(stack.registry.hosts["web1"].pending), len(stack.auth.keys),
            stack.auth.second.policy, len(stack.auth.sessions))


@pytest.mark.parametrize(("method", "path", "body"), CHANGES)
def test_a_change_the_store_cannot_take_is_refused_whole(stack: Stack, method: str, path: str,
                                                         body: Any) -> None:
    token = stack.token("alice")
    before = _state(stack)
    read_only(stack, True)
    refused(stack.call(method, path, body, token=token))
    assert _state(stack) == before
    read_only(stack, False)
    again = stack.restarted()
    try:
        assert _state(again)[:5] == before[:5]
        token = again.token("alice")
        done = again.call(method, path, body, token=token)
        assert done.status in (200, 201, 202), done
        after = _state(again)[:5]
        assert after != before[:5]
        assert _state(again.restarted())[:5] == after  # and it is on disk
    finally:
        again.close()


def test_logins_and_logouts_need_the_store(stack: Stack) -> None:
    token = stack.token("alice")
    read_only(stack, True)
    refused(stack.login("bob"))
    assert [s.user for s in stack.auth.sessions.sessions.values()] == ["alice"]
    refused(stack.call("POST", "/api/0/auth/logout", token=token))
    assert stack.call("GET", "/api/0/me", token=token).status == 200
    read_only(stack, False)
    assert stack.call("POST", "/api/0/auth/logout", token=token).json == {"logged_out": True}
    assert stack.call("GET", "/api/0/me", token=token).status == 401


def test_a_host_holds_a_bounded_queue_of_commands(stack: Stack) -> None:
    token = stack.token("alice")
    for n in range(MAX_QUEUED_COMMANDS):
        assert stack.call("POST", "/api/0/hosts/web1/commands", {"cmd": f"c{n}"},
                          token=token).status == 202
    full = stack.call("POST", "/api/0/hosts/web1/commands", {"cmd": "more"}, token=token)
    assert (full.status, full.json["error"]) == (409, "queue_full")
    assert len(stack.registry.hosts["web1"].pending) == MAX_QUEUED_COMMANDS


def test_a_second_factor_is_enrolled_only_once_on_disk(stack: Stack) -> None:
    token = stack.token("bob")
    started = stack.call("POST", "/api/0/users/bob/totp", token=token)
    assert started.status == 201, started
    code = {"code": code_at(started.json["secret"], step_at(stack.clock.seconds()))}
    read_only(stack, True)
    refused(stack.call("POST", "/api/0/users/bob/totp/confirm", code, token=token))
    assert not stack.auth.second.enrolled("bob")
    read_only(stack, False)
    confirmed = stack.call("POST", "/api/0/users/bob/totp/confirm", code, token=token)
    assert confirmed.status == 200 and len(confirmed.json["recovery_codes"]) == 10
    read_only(stack, True)
    refused(stack.call("DELETE", "/api/0/users/bob/totp", {"code": confirmed.json[
        "recovery_codes"][0]}, token=token))
    read_only(stack, False)
    again = stack.restarted()
    try:
        assert again.auth.second.enrolled("bob")
    finally:
        again.close()


def _enrolled(stack: Stack, name: str) -> tuple[str, list[str]]:
    token = stack.token(name)
    started = stack.call("POST", f"/api/0/users/{name}/totp", token=token)
    secret = started.json["secret"]
    confirmed = stack.call("POST", f"/api/0/users/{name}/totp/confirm",
                           {"code": code_at(secret, step_at(stack.clock.seconds()))}, token=token)
    assert confirmed.status == 200, confirmed
    stack.clock.advance(30)  # the confirming code is spent
    return secret, confirmed.json["recovery_codes"]


def test_a_login_the_store_refuses_spends_no_code(stack: Stack) -> None:
    """A code (TOTP or recovery) sent with a login whose session the store could not take
    (503) is not spent: the same code logs in once the store can write, then only once."""
    secret, recovery = _enrolled(stack, "bob")
    for code in (code_at(secret, step_at(stack.clock.seconds())), recovery[0]):
        login = {"username": "bob", "password": "bob-password", "totp": code}
        read_only(stack, True)
        failed = stack.call("POST", "/api/0/auth/login", login)
        assert (failed.status, failed.json["error"]) == (503, "store_unavailable"), failed
        read_only(stack, False)
        assert stack.call("POST", "/api/0/auth/login", login).status == 200
        replay = stack.call("POST", "/api/0/auth/login", login)
        assert (replay.status, replay.json["error"]) == (401, "invalid_totp")
    again = stack.restarted()
    try:  # spent on disk too: the recovery code is gone, the TOTP step is the last one
        assert len(again.auth.second.enrolments["bob"].recovery) == len(recovery) - 1
        assert again.auth.second.enrolments["bob"].last_step == step_at(stack.clock.seconds())
    finally:
        again.close()


def test_the_login_page_keeps_its_challenge_when_the_store_refuses(stack: Stack) -> None:
    """The page's two steps (password, then code): a code whose session the store could
    not take leaves the challenge and the code good for the next try."""
    from heartbeat.server.auth import SecondFactorNeeded
    from heartbeat.server.store import StoreUnavailable
    from tests.apistack import fired

    secret, _ = _enrolled(stack, "bob")
    with pytest.raises(SecondFactorNeeded) as needed:
        fired(stack.auth.login("bob", "bob-password", "192.0.2.9"))
    code = code_at(secret, step_at(stack.clock.seconds()))
    read_only(stack, True)
    with pytest.raises(StoreUnavailable):
        fired(stack.auth.second_step(needed.value.challenge, code, "192.0.2.9"))
    read_only(stack, False)
    token, session = fired(stack.auth.second_step(needed.value.challenge, code, "192.0.2.9"))
    assert session.user == "bob" and token


def test_a_badge_is_made_and_revoked_only_on_disk(stack: Stack) -> None:
    token = stack.token("alice")
    read_only(stack, True)
    refused(stack.call("POST", "/api/0/hosts/web1/badge", token=token))
    assert stack.api.status_board is not None
    assert stack.api.status_board.badges.of("host", "web1") is None
    read_only(stack, False)
    made = stack.call("POST", "/api/0/hosts/web1/badge", token=token)
    assert made.status == 201, made
    read_only(stack, True)
    refused(stack.call("DELETE", "/api/0/hosts/web1/badge", token=token))
    assert stack.call("GET", f"/badge/{made.json['token']}.svg").status == 200
    read_only(stack, False)
    again = stack.restarted()
    try:
        assert again.call("GET", f"/badge/{made.json['token']}.svg").status == 200
    finally:
        again.close()
