"""Manager, owner and admin actions; request bodies and errors of the API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import fail

from heartbeat.config.server import HostConfig
from heartbeat.events import HOST_COMMAND, HOST_REMOVED, Event
from heartbeat.passwords import verify_password
from tests.apistack import START, Stack, user


@pytest.fixture
def stack(tmp_path: Any) -> Iterator[Stack]:
    dns: list[str] = []
    stack = Stack(
        tmp_path,
        users={"alice": user("alice-password", admin=True), "olga": user("olga-password"),
               "mike": user("mike-password"), "bob": user("bob-password")},
        hosts={"web1": HostConfig(owner="olga", managers=["mike"]),
               "planned": HostConfig(owner="olga")},
        dns_trigger=dns.append,
    )
    stack.dns = dns  # type: ignore[attr-defined]
    stack.heartbeat("web1")
    yield stack
    stack.close()


def _events(stack: Stack, kind: str) -> list[Event]:
    return [e for e in stack.events if e.kind == kind]


def test_command_is_queued_and_published(stack: Stack) -> None:
    """A manager's command is queued for the next HTB and published as HOST_COMMAND."""
    response = stack.call("POST", "/api/0/hosts/web1/commands",
                          {"cmd": "restart_nginx", "args": ["--graceful"]},
                          token=stack.token("mike"))
    assert response.status == 202
    command = response.json["command"]
    assert response.json == {"host": "web1", "command": {
        "cmd_id": command["cmd_id"], "kind": "CMD", "queued": START, "attempts": 0,
        "by": "mike", "cmd": "restart_nginx", "args": ["--graceful"]}}
    assert [e.data for e in _events(stack, HOST_COMMAND)] == [command]
    outcome = stack.registry.apply({"ID": "HTB", "name": "web1"}, ("192.0.2.1", 50003),
                                   START + 1)
    assert outcome.replies[1] == {"ID": "CMD", "cmd_id": command["cmd_id"],
                                  "cmd": "restart_nginx", "args": ["--graceful"]}


def test_upgrade_is_queued(stack: Stack) -> None:
    """An upgrade queues an UPD, with or without a version."""
    token = stack.token("mike")
    bare = stack.call("POST", "/api/0/hosts/web1/upgrade", token=token).json["command"]
    pinned = stack.call("POST", "/api/0/hosts/web1/upgrade", {"version": "2.0.1"},
                        token=token).json["command"]
    assert (bare["kind"], "version" in bare, pinned["kind"], pinned["version"]) == (
        "UPD", False, "UPD", "2.0.1")
    assert len(stack.registry.get("web1").pending) == 2  # type: ignore[union-attr]


def test_dns_calls_the_trigger(stack: Stack) -> None:
    """POST dns hands the host to the DNS trigger and answers 202."""
    response = stack.call("POST", "/api/0/hosts/web1/dns", token=stack.token("mike"))
    assert (response.status, response.json) == (202, {"host": "web1", "dns": "queued"})
    assert stack.dns == ["web1"]  # type: ignore[attr-defined]


def test_dns_without_trigger_is_503(tmp_path: Any) -> None:
    """With dynamic DNS not configured the endpoint says so."""
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True)})
    stack.heartbeat("web1")
    response = stack.call("POST", "/api/0/hosts/web1/dns", token=stack.token("alice"))
    stack.close()
    assert (response.status, response.json["error"]) == (503, "dns_disabled")


def test_dns_refused_by_trigger_is_409(tmp_path: Any) -> None:
    """A trigger that refuses (ValueError, also as a failed Deferred) gives 409 with its reason."""
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True)},
                  dns_trigger=lambda host: fail(ValueError(f"{host} opted out (dns: false)")))
    stack.heartbeat("web1")
    response = stack.call("POST", "/api/0/hosts/web1/dns", token=stack.token("alice"))
    stack.close()
    assert (response.status, response.json) == (
        409, {"error": "dns_refused", "detail": "web1 opted out (dns: false)"})


def test_owner_drops_host(stack: Stack) -> None:
    """DELETE removes the host from the registry and publishes HOST_REMOVED by the owner."""
    response = stack.call("DELETE", "/api/0/hosts/web1", token=stack.token("olga"))
    assert (response.status, response.json) == (200, {"removed": "web1"})
    assert stack.registry.get("web1") is None
    assert [(e.host, e.data) for e in _events(stack, HOST_REMOVED)] == [("web1", {"by": "olga"})]


def test_access_change_wins_over_config_until_reset(stack: Stack) -> None:
    """PUT access replaces the config's list; DELETE access brings the config's back."""
    token = stack.token("olga")
    put = stack.call("PUT", "/api/0/hosts/web1/access",
                     {"owner": "olga", "managers": ["bob", "bob"], "monitors": ["mike"]},
                     token=token)
    assert put.json == {"host": "web1", "owner": "olga", "managers": ["bob"],
                        "monitors": ["mike"], "source": "api"}
    mike = stack.token("mike")
    assert stack.call("POST", "/api/0/hosts/web1/commands", {"cmd": "x"}, token=mike).status \
        == 403
    reset = stack.call("DELETE", "/api/0/hosts/web1/access", token=token)
    assert reset.json == {"host": "web1", "owner": "olga", "managers": ["mike"],
                          "monitors": [], "source": "config"}
    assert stack.call("POST", "/api/0/hosts/web1/commands", {"cmd": "x"}, token=mike).status \
        == 202


