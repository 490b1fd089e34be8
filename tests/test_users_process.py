"""The real `twistd -n heartbeat` with users: restart persistence, body limit, WebSocket auth."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from heartbeat.passwords import hash_password
from tests.support import ServerProcess, WebSocketClient, wait_until

pytestmark = pytest.mark.integration


@cache
def _hash(name: str) -> str:
    """A real 600,000-iteration hash, made once per test run and user."""
    return hash_password(f"{name}-password")


def _users_config() -> dict[str, Any]:
    return {
        "users": {"alice": {"admin": True, "password": _hash("alice"), "full_name": "Alice"},
                  "bob": {"password": _hash("bob")}},
        "hosts": {"web1": {"monitors": ["bob"]}},
    }


def _login(server: ServerProcess, name: str) -> dict[str, Any]:
    status, body = server.request("POST", "/api/0/auth/login",
                                  {"username": name, "password": f"{name}-password"})
    assert status == 200, body
    return body


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_access_change_and_session_survive_restart(server_factory: Any, tmp_path: Path) -> None:
    """An access change made through the API and the session both outlive a restart."""
    server = server_factory(**_users_config())
    server.send({"ID": "HTB", "name": "web1"})
    server.receive()
    alice = _login(server, "alice")["token"]
    bob = _login(server, "bob")["token"]
    status, body = server.request(
        "PUT", "/api/0/hosts/web1/access",
        {"owner": "alice", "managers": ["bob"], "monitors": []}, _bearer(alice))
    assert (status, body["source"]) == (200, "api")
    server.stop()  # SIGTERM: a graceful stop that flushes the store
    again = server_factory(tmp_path, hb_port=server.udp_port, hbd_port=server.http_port,
                           ws_port=server.ws_port, **_users_config())
    status, body = again.request("GET", "/api/0/hosts/web1/access", headers=_bearer(alice))
    assert (status, body) == (200, {"host": "web1", "owner": "alice", "managers": ["bob"],
                                    "monitors": [], "source": "api"})
    status, host = again.request("GET", "/api/0/hosts/web1", headers=_bearer(bob))
    assert (status, host["role"]) == (200, "manager")
    assert again.request("GET", "/api/0/hosts")[0] == 401


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_body_is_413(server_factory: Any, chunked: bool) -> None:
    """A body past http_max_body is refused 413 (declared length or chunked)."""
    server = server_factory(http_max_body=1000)
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    body = json.dumps({"cmd": "x" * 200_000}).encode()
    headers = {"Content-Type": "application/json"}
    if chunked:
        connection.request("POST", "/api/0/hosts/web1/commands",
                           body=iter([body[i:i + 8192] for i in range(0, len(body), 8192)]),
                           headers=headers, encode_chunked=True)
    else:
        connection.request("POST", "/api/0/hosts/web1/commands", body=body, headers=headers)
    response = connection.getresponse()
    answer = (response.status, json.loads(response.read()))
    connection.close()
    assert answer == (413, {"error": "body_too_large",
                            "detail": "the body is larger than 1000 bytes"})
    assert server.get("/api/0/hosts") == {"hosts": []}  # still serving


@pytest.fixture(scope="module")
def feed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with users and two hosts for the feed's tests, which change neither (a
    twistd costs a second of CPU to start): each logs in and out on its own session."""
    server = ServerProcess(tmp_path_factory.mktemp("feed"), **_users_config()).start()
    try:
        for name in ("web1", "db1"):
            server.send({"ID": "HTB", "name": name, "interval": 3600})
            server.receive()
        yield server
    finally:
        server.stop()


def test_feed_refuses_unauthenticated(feed_server: ServerProcess) -> None:
    """With users configured, a feed without a session or with a bad token is refused 401."""
    for port, path in ((feed_server.ws_port, "/"), (feed_server.http_port, "/ws"),
                       (feed_server.ws_port, "/?token=forged")):
        client = WebSocketClient(port, path)
        assert client.status == 401, (port, path, client.reason)
        client.close()


def test_feed_is_filtered_by_role(feed_server: ServerProcess) -> None:
    """A monitor's feed starts with only their hosts and carries only their hosts' events."""
    token = _login(feed_server, "bob")["token"]
    client = WebSocketClient(feed_server.ws_port, f"/?token={token}")
    try:
        assert client.status == 101
        snapshot = client.receive()
        assert [h["name"] for h in snapshot["hosts"]] == ["web1"]
        feed_server.send({"ID": "MSG", "name": "db1", "text": "secret db1 news"})
        feed_server.send({"ID": "MSG", "name": "web1", "text": "web1 news"})
        seen = [client.receive(), client.receive()]
        assert {m["host"] for m in seen} == {"web1"}
        assert [m.get("text") for m in seen if m["type"] == "host.msg"] == ["web1 news"]
    finally:
        client.close()


def test_feed_accepts_cookie_from_same_host_only(feed_server: ServerProcess) -> None:
    """The session cookie opens /ws from a page of the same host; another Origin is 403."""
    token = _login(feed_server, "alice")["token"]
    cookie = {"Cookie": f"hb_session={token}"}
    same = WebSocketClient(feed_server.http_port, "/ws",
                           {**cookie, "Origin": f"http://127.0.0.1:{feed_server.http_port}"})
    cross = WebSocketClient(feed_server.http_port, "/ws", {**cookie,
                                                           "Origin": "http://evil.test"})
    try:
        assert (same.status, cross.status) == (101, 403)
        assert [h["name"] for h in same.receive()["hosts"]] == ["db1", "web1"]
    finally:
        same.close()
        cross.close()


def test_logout_closes_the_feed(feed_server: ServerProcess) -> None:
    """Ending a session closes the feeds opened with it."""
    token = _login(feed_server, "bob")["token"]
    client = WebSocketClient(feed_server.ws_port, f"/?token={token}")
    try:
        client.receive()
        assert feed_server.request("POST", "/api/0/auth/logout", headers=_bearer(token))[0] == 200
        with pytest.raises(ConnectionError, match="code 4001"):
            client.receive()
    finally:
        client.close()


def test_feed_without_users_needs_nothing(server: ServerProcess) -> None:
    """In the unauthenticated mode the feed opens as before, with every host."""
    server.send({"ID": "HTB", "name": "open1"})
    server.receive()
    wait_until(lambda: server.host("open1"))
    client = WebSocketClient(server.ws_port, "/")
    try:
        assert client.status == 101
        assert [h["name"] for h in client.receive()["hosts"]] == ["open1"]
    finally:
        client.close()
