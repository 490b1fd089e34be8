"""Signed datagrams end to end: real server, real agent, ``heartbeat send`` and hbc_mini."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heartbeat.protocol import Keyring, decode_datagram, seal
from tests.agent_process import AgentProcess
from tests.support import ServerProcess, wait_until
from tests.test_agent_process import run_send
from tests.test_hbc_mini_process import ALL_OFF, PYTHON3, Clients, FakeServer

pytestmark = pytest.mark.integration

FLEET = "fleet-secret-0123456789abcdef"
AGENT = "agent1-secret-0123456789abcdef"
KEYS = {"fleet": FLEET, "agent1": AGENT}


@pytest.fixture
def signed_server(server_factory: Any) -> ServerProcess:
    """A server that requires every datagram signed; agent1 has a key of its own."""
    server: ServerProcess = server_factory(
        keys=KEYS, require_signed=True,
        hosts={"agent1": {"key": "agent1"}, "legacy": {"require_signed": False}})
    return server


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Any]:
    started: list[AgentProcess] = []

    def start(servers: list[str], config: dict[str, Any]) -> AgentProcess:
        directory = tmp_path / f"agent{len(started)}"
        directory.mkdir()
        started.append(AgentProcess(directory, servers, config).start())
        return started[-1]

    yield start
    for process in started:
        process.stop()


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_agent_signs_and_runs_signed_commands(signed_server: ServerProcess, agent: Any,
                                              tmp_path: Path) -> None:
    """The agent with key_file is UP and shown signed; a CMD queued through the API comes
    to it signed and its RES back; unsigned senders are dropped and counted."""
    key_file = tmp_path / "agent1.key"
    key_file.write_text(AGENT + "\n")
    key_file.chmod(0o600)
    hello = _script(tmp_path / "hello", 'echo "hello $*"\n')
    process = agent(["127.0.0.1"], {
        "hb_port": signed_server.udp_port, "name": "agent1", "interval": 0.3,
        "batch_delay": 0.1, "key_file": str(key_file), "key_id": "agent1",
        "allowed_commands": {"hello": [hello]},
        "plugins": {name: {"enabled": False} for name in (
            "os_info", "cpu_monitor", "memory_monitor", "disk_monitor", "network_monitor",
            "filesystem_info", "zfs_monitor")}})
    try:
        host = wait_until(lambda: (h := signed_server.host("agent1")) and h["rtt"] is not None
                          and h, timeout=20)
    except AssertionError:
        raise AssertionError(process.log()) from None
    assert (host["state"], host["signed"], host["key_id"]) == ("UP", True, "agent1")
    status, body = signed_server.request("POST", "/api/0/hosts/agent1/commands",
                                         {"cmd": "hello", "args": ["signed"]})
    assert status in (200, 201, 202), body
    done = wait_until(lambda: (h := signed_server.host("agent1")) and h["results"] and h)
    assert [(r["status"], r["rc"], r["output"]) for r in done["results"]] == [
        ("done", 0, "hello signed")]
    unsigned = run_send("-m", "let me in", "--name", "intruder", "--port",
                        str(signed_server.udp_port), "127.0.0.1", cwd=tmp_path)
    assert unsigned.returncode == 0  # sent: the server drops it
    dropped = wait_until(lambda: signed_server.get("/api/0/status")["ingest"]["dropped"]
                         .get("unsigned"))
    assert dropped >= 1 and signed_server.host("intruder") is None
    assert "signed with key agent1" in process.log()


def test_send_signs_and_legacy_hosts_stay_unsigned(signed_server: ServerProcess,
                                                   tmp_path: Path) -> None:
    """heartbeat send with a fleet key is taken; a host allowed to stay unsigned is too."""
    (tmp_path / ".hbc.yaml").write_text(f"key: {FLEET}\nkey_id: fleet\n")
    signed = run_send("-m", "signed hello", "--name", "db1", "--port",
                      str(signed_server.udp_port), "127.0.0.1", cwd=tmp_path)
    (tmp_path / ".hbc.yaml").unlink()
    legacy = run_send("--boot", "--name", "legacy", "--port", str(signed_server.udp_port),
                      "127.0.0.1", cwd=tmp_path)
    assert (signed.returncode, legacy.returncode) == (0, 0)
    db1 = wait_until(lambda: signed_server.host("db1"))
    old = wait_until(lambda: signed_server.host("legacy"))
    assert [(db1["signed"], db1["key_id"]), (old["signed"], old["key_id"])] == [
        (True, "fleet"), (False, None)]
    status = signed_server.get("/api/0/status")["ingest"]
    assert status["signing"] == {"keys": 2, "required": True, "signed_accepted": 1}


def test_hbc_mini_signs_and_is_shown_signed(signed_server: ServerProcess,
                                            tmp_path: Path) -> None:
    """hbc_mini with key and key_id brings its host UP, signed, with an RTT."""
    clients = Clients(tmp_path)
    try:
        clients.start(PYTHON3, {"hb_port": signed_server.udp_port, "interval": 0.3,
                                "name": "mini1", "plugins": ALL_OFF, "key": FLEET,
                                "key_id": "fleet"}, "127.0.0.1")
        host = wait_until(lambda: (h := signed_server.host("mini1")) and h["rtt"] is not None
                          and h, timeout=15)
        assert (host["state"], host["signed"], host["key_id"]) == ("UP", True, "fleet")
    finally:
        clients.close()


class SigningServer(FakeServer):
    """The test's server, holding the fleet key: reads signed datagrams, sends either kind."""

    keyring = Keyring({"fleet": FLEET.encode()})
    seq = 0

    def receive(self) -> tuple[dict[str, Any], Any] | None:
        try:
            data, addr = self.sock.recvfrom(65535)
        except TimeoutError:
            return None
        message, _, signed = decode_datagram(data, keyring=self.keyring, now=time.time())
        assert signed is not None and signed.key_id == "fleet", message
        return message, addr

    def send_signed(self, message: dict[str, Any], addr: Any, key: str = FLEET) -> None:
        self.seq = max(self.seq + 1, int(time.time() * 1e6))
        self.sock.sendto(seal(json.dumps(message).encode(), "fleet", key.encode(), self.seq),
                         addr)


