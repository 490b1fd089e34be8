"""End to end: the real agent and ``heartbeat send`` against the real server on loopback."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.agent_process import HEARTBEAT, AgentProcess
from tests.support import TWISTD, ServerProcess, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Any]:
    started: list[AgentProcess] = []

    def start(servers: list[str], config: dict[str, Any], *flags: str) -> AgentProcess:
        directory = tmp_path / f"agent{len(started)}"
        directory.mkdir()
        agent = AgentProcess(directory, servers, config, flags).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


FAST = {"interval": 1, "batch_delay": 0.1}
MONITORS = ("cpu_monitor", "memory_monitor", "disk_monitor", "network_monitor")


def test_agent_host_up_with_fresh_plugin_data(server: ServerProcess, agents: Any) -> None:
    """A real agent makes its host UP with an RTT and fresh cpu/memory/disk/network data."""
    # The default batch window (1 s): the four collections run on threads, and on a loaded
    # machine they took longer than FAST's 0.1 s apart, so no PLG carried all four.
    config = {**FAST, "batch_delay": 1.0, "hb_port": server.udp_port, "name": "e2e-host",
              "plugins": {name: {"interval": 1} for name in MONITORS}}
    agent = agents(["127.0.0.1"], config, "-b")
    try:
        host = wait_until(lambda: (h := server.host("e2e-host")) and h["rtt"] is not None
                          and set(MONITORS) <= set(h["plugins"]) and h, timeout=20)
    except AssertionError:
        raise AssertionError(f"{sys.exc_info()[1]}\n{agent.log()}") from None
    assert (host["state"], host["interval"]) == ("UP", 1.0)
    assert host["boot_time"] is not None
    first = server.get("/api/0/hosts/e2e-host/plugins")["plugins"]
    fresher = wait_until(lambda: (p := server.get("/api/0/hosts/e2e-host/plugins")["plugins"])
                         and all(p[n]["ts"] > first[n]["ts"] for n in MONITORS) and p,
                         timeout=10)
    now = time.time()
    assert all(now - fresher[n]["ts"] < 5 for n in MONITORS)
    cpu = fresher["cpu_monitor"]["data"]
    assert 0 <= cpu["cpu_percent"] <= 100 and cpu["process_count"] > 0
    assert 0 < fresher["memory_monitor"]["data"]["percent"] < 100
    assert fresher["disk_monitor"]["data"]["partitions"]["/"]["free_mb"] > 0
    assert "errors_total" in fresher["network_monitor"]["data"]
    assert fresher["os_info"]["data"]["system"] == "Linux"
    plgs = [m["message"] for m in server.get("/api/0/messages?host=e2e-host&limit=200")
            ["messages"] if m["message"]["ID"] == "PLG"]
    assert any(set(MONITORS) <= set(m["plugins"]) for m in plgs), "monitors not batched"
    assert fresher["zfs_monitor"]["data"]["available"] is False or "pools" in \
        fresher["zfs_monitor"]["data"]
    assert agent.stop() == -signal.SIGTERM  # twistd ends by its signal after a clean stop
    assert "Server Shut Down." in agent.log()
    down = wait_until(lambda: (h := server.host("e2e-host")) and h["state"] == "DOWN" and h)
    assert down["down_reason"] == "shutdown"


class FakeServer:
    """A loopback UDP socket playing the server, to send CMD/UPD and read RES."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(15)
        self.port = self.sock.getsockname()[1]

    def receive(self) -> tuple[dict[str, Any], Any]:
        data, addr = self.sock.recvfrom(65535)
        text = data if data[:1] == b"{" else zlib.decompress(data)
        return json.loads(text), addr

    def receive_kind(self, kind: str) -> tuple[dict[str, Any], Any]:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            message, addr = self.receive()
            if message["ID"] == kind:
                return message, addr
        raise AssertionError(f"no {kind} within 15 s")

    def send(self, message: dict[str, Any], addr: Any) -> None:
        self.sock.sendto(json.dumps(message).encode(), addr)


