"""Users and access lists read back from the store: a damaged row never crashes nor opens."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from heartbeat.config.server import HostConfig
from heartbeat.server.access import HostAccess
from heartbeat.server.auth import load_auth
from heartbeat.server.tables import SqliteTables
from tests.apistack import Stack, user


def _stack(directory: Path) -> Stack:
    return Stack(directory, users={"admin": user("admin-password", admin=True),
                                   "bob": user("bob-password"), "eve": user("eve-password")},
                 hosts={"web1": HostConfig(managers=["bob"]), "web2": HostConfig()})


def test_a_damaged_access_row_gives_the_host_to_admins_only(tmp_path: Path) -> None:
    """A host_access row with bad JSON starts the server (no traceback) and fails closed:
    neither the API's lost list nor the config's broader one applies; other rows do."""
    stack = _stack(tmp_path)
    token = stack.login("admin").json["token"]
    for host, access in (("web1", {"owner": "admin", "managers": [], "monitors": []}),
                         ("web2", {"owner": "admin", "managers": ["eve"], "monitors": []})):
        assert stack.call("PUT", f"/api/0/hosts/{host}/access", access, token=token).status \
            == 200
    stack.heartbeat("web1")
    stack.heartbeat("web2")
    stack.close()
    with sqlite3.connect(tmp_path / "heartbeat.sqlite3") as conn:
        conn.execute("UPDATE host_access SET managers = '[\"bob\"' WHERE host = 'web1'")
    with sqlite3.connect(tmp_path / "heartbeat.sqlite3") as conn:
        stored = load_auth(SqliteTables(conn))
    assert (stored.damaged, stored.access) == (["web1"], {
        "web1": HostAccess(None, (), (), "api"),
        "web2": HostAccess("admin", ("eve",), (), "api")})

    again = _stack(tmp_path)
    bob = again.login("bob").json["token"]
    eve = again.login("eve").json["token"]
    admin = again.login("admin").json["token"]
    seen = {name: [h["name"] for h in again.call("GET", "/api/0/hosts", token=t).json["hosts"]]
            for name, t in (("bob", bob), ("eve", eve), ("admin", admin))}
    assert seen == {"bob": [], "eve": ["web2"], "admin": ["web1", "web2"]}
    fixed = again.call("PUT", "/api/0/hosts/web1/access",
                       {"owner": "admin", "managers": ["bob"], "monitors": []}, token=admin)
    assert fixed.status == 200
    assert [h["name"] for h in again.call("GET", "/api/0/hosts", token=bob).json["hosts"]] \
        == ["web1"]
    again.close()


def test_access_rows_of_the_wrong_shape_are_damaged_too(tmp_path: Path) -> None:
    """Valid JSON that is not a list of names (a number, a list of numbers) and an owner
    stored as bytes are refused alike."""
    stack = _stack(tmp_path)
    stack.close()
    with sqlite3.connect(tmp_path / "heartbeat.sqlite3") as conn:
        conn.executemany("INSERT INTO host_access VALUES (?, ?, ?, ?)", [
            ("a", "admin", "7", "[]"), ("b", "admin", "[]", "[1, 2]"),
            ("c", b"\xff", "[]", "[]"), ("d", "admin", '["bob"]', '["eve"]')])
        stored = load_auth(SqliteTables(conn))
    assert stored.damaged == ["a", "b", "c"]
    assert stored.access["d"] == HostAccess("admin", ("bob",), ("eve",), "api")
