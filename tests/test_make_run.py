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
from typing import Any

import pytest
import yaml

from tests.support import free_port, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent



def _launch(argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """The launcher in a session of its own, with Ctrl-C (SIGINT) as a terminal gives it.
    A suite started in the background (``nohup make test &``) has SIGINT ignored, which a
    child inherits, and Python and twistd then install no handler for it: the group's
    SIGINT would end nothing. A handler set here is the default again in the child."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(argv, start_new_session=True, **options)
    finally:
        signal.signal(signal.SIGINT, previous)

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
    launcher = _launch(
        [sys.executable, str(ROOT / "scripts/make_run.py"), "--config", str(server),
         "--agent-config", str(agent)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "HOME": str(tmp_path)})
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
    out = (tmp_path / "run.log").read_text()
    assert f"make run: web UI at http://127.0.0.1:{http}/; a local agent reports this machine" \
        in out


def test_make_run_with_users_and_other_ports_starts_the_agent(tmp_path: Path) -> None:
    """With users (/api/0/status answers 401) and a non-default hb_port, the agent still runs.

    The agent config is the stock one (hb_port 50003): the launcher points it at the
    server's port.
    """
    from heartbeat.passwords import hash_password

    udp, http = free_port(socket.SOCK_DGRAM), free_port()
    server = tmp_path / "server.yaml"
    server.write_text(yaml.safe_dump({
        "hb_host": "127.0.0.1", "hb_port": udp, "hbd_host": "127.0.0.1", "hbd_port": http,
        "ws_port": None, "state_dir": str(tmp_path / "state"),
        "journal_dir": str(tmp_path / "journal"),
        "users": {"alice": {"admin": True, "password": hash_password("alice-password")}}}))
    log = (tmp_path / "run.log").open("wb")
    launcher = _launch(
        [sys.executable, str(ROOT / "scripts/make_run.py"), "--config", str(server),
         "--agent-config", str(ROOT / "etc/heartbeat-agent.yaml")], cwd=tmp_path, stdout=log,
        stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(tmp_path)})
    group = os.getpgid(launcher.pid)
    base = f"http://127.0.0.1:{http}/api/0"
    try:
        request = urllib.request.Request(
            f"{base}/auth/login", json.dumps({"username": "alice",
                                              "password": "alice-password"}).encode(),
            {"Content-Type": "application/json"})
        token = wait_until(lambda: _login(request), timeout=30)

        def hosts() -> list[dict]:
            with urllib.request.urlopen(urllib.request.Request(
                    f"{base}/hosts", headers={"Authorization": f"Bearer {token}"}),
                    timeout=2) as r:
                return json.loads(r.read())["hosts"]

        (seen,) = wait_until(hosts, timeout=30)
        assert seen["state"] == "UP"
        os.killpg(group, signal.SIGINT)
        assert launcher.wait(30) == 0
    finally:
        if launcher.poll() is None or not _group_gone(group):
            os.killpg(group, signal.SIGKILL)
        launcher.wait()
        log.close()
    assert (f"make run: web UI at http://127.0.0.1:{http}/ (log in as one of its users); "
            "a local agent reports this machine") in (tmp_path / "run.log").read_text()


def _login(request: urllib.request.Request) -> str | None:
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return json.loads(r.read())["token"]
    except OSError:
        return None


def test_make_run_says_why_no_agent_started(tmp_path: Path) -> None:
    """A server that stops before answering: the launcher says so, starts no agent, exits."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    server = tmp_path / "server.yaml"
    server.write_text(yaml.safe_dump({
        "hb_host": "127.0.0.1", "hb_port": free_port(socket.SOCK_DGRAM), "hbd_host": "127.0.0.1",
        "hbd_port": taken.getsockname()[1], "ws_port": None,
        "state_dir": str(tmp_path / "state"), "journal_dir": str(tmp_path / "journal")}))
    try:
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts/make_run.py"), "--config", str(server),
             "--agent-config", str(ROOT / "etc/heartbeat-agent.yaml")], cwd=tmp_path,
            capture_output=True, text=True, timeout=60, check=False)
    finally:
        taken.close()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "make run: the server stopped (exit code 1) before it answered: no agent started")


def test_wait_for_server_gives_a_reason_when_nothing_answers() -> None:
    """Nothing listening on the URL: after the timeout, a reason instead of silence."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_run", ROOT / "scripts/make_run.py")
    assert spec is not None and spec.loader is not None
    make_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_run)

    class Running:
        returncode = None

        def poll(self) -> None:
            return None

    port = free_port()
    reason = make_run.wait_for_server(f"http://127.0.0.1:{port}/api/0", Running(), timeout=0.5)
    assert reason is not None and reason.startswith(
        f"the server did not answer http://127.0.0.1:{port}/api/0 within 0 s (")


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
