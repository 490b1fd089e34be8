"""The real twistd with its state on a small file system that fills up.

A user created, a password changed or access revoked while the disk is full
is refused with 503 and is not there later; once there is room the same
change is answered and survives a restart. Needs root to mount a tmpfs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heartbeat.passwords import hash_password
from tests.support import ServerProcess, fill_disk, small_tmpfs, wait_until

pytestmark = pytest.mark.integration

PASSWORD = "alice-password"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "8m") as where:
        yield where


def status(server: ServerProcess, auth: dict[str, str]) -> Any:
    code, body = server.request("GET", "/api/0/status", headers=auth)
    assert code == 200, body
    return body["store"]


@pytest.mark.long(15)
def test_a_full_disk_refuses_changes_and_keeps_nothing(server_factory: Any, small_disk: Path,
                                                       tmp_path: Path) -> None:
    users = {"alice": {"admin": True, "password": hash_password(PASSWORD)}}
    server: ServerProcess = server_factory(users=users, state_dir=str(small_disk))
    code, body = server.request("POST", "/api/0/auth/login",
                                {"username": "alice", "password": PASSWORD})
    assert code == 200, body
    auth = {"Authorization": f"Bearer {body['token']}"}
    carol = {"name": "carol", "password": "carol-password", "admin": False}
    filler = fill_disk(small_disk)
    for n in range(40):  # heartbeats and plugin data need room too: the store falls behind
        server.send({"ID": "PLG", "name": f"h{n}", "seq": 1,
                     "plugins": {"blob": {"text": os.urandom(2000).hex()}}})
    wait_until(lambda: status(server, auth)["failures"] > 0, 20)
    code, body = server.request("POST", "/api/0/users", carol, auth)
    assert (code, body["error"]) == (503, "store_unavailable"), body
    assert "full" in body["detail"]
    assert server.request("GET", "/api/0/users/carol", headers=auth)[0] == 404
    store = status(server, auth)
    assert store["backlog"] > 0 and "full" in store["last_error"]
    filler.unlink()
    code, body = server.request("POST", "/api/0/users", carol, auth)
    assert code == 201, body
    wait_until(lambda: status(server, auth)["backlog"] == 0, 20)
    assert server.request("GET", "/api/0/hosts/h39", headers=auth)[0] == 200
    server.stop()
    again = server_factory(directory=tmp_path, users=users, state_dir=str(small_disk))
    code, body = again.request("POST", "/api/0/auth/login",
                               {"username": "carol", "password": "carol-password"})
    assert code == 200, body
    code, body = again.request("POST", "/api/0/auth/login",
                               {"username": "alice", "password": PASSWORD})
    code, body = again.request("GET", "/api/0/hosts/h39/plugins",
                               headers={"Authorization": f"Bearer {body['token']}"})
    assert "blob" in body["plugins"], body  # kept through the full disk, then written