def test_cmd_and_upd_run_real_processes(tmp_path: Path, agents: Any) -> None:
    """Over real UDP: an allowed CMD and UPD run and answer RES; others are refused."""
    fake = FakeServer()
    marker = tmp_path / "updated"
    update = tmp_path / "update.sh"
    update.write_text(f'#!/bin/sh\necho "updating to $HEARTBEAT_VERSION" > {marker}\n'
                      'echo done\n')
    update.chmod(0o755)
    agent = agents(["127.0.0.1"], {
        "interval": 30, "hb_port": fake.port, "name": "cmdhost",
        "allowed_commands": {"greet": ["/bin/echo", "hello"]},
        "update_command": [str(update)],
        "plugins": {n: {"enabled": False} for n in ("os_info", "cpu_monitor",
                                                    "memory_monitor", "disk_monitor",
                                                    "network_monitor", "filesystem_info",
                                                    "zfs_monitor")}})
    try:
        htb, addr = fake.receive_kind("HTB")
        fake.send({"ID": "ACK", "seq": htb["seq"], "ts": htb["ts"], "server_ts": 1.0}, addr)
        fake.send({"ID": "CMD", "cmd_id": "c1", "cmd": "greet", "args": ["world; rm -rf /"]},
                  addr)
        res, _ = fake.receive_kind("RES")
        assert {k: res[k] for k in ("cmd_id", "rc", "output", "name")} == {
            "cmd_id": "c1", "rc": 0, "output": "hello world; rm -rf /", "name": "cmdhost"}
        fake.send({"ID": "CMD", "cmd_id": "c2", "cmd": "sh", "args": ["-c", "id"]}, addr)
        res, _ = fake.receive_kind("RES")
        assert (res["cmd_id"], res["rc"]) == ("c2", 126)
        fake.send({"ID": "UPD", "cmd_id": "u1", "version": "9.9.9"}, addr)
        res, _ = fake.receive_kind("RES")
        assert (res["cmd_id"], res["rc"], res["output"]) == ("u1", 0, "done")
        assert marker.read_text() == "updating to 9.9.9\n"
    except (AssertionError, TimeoutError):
        raise AssertionError(f"{sys.exc_info()[1]}\n{agent.log()}") from None
    finally:
        fake.sock.close()


def test_bad_agent_config_one_line(tmp_path: Path) -> None:
    """A bad agent config stops start-up with one line naming the file and key."""
    config = tmp_path / "bad.yaml"
    config.write_text("plugins:\n  cpu_monitor:\n    per_cor: true\n")
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "heartbeat-agent", "-c", str(config),
                             "127.0.0.1"], check=False, capture_output=True, text=True, timeout=30,
                            cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"heartbeat-agent: config error: {config}: plugins.cpu_monitor.per_cor: unknown key "
        "(did you mean 'plugins.cpu_monitor.per_core'?)")


def test_agent_needs_a_server(tmp_path: Path) -> None:
    """Without a SERVER argument the agent refuses to start and says why."""
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "heartbeat-agent"],
                            check=False, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode != 0
    assert "name at least one SERVER" in result.stdout + result.stderr


def run_send(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HEARTBEAT, "send", *args], check=False, capture_output=True, text=True,
                          timeout=30, cwd=cwd, env={"HOME": str(cwd), "PATH": "/usr/bin:/bin"})


def test_send_boot_and_message(server: ServerProcess, tmp_path: Path) -> None:
    """heartbeat send --boot and -m reach the server and exit 0."""
    port = str(server.udp_port)
    boot = run_send("--boot", "--name", "cli-host", "--port", port, "127.0.0.1", cwd=tmp_path)
    assert (boot.returncode, boot.stdout, boot.stderr) == (0, "", "")
    message = run_send("-m", "maintenance starting", "--level", "warning", "--name",
                       "cli-host", "--port", port, "localhost", cwd=tmp_path)
    assert message.returncode == 0
    messages = wait_until(lambda: len(m := server.get("/api/0/messages?host=cli-host")
                                      ["messages"]) >= 2 and m)
    assert [(m["message"]["ID"], m["message"].get("text"), m["message"].get("level"))
            for m in messages[:2]] == [("MSG", "maintenance starting", "warning"),
                                        ("BOOT", None, None)]
    assert server.host("cli-host")["boot_time"] == psutil.boot_time()


