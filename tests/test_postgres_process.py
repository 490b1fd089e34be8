"""The real ``twistd -n heartbeat`` on a PostgreSQL store (``store_url``)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from heartbeat.passwords import hash_password
from heartbeat.server.migrations import NEWEST
from tests.support import TWISTD, wait_until

pytestmark = pytest.mark.integration

PASSWORD = "alice-password-1"


def _login(server: Any) -> dict[str, str]:
    status, body = server.request("POST", "/api/0/auth/login",
                                  {"username": "alice", "password": PASSWORD})
    assert status == 200, body
    return {"Authorization": f"Bearer {body['token']}"}


@pytest.mark.long(20)
def test_server_keeps_its_state_in_postgresql(server_factory: Any, postgres_url: str,
                                              tmp_path: Path) -> None:
    """Hosts, plugin history, users and sessions go to PostgreSQL and come back after a
    restart; status names the backend; --check reports the database's schema version."""
    users = {"alice": {"admin": True, "password": hash_password(PASSWORD)}}
    server = server_factory(store_url=postgres_url, node_name="one", users=users)
    assert f"store: created {postgres_url} at schema version {NEWEST}" in server.log()
    auth = _login(server)
    server.send({"ID": "HTB", "name": "web1", "interval": 30})
    for n in range(3):
        server.send({"ID": "PLG", "name": "web1", "seq": n, "plugins": {"cpu": {"load": n}}})
    status, body = server.request("POST", "/api/0/users", {"name": "bob", "password":
                                                          "bob-password-12"}, headers=auth)
    assert status == 201, body

    def history() -> Any:
        status, body = server.request("GET", "/api/0/hosts/web1/plugins/cpu", headers=auth)
        return status == 200 and [s["data"]["load"] for s in body["samples"]] == [2, 1, 0]

    wait_until(history)
    status, body = server.request("GET", "/api/0/status", headers=auth)
    assert body["store"]["backend"] == "postgresql"
    server.stop()

    server.start()
    assert [h["name"] for h in server.request("GET", "/api/0/hosts", headers=auth)[1]["hosts"]] \
        == ["web1"]  # the session survived too
    assert wait_until(history)
    status, body = server.request("POST", "/api/0/auth/login",
                                  {"username": "bob", "password": "bob-password-12"})
    assert status == 200, body
    checked = subprocess.run([TWISTD, "-n", "heartbeat", "-c", str(server.config_path),
                              "--check"], check=False, capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert f"heartbeat: store {postgres_url}: schema version {NEWEST}, current" in checked.stdout
