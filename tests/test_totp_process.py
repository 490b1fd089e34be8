"""`heartbeat passwd --reset-totp` against the store of the real, running twistd."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from heartbeat.passwords import hash_password
from heartbeat.server.totp import code_at, step_at

pytestmark = pytest.mark.integration
HEARTBEAT = str(Path(sys.executable).with_name("heartbeat"))


@pytest.mark.long(13)
def test_reset_totp_while_the_server_runs(server_factory: Any) -> None:
    """Alice enrols; the tool removes her second factor from the running server's store;
    her next login needs only the password. A user without one: exit 1."""
    server = server_factory(users={"alice": {"admin": True,
                                             "password": hash_password("alice-password")}})
    login = {"username": "alice", "password": "alice-password"}
    token = server.request("POST", "/api/0/auth/login", login)[1]["token"]
    auth = {"Authorization": f"Bearer {token}"}
    started = server.request("POST", "/api/0/users/alice/totp", headers=auth)[1]
    secret = started["secret"]
    status, done = server.request("POST", "/api/0/users/alice/totp/confirm",
                                  {"code": code_at(secret, step_at(time.time()) - 1)}, auth)
    assert status == 200, done
    assert server.request("POST", "/api/0/auth/login", login)[1]["error"] == "totp_required"
    result = subprocess.run([HEARTBEAT, "passwd", "alice", "--reset-totp", "-c",
                             str(server.config_path)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (
        0, "", "heartbeat passwd: the second factor of alice is removed: they log in with "
               "their password alone (and must enrol again if the server requires it)\n")
    status, body = server.request("POST", "/api/0/auth/login", login)
    assert (status, body["totp_enrolment_required"]) == (200, False)
    again = subprocess.run([HEARTBEAT, "passwd", "alice", "--reset-totp", "-c",
                            str(server.config_path)], capture_output=True, text=True,
                           timeout=30, check=False)
    assert (again.returncode, again.stderr) == (
        1, f"heartbeat passwd: alice has no second factor in "
           f"{server.config['state_dir']}/heartbeat.sqlite3\n")
