"""API keys through the API: made once, hashed, scoped, expiring, revocable, never for users."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heartbeat.server.web import openapi
from tests.apistack import Stack, user


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True),
                                   "bob": user("bob-password")},
                  hosts={})
    stack.heartbeat("web1")
    stack.heartbeat("db1")
    stack.auth.set_access("web1", stack.auth.directory.access("web1").__class__(
        "alice", ("bob",), ()))
    yield stack
    stack.close()


def _key(stack: Stack, name: str, scope: str, expires: float | None = None) -> str:
    response = stack.call("POST", f"/api/0/users/{name}/keys",
                          {"name": f"{name}-{scope}", "scope": scope, "expires": expires},
                          token=stack.token(name))
    assert response.status == 201, response
    token: str = response.json["token"]
    return token


def test_made_once_listed_without_token_and_used_as_bearer(stack: Stack) -> None:
    """The token comes once; lists show a hint and last use; it acts with bob's roles."""
    response = stack.call("POST", "/api/0/users/bob/keys",
                          {"name": "grafana", "scope": "ro"}, token=stack.token("bob"))
    token = response.json["token"]
    key = response.json["key"]
    assert re.fullmatch(r"hbk_ro_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", token)
    assert key == {"id": token.split("_")[2], "name": "grafana", "user": "bob", "scope": "ro",
                   "created": stack.clock.seconds(), "expires": None, "last_used": None,
                   "last_address": None, "expired": False,
                   "hint": f"hbk_ro_{token.split('_')[2]}_\u2026"}
    stack.clock.advance(5)
    hosts = stack.call("GET", "/api/0/hosts", token=token)
    assert [h["name"] for h in hosts.json["hosts"]] == ["web1"]
    me = stack.call("GET", "/api/0/me", token=token).json
    assert (me["name"], me["auth"], me["api_key"]["id"]) == ("bob", "key", key["id"])
    listed = stack.call("GET", "/api/0/users/bob/keys", token=stack.token("bob")).json
    assert listed["keys"] == [{**key, "last_used": stack.clock.seconds(),
                               "last_address": "127.0.0.1"}]
    assert token not in str(listed)


def test_stored_only_as_a_digest_and_kept_across_restart(stack: Stack) -> None:
    """The store holds no token; after a restart the key works and its last use is kept."""
    token = _key(stack, "bob", "rw")
    stack.call("GET", "/api/0/hosts", token=token)
    used = stack.clock.seconds()
    again = stack.restarted()
    try:
        conn = sqlite3.connect(again.path)
        rows = conn.execute("SELECT * FROM api_keys").fetchall()
        conn.close()
        secret = token.split("_", 3)[3]  # token_urlsafe: it may hold "_" itself, even first
        stored = str(rows)
        assert len(rows) == 1 and token not in stored and secret not in stored
        assert not [part for part in secret.split("_") if len(part) >= 6 and part in stored]
        assert again.call("GET", "/api/0/hosts", token=token).status == 200
        (key,) = again.call("GET", "/api/0/users/bob/keys", token=again.token("bob")).json["keys"]
        assert key["last_used"] == used
    finally:
        again.close()


def test_revoked_expired_and_deleted_users_keys_stop_at_once(stack: Stack) -> None:
    """Revoke: 401 at once; past its expiry: 401; its user deleted: 401."""
    one = _key(stack, "bob", "ro")
    key_id = one.split("_")[2]
    assert stack.call("DELETE", f"/api/0/users/bob/keys/{key_id}",
                      token=stack.token("alice")).json == {"revoked": key_id}
    gone = stack.call("GET", "/api/0/hosts", token=one)
    assert (gone.status, gone.json["detail"]) == (
        401, "the API key is unknown, revoked or expired")
    soon = _key(stack, "bob", "ro", expires=stack.clock.seconds() + 60)
    assert stack.call("GET", "/api/0/hosts", token=soon).status == 200
    stack.clock.advance(60)
    assert stack.call("GET", "/api/0/hosts", token=soon).status == 401
    last = _key(stack, "bob", "rw")
    stack.call("DELETE", "/api/0/users/bob", token=stack.token("alice"))
    assert stack.call("GET", "/api/0/hosts", token=last).status == 401


