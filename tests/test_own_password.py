"""Changing one's own password: the current one is asked for, and the session is replaced.

A stolen session must not be able to lock its owner out; an admin resetting
someone else's password needs no password of theirs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from heartbeat.server.web.auth import COOKIE
from tests.apistack import Stack, user


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True),
                                   "bob": user("bob-password")}, hosts={})
    yield stack
    stack.close()


def test_a_stolen_session_cannot_change_the_password(stack: Stack) -> None:
    stolen = stack.token("bob")
    missing = stack.call("PUT", "/api/0/users/bob", {"password": "mallory-owns-it"},
                         token=stolen)
    assert (missing.status, missing.json["error"]) == (403, "current_password_required")
    wrong = stack.call("PUT", "/api/0/users/bob", {"password": "mallory-owns-it",
                                                   "current_password": "a-guess"}, token=stolen)
    assert (wrong.status, wrong.json["error"]) == (403, "wrong_password")
    assert stack.login("bob").status == 200  # the owner still gets in


def test_guessing_the_current_password_is_throttled_as_logins_are(stack: Stack) -> None:
    stolen = stack.token("bob")
    statuses = [stack.call("PUT", "/api/0/users/bob", {
        "password": "mallory-owns-it", "current_password": f"guess-{n}"}, token=stolen).status
        for n in range(6)]
    assert statuses == [403] * 5 + [429]  # LoginThrottle's free attempts, then a wait


def test_the_owner_changes_it_and_gets_a_new_session(stack: Stack) -> None:
    other = stack.token("bob")
    login = stack.login("bob")
    token = login.json["token"]
    cookie = login.cookies()[COOKIE].value
    changed = stack.call("PUT", "/api/0/users/bob", {
        "password": "bob-new-password", "current_password": "bob-password"},
        cookie=cookie, headers={"X-CSRF-Token": login.json["csrf_token"]})
    assert changed.status == 200, changed
    new = changed.json["session"]
    assert new["token"] != token
    assert changed.cookies()[COOKIE].value == new["token"]
    for old in (token, other):  # the caller's old session and every other one end
        assert stack.call("GET", "/api/0/me", token=old).status == 401
    assert stack.call("GET", "/api/0/me", token=new["token"]).json["name"] == "bob"
    assert stack.login("bob").status == 401
    assert stack.login("bob", "bob-new-password").status == 200
    again = stack.restarted()  # the new session is on disk
    try:
        assert again.call("GET", "/api/0/me", token=new["token"]).status == 200
    finally:
        again.close()


def test_an_admin_resets_another_without_their_password(stack: Stack) -> None:
    bob = stack.token("bob")
    admin = stack.token("alice")
    reset = stack.call("PUT", "/api/0/users/bob", {"password": "given-by-alice"}, token=admin)
    assert reset.status == 200 and "session" not in reset.json
    assert stack.call("GET", "/api/0/me", token=bob).status == 401
    assert stack.call("GET", "/api/0/me", token=admin).status == 200
    own = stack.call("PUT", "/api/0/users/alice", {"password": "alice-new-password"},
                     token=admin)
    assert (own.status, own.json["error"]) == (403, "current_password_required")