def test_access_change_survives_restart(stack: Stack) -> None:
    """An access change and an ownership transfer are in the store after a restart."""
    stack.call("POST", "/api/0/hosts/web1/owner", {"owner": "bob"}, token=stack.token("olga"))
    again = stack.restarted()
    try:
        body = again.call("GET", "/api/0/hosts/web1/access", token=again.token("bob")).json
        assert body == {"host": "web1", "owner": "bob", "managers": ["mike"], "monitors": [],
                        "source": "api"}
        assert again.call("GET", "/api/0/hosts/web1", token=again.token("olga")).status == 404
    finally:
        again.close()


def test_access_names_must_be_users(stack: Stack) -> None:
    """An access list naming a non-user is 400 unknown_user, and nothing changes."""
    token = stack.token("olga")
    response = stack.call("PUT", "/api/0/hosts/web1/access",
                          {"owner": "olga", "managers": ["ghost"], "monitors": ["zed"]},
                          token=token)
    assert (response.status, response.json) == (
        400, {"error": "unknown_user", "detail": "no such user: ghost, zed"})
    assert stack.auth.directory.access("web1").source == "config"


def test_access_of_configured_host_before_first_report(stack: Stack) -> None:
    """A host in the config that never reported still has an access list for its owner."""
    body = stack.call("GET", "/api/0/hosts/planned/access", token=stack.token("olga")).json
    assert body == {"host": "planned", "owner": "olga", "managers": [], "monitors": [],
                    "source": "config"}


def test_user_lifecycle_persists(stack: Stack) -> None:
    """Users created and changed through the API are in the store after a restart."""
    admin = stack.token("alice")
    created = stack.call("POST", "/api/0/users", {
        "name": "carol", "full_name": "Carol C", "password": "carol-password",
        "email": "carol@example.test", "notification_channels": ["email"]}, token=admin)
    assert (created.status, created.json) == (201, {
        "name": "carol", "full_name": "Carol C", "avatar": None, "admin": False,
        "email": "carol@example.test", "notification_channels": ["email"],
        "pushover_user": None, "mattermost_user": None, "signal_number": None,
        "has_password": True, "source": "api", "default_role": None, "roles": {}})
    stored = stack.auth.directory.user("carol")
    assert stored is not None and stored.password is not None
    assert verify_password("carol-password", stored.password)
    changed = stack.call("PUT", "/api/0/users/olga", {"full_name": "Olga O"}, token=admin)
    assert (changed.json["full_name"], changed.json["source"]) == ("Olga O", "api")
    assert stack.call("DELETE", "/api/0/users/bob", token=admin).status == 200
    again = stack.restarted()
    try:
        names = [u["name"] for u in again.call("GET", "/api/0/users",
                                               token=again.token("alice")).json["users"]]
        assert names == ["alice", "carol", "mike", "olga"]
        assert again.login("carol", "carol-password").status == 200
        assert again.call("GET", "/api/0/users/olga", token=again.token("alice")).json[
            "full_name"] == "Olga O"
    finally:
        again.close()


def test_create_existing_user_is_409(stack: Stack) -> None:
    """Creating a user that exists is a conflict."""
    response = stack.call("POST", "/api/0/users", {"name": "bob"}, token=stack.token("alice"))
    assert (response.status, response.json["error"]) == (409, "exists")


def test_last_admin_cannot_go(stack: Stack) -> None:
    """Neither deleting nor demoting the last admin is allowed."""
    admin = stack.token("alice")
    delete = stack.call("DELETE", "/api/0/users/alice", token=admin)
    demote = stack.call("PUT", "/api/0/users/alice", {"admin": False}, token=admin)
    assert [(r.status, r.json["error"]) for r in (delete, demote)] == [
        (409, "last_admin"), (409, "last_admin")]


def test_user_changes_own_password_but_not_admin_flag(stack: Stack) -> None:
    """A user may change their own fields; the admin flag stays an admin's to set."""
    bob = stack.token("bob")
    other = stack.token("bob")
    promote = stack.call("PUT", "/api/0/users/bob", {"admin": True}, token=bob)
    assert (promote.status, promote.json["error"]) == (403, "forbidden")
    changed = stack.call("PUT", "/api/0/users/bob", {"password": "a-new-password",
                                                     "current_password": "bob-password"},
                         token=bob)
    assert changed.status == 200
    assert stack.login("bob", "a-new-password").status == 200
    rotated = changed.json["session"]["token"]
    assert stack.call("GET", "/api/0/me", token=rotated).status == 200  # the caller's new one
    assert stack.call("GET", "/api/0/me", token=bob).status == 401  # replaced
    assert stack.call("GET", "/api/0/me", token=other).status == 401  # the others end