def test_bad_expiry_limits_and_who_may_make_keys(stack: Stack) -> None:
    """A past expiry is a 400; an admin cannot make bob's key (403) but lists and revokes it."""
    past = stack.call("POST", "/api/0/users/bob/keys",
                      {"name": "x", "scope": "ro", "expires": stack.clock.seconds() - 1},
                      token=stack.token("bob"))
    assert (past.status, past.json["detail"]) == (
        400, "body.expires: must be a Unix time in the future")
    for_bob = stack.call("POST", "/api/0/users/bob/keys", {"name": "x", "scope": "ro"},
                         token=stack.token("alice"))
    assert (for_bob.status, for_bob.json["detail"]) == (
        403, "an API key is made by the user it belongs to")
    alices = stack.call("GET", "/api/0/users/alice/keys", token=stack.token("bob"))
    assert alices.status == 403
    stack.auth.keys.max_per_user = 1
    _key(stack, "bob", "ro")
    full = stack.call("POST", "/api/0/users/bob/keys", {"name": "y", "scope": "ro"},
                      token=stack.token("bob"))
    assert (full.status, full.json["error"]) == (409, "too_many_keys")


def _operations() -> list[tuple[str, str]]:
    """Every (METHOD, path template) of the OpenAPI document."""
    return [(method.upper(), path)
            for path, item in openapi.document("0").get("paths", {}).items()
            for method in item if method in ("get", "post", "put", "delete", "patch")]


def _fill(path: str, key_id: str) -> str:
    return (path.replace("{name}", "web1").replace("{plugin}", "cpu_monitor")
            .replace("{user}", "alice").replace("{key_id}", key_id))


def _public(method: str, path: str) -> bool:
    item = openapi.document("0")["paths"][path][method.lower()]
    return item.get("security") == []


def test_read_only_key_is_refused_on_every_state_changing_route(stack: Stack) -> None:
    """Walking the OpenAPI document: every authenticated POST/PUT/DELETE with an admin's
    read-only key is 403 read_only_key, before anything else is looked at."""
    token = _key(stack, "alice", "ro")
    key_id = token.split("_")[2]
    changes = [(m, p) for m, p in _operations()
               if m in ("POST", "PUT", "DELETE", "PATCH") and not _public(m, p)]
    assert len(changes) >= 12
    answers = {(m, p): stack.call(m, _fill(p, key_id), {}, token=token)
               for m, p in changes}
    assert {op: (r.status, r.json["error"]) for op, r in answers.items()} == {
        op: (403, "read_only_key") for op in changes}
    assert stack.registry.get("web1") is not None  # nothing was changed


def test_keys_never_manage_users_or_keys(stack: Stack) -> None:
    """Even an admin's read-write key is 403 key_not_allowed on every route of users, their
    keys and second factors, and on changing who must have one."""
    token = _key(stack, "alice", "rw")
    key_id = token.split("_")[2]
    routes = [(m, p) for m, p in _operations() if p.startswith("/api/0/users")
              or (p == "/api/0/auth/policy" and m != "GET")]
    assert len(routes) == 15
    bodies: dict[str, Any] = {"POST": {"name": "zed", "scope": "ro"}, "PUT": {}}
    answers = {(m, p): stack.call(m, _fill(p, key_id), bodies.get(m), token=token)
               for m, p in routes}
    assert {op: (r.status, r.json["error"]) for op, r in answers.items()} == {
        op: (403, "key_not_allowed") for op in routes}
    status = stack.call("GET", "/api/0/status", token=token)
    assert (status.status, status.json["hosts"]["total"]) == (200, 2)


def test_read_write_key_may_act(stack: Stack) -> None:
    """A read-write key of a manager queues a command like bob's session would."""
    token = _key(stack, "bob", "rw")
    response = stack.call("POST", "/api/0/hosts/web1/commands", {"cmd": "uptime"}, token=token)
    assert (response.status, response.json["command"]["by"]) == (202, "bob")


def test_keys_need_users(tmp_path: Path) -> None:
    """Without users there is nobody to own a key: 409 auth_disabled."""
    stack = Stack(tmp_path)
    try:
        response = stack.call("GET", "/api/0/users/alice/keys")
        assert (response.status, response.json["error"]) == (409, "auth_disabled")
    finally:
        stack.close()