def test_hbc_mini_runs_only_signed_commands(tmp_path: Path) -> None:
    """From its server's address, only a CMD signed with its key runs; an unsigned one,
    a forged one and a replay of the signed one do not."""
    server = SigningServer()
    clients = Clients(tmp_path)
    marker = tmp_path / "ran.log"
    hello = _script(tmp_path / "hello", f'echo "$1" >> {marker}\n')
    try:
        clients.start(PYTHON3, {"hb_port": server.port, "interval": 0.2, "name": "mini2",
                                "plugins": ALL_OFF, "key": FLEET, "key_id": "fleet",
                                "allowed_commands": {"hello": [hello]}}, "127.0.0.1")
        received = wait_until(server.receive, timeout=10)
        addr = received[1]
        server.send({"ID": "CMD", "cmd_id": "u", "cmd": "hello", "args": ["unsigned"]}, addr)
        server.send_signed({"ID": "CMD", "cmd_id": "f", "cmd": "hello", "args": ["forged"]},
                           addr, key="forged-key-0123456789abcdef")
        server.seq = int(time.time() * 1e6)
        signed = seal(json.dumps({"ID": "CMD", "cmd_id": "s", "cmd": "hello",
                                  "args": ["signed"]}).encode(), "fleet", FLEET.encode(),
                      server.seq)
        server.sock.sendto(signed, addr)
        results = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not results:
            got = server.receive()
            if got and got[0]["ID"] == "RES":
                results.append(got[0])
        server.sock.sendto(signed, addr)  # the same datagram again: a replay
        log_path = Path(clients.processes[0].log_path)  # type: ignore[attr-defined]
        log = wait_until(lambda: "ignored a replayed datagram" in (text := log_path.read_text())
                         and text)
        assert [(r["cmd_id"], r["rc"]) for r in results] == [("s", 0)]
        assert marker.read_text() == "signed\n"
        assert "ignored an unsigned CMD" in log and "a bad signature" in log
    finally:
        clients.close()
        server.close()


def test_a_captured_datagram_does_not_bring_a_removed_host_back(signed_server: ServerProcess
                                                                 ) -> None:
    """A signed HTB captured and sent again after its host was removed (within the window)
    is a replay: the host stays removed and ``replayed`` counts it."""
    captured = seal(json.dumps({"ID": "HTB", "name": "db9", "interval": 60}).encode(),
                    "fleet", FLEET.encode(), int(time.time() * 1e6))
    signed_server.send(captured)
    wait_until(lambda: signed_server.host("db9"))
    status, _ = signed_server.request("DELETE", "/api/0/hosts/db9")
    assert status == 200
    signed_server.send(captured)
    signed_server.send({"ID": "HTB", "name": "marker", "interval": 60})  # legacy-style: dropped
    wait_until(lambda: signed_server.get("/api/0/status")["ingest"]["dropped"].get("unsigned"))
    assert signed_server.host("db9") is None
    assert signed_server.get("/api/0/status")["ingest"]["dropped"].get("replayed") == 1