def test_send_to_unresolvable_server_fails_clearly(tmp_path: Path) -> None:
    """A SERVER that does not resolve gives a non-zero exit and one clear line."""
    result = run_send("--boot", "no-such-host.invalid", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("heartbeat: cannot resolve no-such-host.invalid: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_send_refuses_a_name_the_server_would_drop(capsys: pytest.CaptureFixture[str]) -> None:
    """heartbeat send with an invalid host name exits 2 naming it, instead of sending."""
    from heartbeat import cli

    rc = cli.main(["send", "-m", "hello", "--name", "bad name", "--port", "9", "127.0.0.1"])
    assert (rc, capsys.readouterr().err) == (
        2, "heartbeat: 'bad name' is not a valid host name (1-253 of A-Z a-z 0-9 . _ -); "
           "use --name or name: in the config\n")


def test_send_port_out_of_range_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """heartbeat send --port 70000 is a usage error, not a traceback."""
    from heartbeat import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["send", "--boot", "--port", "70000", "127.0.0.1"])
    assert (e.value.code, capsys.readouterr().err.splitlines()[-1]) == (
        2, "heartbeat send: error: argument --port: 70000 is not a port (1-65535)")


def test_sigterm_ends_the_agent_while_a_plugin_hangs_in_a_thread(tmp_path: Path,
                                                                  agents: Any) -> None:
    """A collection stuck in a thread (a hung NFS mount) does not stop SIGTERM ending it."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "stuck.py").write_text(
        "import threading\n"
        "from heartbeat.agent.plugin import MonitorPlugin\n"
        "class Stuck(MonitorPlugin):\n"
        "    name = 'stuck'\n"
        "    async def collect(self):\n"
        "        return await self.run_in_thread(threading.Event().wait)\n")
    fake = FakeServer()
    agent = agents(["127.0.0.1"], {
        **FAST, "hb_port": fake.port, "name": "stuckhost", "plugin_dirs": [str(plugins)],
        "plugins": {"stuck": {"timeout": 0.2}, **{n: {"enabled": False} for n in (
            "os_info", "cpu_monitor", "memory_monitor", "disk_monitor", "network_monitor",
            "filesystem_info", "zfs_monitor")}}})
    try:
        plg, _ = fake.receive_kind("PLG")
        assert plg["plugins"] == {"stuck": {"error": "timed out after 0.2 s"}}
        assert agent.process is not None
        agent.process.terminate()
        assert agent.process.wait(timeout=5) == -signal.SIGTERM  # twistd re-raises it
    finally:
        fake.sock.close()


def test_sighup_stops_the_agent_cleanly_with_shut(tmp_path: Path, agents: Any) -> None:
    """SIGHUP (a closed terminal, a rotation script) stops the agent as SIGTERM does:
    with -b it still says SHUT, and the process ends cleanly."""
    fake = FakeServer()
    agent = agents(["127.0.0.1"], {
        **FAST, "hb_port": fake.port, "name": "huphost",
        "plugins": {n: {"enabled": False} for n in (
            "os_info", "cpu_monitor", "memory_monitor", "disk_monitor", "network_monitor",
            "filesystem_info", "zfs_monitor")}}, "-b")
    try:
        fake.receive_kind("HTB")
        assert agent.process is not None
        agent.process.send_signal(signal.SIGHUP)
        shut, _ = fake.receive_kind("SHUT")
        assert shut["name"] == "huphost"
        assert agent.process.wait(timeout=10) == 0
        assert "Received SIGHUP, shutting down" in agent.log()
        assert "Server Shut Down." in agent.log()
    finally:
        fake.sock.close()