def test_password_of_api_user_is_hashed_at_full_cost(tmp_path: Any) -> None:
    """Passwords set through the API are hashed by the service's hasher (600k in production)."""
    from heartbeat.passwords import ITERATIONS, parse_hash
    from heartbeat.server.auth import PasswordHasher
    from heartbeat.server.serial import ImmediateWorker

    assert PasswordHasher(ImmediateWorker()).iterations == ITERATIONS == 600_000
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True)})
    stack.call("POST", "/api/0/users", {"name": "dan", "password": "dan-password"},
               token=stack.token("alice"))
    stored = stack.auth.directory.user("dan")
    stack.close()
    assert stored is not None and parse_hash(stored.password or "", 1).iterations == \
        stack.hasher.iterations


@pytest.mark.parametrize("case", [
    (b"{", "application/json", 400, "bad_json",
     "the body is not JSON: Expecting property name enclosed in double quotes: "
     "line 1 column 2 (char 1)"),
    (b"[1]", "application/json", 400, "invalid_body", "body: must be object"),
    (b'{"cmd": 7, "args": "x", "extra": 1}', "application/json", 400, "invalid_body",
     "body.cmd: must be string; body.args: must be array; body.extra: is not a known field"),
    (b'{"args": []}', "application/json", 400, "invalid_body", "body.cmd: is required"),
    (b'{"cmd": "rm -rf /"}', "application/json", 400, "invalid_body",
     "body.cmd: must match ^[A-Za-z0-9_.-]{1,64}$"),
    (b'{"cmd": "x"}', "text/plain", 415, "unsupported_media_type",
     "send the body as JSON with Content-Type: application/json"),
    (b"", "application/json", 400, "bad_json", "a JSON body is required"),
    (b'{"cmd": "' + b"x" * 5000 + b'"}', "application/json", 413, "body_too_large",
     "the body is larger than 4096 bytes"),
    (b"[" * 3000 + b"]" * 3000, "application/json", 400, "bad_json",
     "the body is nested too deeply"),
])
def test_bad_bodies_are_clear_errors(stack: Stack, case: tuple[Any, ...]) -> None:
    """Malformed, mistyped, oversized or non-JSON bodies get a 4xx naming the problem."""
    raw, content_type, status, error, detail = case
    if b"[" * 3000 in raw:
        stack.api.max_body = 10000
    response = stack.call("POST", "/api/0/hosts/web1/commands", raw=raw,
                          headers={"Content-Type": content_type}, token=stack.token("alice"))
    assert (response.status, response.json) == (status, {"error": error, "detail": detail})


def test_unknown_route_and_wrong_method_are_json(stack: Stack) -> None:
    """Unknown routes are a JSON 404; a known route with the wrong method a JSON 405 + Allow."""
    token = stack.token("alice")
    missing = stack.call("GET", "/api/0/nothing/here", token=token)
    assert (missing.status, missing.json) == (
        404, {"error": "not_found", "detail": "no endpoint /api/0/nothing/here"})
    wrong = stack.call("PATCH", "/api/0/hosts/web1", token=token)
    assert (wrong.status, wrong.json, wrong.header("Allow")) == (
        405, {"error": "method_not_allowed",
              "detail": "PATCH is not allowed here; use DELETE, GET"}, "DELETE, GET")


def test_bad_query_argument_is_400(stack: Stack) -> None:
    """A limit that is not a number in range is a 400."""
    response = stack.call("GET", "/api/0/messages?limit=0", token=stack.token("alice"))
    assert (response.status, response.json) == (
        400, {"error": "bad_request", "detail": "limit must be between 1 and 5000"})


def test_lone_surrogates_are_refused_as_bad_text(stack: Stack) -> None:
    """A body holding a lone surrogate (a JSON escape with no UTF-8 form) or a NUL in a key
    is a 400 bad_text naming where, and changes nothing."""
    admin = stack.token("alice")
    json_type = {"Content-Type": "application/json"}
    raw = b'{"name": "sam", "password": "long-password", "full_name": "\\udc80"}'
    created = stack.call("POST", "/api/0/users", raw=raw, headers=json_type, token=admin)
    assert (created.status, created.json) == (400, {
        "error": "bad_text",
        "detail": "the body cannot be stored: a lone surrogate in full_name"})
    users = stack.call("GET", "/api/0/users", token=admin)
    assert "sam" not in [user["name"] for user in users.json["users"]]
    login = stack.call("POST", "/api/0/auth/login",
                       raw=b'{"username": "alice", "password": "\\ud800-long-password"}',
                       headers=json_type)
    assert (login.status, login.json["error"]) == (400, "bad_text")
    nul = stack.call("POST", "/api/0/auth/login",
                     raw=b'{"username": "alice", "pass\\u0000word": "x"}', headers=json_type)
    assert (nul.status, nul.json) == (400, {
        "error": "bad_text", "detail": "the body cannot be stored: a NUL in the key pass\\x00word"})
