"""``make run``: server plus a local agent; Ctrl-C stops both; AGENT=0 runs the server alone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support import free_port, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def test_make_run_shows_this_machine_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    """The launcher starts server and agent; the host appears; SIGINT to the group ends all."""
    udp, http, ws = free_port(socket.SOCK_DGRAM), free_port(), free_port()
    server = tmp_path / "server.yaml"
    server.write_text(yaml.safe_dump({
        "hb_host": "127.0.0.1", "hb_port": udp, "hbd_host": "127.0.0.1", "hbd_port": http,
        "ws_port": ws, "state_dir": str(tmp_path / "state"),
        "journal_dir": str(tmp_path / "journal")}))
    agent = tmp_path / "agent.yaml"
    agent.write_text(yaml.safe_dump({**yaml.safe_load((ROOT / "etc/heartbeat-agent.yaml")
                                                      .read_text()),
                                     "hb_port": udp, "name": "this-machine"}))
    log = (tmp_path / "run.log").open("wb")
    launcher = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts/make_run.py"), "--config", str(server),
         "--agent-config", str(agent)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, env={**os.environ, "HOME": str(tmp_path)})
    group = os.getpgid(launcher.pid)

    def host() -> dict | None:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{http}/api/0/hosts/this-machine", timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            return None

    try:
        seen = wait_until(lambda: (h := host()) and "cpu_monitor" in h["plugins"] and h,
                          timeout=30)
        assert seen["state"] == "UP"
        os.killpg(group, signal.SIGINT)
        assert launcher.wait(30) == 0
        wait_until(lambda: _group_gone(group), timeout=20)
    finally:
        if launcher.poll() is None or not _group_gone(group):
            os.killpg(group, signal.SIGKILL)
        launcher.wait()
        log.close()
    assert "a local agent reports this machine" in (tmp_path / "run.log").read_text()


def _group_gone(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return True
    return False


def test_make_run_agent_0_runs_server_alone() -> None:
    """make run AGENT=0 passes no agent config; the default passes etc/heartbeat-agent.yaml."""
    def recipe(*args: str) -> str:
        out = subprocess.run(["make", "-n", "--no-print-directory", "run", *args],
                             check=True, capture_output=True, text=True, cwd=ROOT).stdout
        out = out.replace("\\\n", " ")
        return next(line for line in out.splitlines() if "make_run.py" in line)

    assert recipe("AGENT=0").split()[1:] == [
        "scripts/make_run.py", "--config", "etc/heartbeat.yaml"]
    assert recipe().split()[1:] == [
        "scripts/make_run.py", "--config", "etc/heartbeat.yaml", "--agent-config",
        "etc/heartbeat-agent.yaml"]
