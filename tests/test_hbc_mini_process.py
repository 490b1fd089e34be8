"""scripts/hbc_mini.py as a real process: ``python3 -I hbc_mini.py`` against the real server.

CMD and UPD are queued through the server's API; the cases the server cannot
stage on demand (a resend after the RES, a CMD from a foreign address, a
timeout) use a small UDP server in the test that plays the server's part of
docs/PROTOCOL.md (ACK after HTB, then CMD/UPD).
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ServerProcess, stop_process, wait_until

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "hbc_mini.py"
ARCSTATS = Path(__file__).resolve().parent / "fixtures" / "hbc_mini" / "arcstats.txt"
ALL_OFF = {name: {"enabled": False} for name in (
    "os_info", "cpu_monitor", "memory_monitor", "disk_monitor", "network_monitor")}


def _python38() -> str | None:
    """A working Python 3.8 (pyenv's shims may name one that is not installed)."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))
    candidates += [p for p in [shutil.which("python3.8")] if p]
    for candidate in candidates:
        check = subprocess.run([candidate, "-I", "-c",
                                "import sys; assert sys.version_info[:2] == (3, 8)"],
                               capture_output=True, check=False, timeout=30)
        if check.returncode == 0:
            return candidate
    return None


PYTHON3 = shutil.which("python3") or sys.executable
PYTHON38 = _python38()
TAGS = {PYTHON3: "python3", PYTHON38: "python3-8"}
"""Each interpreter's part of a host or job name on the module's one server."""
INTERPRETERS = [
    pytest.param(PYTHON3, id="python3"),
    pytest.param(PYTHON38, id="python3.8", marks=pytest.mark.skipif(
        PYTHON38 is None, reason="no Python 3.8 interpreter here (the static check still runs)")),
]


class Clients:
    """Starts hbc_mini processes; any still running at teardown is killed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []
        self.count = 0

    def config(self, config: dict[str, Any]) -> Path:
        self.count += 1
        path = self.directory / f"hbc{self.count}.json"
        path.write_text(json.dumps(config))
        return path

    def start(self, python: str, config: dict[str, Any], *args: str) -> subprocess.Popen[bytes]:
        log = self.directory / f"hbc{self.count + 1}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [python, "-I", str(SCRIPT), "-c", str(self.config(config)), *args],
                stdout=out, stderr=subprocess.STDOUT)
        process.log_path = log  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    def run(self, python: str, config: dict[str, Any], *args: str
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python, "-I", str(SCRIPT), "-c", str(self.config(config)), *args],
                              capture_output=True, text=True, timeout=30, check=False)

    def stop(self, process: subprocess.Popen[bytes]) -> int:
        return stop_process(process)

    def close(self) -> None:
        for process in self.processes:
            stop_process(process, signal.SIGKILL)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server for the module (a twistd costs a second of CPU to start): each test
    uses hosts and jobs of its own names, so none sees another's."""
    started = ServerProcess(tmp_path_factory.mktemp("hbc-mini"), jobs={
        f"backup-{tag}": {"period": "1h", "host": f"mini-job-{tag}"} for tag in TAGS.values()})
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Clients]:
    """hbc_mini processes for one test."""
    started = Clients(tmp_path)
    yield started
    started.close()


def log_of(process: subprocess.Popen[bytes]) -> str:
    return Path(process.log_path).read_text()  # type: ignore[attr-defined]


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# --- Against the real server -----------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("python", INTERPRETERS)
def test_host_up_with_plugin_data(server: ServerProcess, clients: Clients, tmp_path: Path,
                                  python: str) -> None:
    """-b: BOOT, host UP with rtt, every plugin's data in the API (one PLG); SIGTERM: SHUT."""
    name = "mini-" + TAGS[python]
    check = _script(tmp_path / "check_ok", "echo 'OK - fine | t=0.25s;1;2;0'\n")
    plugins: dict[str, Any] = {
        "memory_monitor": {"arcstats_path": str(ARCSTATS)},
        "nagios_runner": {"commands": [{"name": "check_ok", "command": [check]}]}}
    if shutil.which("ping"):  # .ci/apt-install installs iputils-ping
        plugins["ping_monitor"] = {"hosts": ["127.0.0.1"], "count": 1, "ping_timeout": 2}
    client = clients.start(python, {"hb_port": server.udp_port, "interval": 0.3, "name": name,
                                    "batch_delay": 10, "plugins": plugins}, "-b", "127.0.0.1")
    expected = {"os_info", "cpu_monitor", "memory_monitor", "disk_monitor", "network_monitor",
                "nagios_runner", *(["ping_monitor"] if "ping_monitor" in plugins else [])}
    host = wait_until(lambda: (h := server.host(name)) and set(h["plugins"]) == expected
                      and h["rtt"] is not None and h, timeout=15)
    assert (host["state"], host["addr"], host["interval"], host["version"]) == (
        "UP", "127.0.0.1", 0.3, "0.1.0")
    assert 0 <= host["rtt"] < 1000
    data = {p: s["data"] for p, s in server.get(f"/api/0/hosts/{name}/plugins")["plugins"].items()}
    version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert (data["os_info"]["python_version"], data["os_info"]["agent"]) == (version, "hbc_mini")
    assert {"cpu_percent", "load_1min", "load_5min", "load_15min", "per_core",
            "process_count", "uptime_seconds"} <= set(data["cpu_monitor"])
    assert (data["memory_monitor"]["zfs_arc_mb"], data["memory_monitor"]["zfs_arc_min_mb"]) == (
        14267.0, 999.3)
    assert {"percent", "free_gb", "free_mb"} <= set(data["disk_monitor"]["partitions"]["/"])
    assert {"errors_total", "dropped", "interfaces"} <= set(data["network_monitor"])
    assert data["nagios_runner"] == {"check_ok_status_code": 0, "check_ok_status": "OK",
                                     "check_ok_output": "OK - fine", "check_ok_t": 0.25}
    if "ping_monitor" in data:
        assert data["ping_monitor"]["targets"]["127.0.0.1"]["reachable"] == 1
    assert clients.stop(client) == 0
    down = wait_until(lambda: (h := server.host(name)) and h["state"] == "DOWN" and h)
    assert down["down_reason"] == "shutdown"
    kinds = [m["message"]["ID"] for m in reversed(
        server.get(f"/api/0/messages?host={name}&limit=500")["messages"])]
    assert (kinds[0], kinds[-1], kinds.count("PLG")) == ("BOOT", "SHUT", 1)
    assert "Traceback" not in log_of(client)


@pytest.mark.integration
@pytest.mark.parametrize("python", INTERPRETERS)
def test_one_shot_message(server: ServerProcess, clients: Clients, python: str) -> None:
    """-m sends one MSG with its level and exits 0 at once; nothing else is sent."""
    name = "mini-msg-" + TAGS[python]
    result = clients.run(python, {"hb_port": server.udp_port, "name": name},
                         "-m", "maintenance starting", "--level", "warning", "127.0.0.1")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    messages = wait_until(lambda: server.get(f"/api/0/messages?host={name}")["messages"])
    (message,) = [m["message"] for m in messages]
    assert {k: message[k] for k in ("ID", "name", "text", "level", "seq", "version")} == {
        "ID": "MSG", "name": name, "text": "maintenance starting", "level": "warning",
        "seq": 1, "version": "0.1.0"}


@pytest.mark.integration
@pytest.mark.parametrize("python", INTERPRETERS)
def test_job_wraps_a_command(server: ServerProcess, clients: Clients, python: str) -> None:
    """--job NAME SERVER -- command: the JOB start and exit pings reach the server (this
    host is the job's host), the output passes through, the exit code is the command's."""
    job, host = f"backup-{TAGS[python]}", f"mini-job-{TAGS[python]}"
    result = clients.run(python, {"hb_port": server.udp_port, "name": host}, "--job",
                         job, "127.0.0.1", "--", "sh", "-c", "echo dumped; exit 4")
    assert (result.returncode, result.stdout, result.stderr) == (4, "dumped\n", "")
    runs = wait_until(lambda: server.get(f"/api/0/jobs/{job}")["runs"])
    assert [(r["outcome"], r["exit_code"], r["log"], r["source"], r["duration"] is not None)
            for r in runs] == [("fail", 4, "dumped\n", f"{host} (UDP)", True)]
    usage = clients.run(python, {"hb_port": server.udp_port}, "--job", job, "127.0.0.1")
    assert (usage.returncode, usage.stderr) == (2, "hbc_mini: --job needs the command to run "
                                                   "after --\n")


def test_one_shot_to_unresolvable_server_fails_in_one_line(clients: Clients) -> None:
    """A server name that does not resolve: one line naming it, exit 2 (no lookup sent)."""
    bad = "x" * 64 + ".invalid"  # a label over 63 characters fails before any DNS query
    result = clients.run(PYTHON3, {}, "-m", "hello", bad)
    assert result.returncode == 2
    assert result.stderr.startswith(f"hbc_mini: cannot resolve server '{bad}': ")
    assert result.stderr.count("\n") == 1


def test_bad_config_exits_non_zero_naming_the_key(clients: Clients) -> None:
    """A bad key stops start-up: one line with file and key, exit 1, nothing started."""
    path = clients.config({"plugins": {"cpu_monitor": {"per_cor": True}}})
    result = subprocess.run([PYTHON3, "-I", str(SCRIPT), "-c", str(path), "127.0.0.1"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert (result.returncode, result.stderr) == (1, (
        f"hbc_mini: config error: {path}: plugins.cpu_monitor.per_cor: unknown key "
        "(did you mean 'plugins.cpu_monitor.per_core'?)\n"))


@pytest.mark.integration
def test_daemon_mode(server: ServerProcess, clients: Clients, tmp_path: Path) -> None:
    """-d detaches (the command returns 0), writes the pidfile, runs, and SIGTERM ends it."""
    pidfile = tmp_path / "hbc.pid"
    config = {"hb_port": server.udp_port, "interval": 0.3, "name": "mini-daemon",
              "plugins": ALL_OFF}
    result = clients.run(PYTHON3, config, "-d", "--pidfile", str(pidfile), "127.0.0.1")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip()))
    try:
        assert wait_until(lambda: (h := server.host("mini-daemon")) and h["state"] == "UP")
        again = clients.run(PYTHON3, config, "-d", "--pidfile", str(pidfile), "127.0.0.1")
        assert (again.returncode, again.stderr) == (
            1, f"hbc_mini: already running as pid {pid} ({pidfile})\n")
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pidfile.exists())
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or
                   Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z")
    finally:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


@pytest.mark.integration
def test_commands_queued_through_the_server_api(server: ServerProcess, clients: Clients,
                                                tmp_path: Path) -> None:
    """CMD and UPD queued with POST /api/0/hosts/<name>/commands|upgrade come back as
    results: allow-listed argv + args run once; a name not in the list is refused unrun."""
    marker = tmp_path / "ran.log"
    hello = _script(tmp_path / "hello", f'echo "hello $*"; echo ran >> {marker}\n')
    update = _script(tmp_path / "update", 'echo "updating to $HEARTBEAT_VERSION"\n')
    client = clients.start(PYTHON3, {
        "hb_port": server.udp_port, "interval": 0.2, "name": "mini-api", "plugins": ALL_OFF,
        "allowed_commands": {"hello": [hello]}, "update_command": [update]}, "127.0.0.1")
    wait_until(lambda: (h := server.host("mini-api")) and h["state"] == "UP")
    queued = [server.request("POST", "/api/0/hosts/mini-api/commands", body)[1]["command"]
              for body in ({"cmd": "hello", "args": ["world"]}, {"cmd": "rm", "args": ["-rf"]})]
    queued.append(server.request("POST", "/api/0/hosts/mini-api/upgrade",
                                 {"version": "9.9"})[1]["command"])
    ids = [c["cmd_id"] for c in queued]
    host = wait_until(lambda: (h := server.host("mini-api")) and not h["pending"]
                      and len(h["results"]) == 3 and h)
    assert clients.stop(client) == 0
    results = {r["cmd_id"]: {k: r[k] for k in ("status", "kind", "rc", "output")}
               for r in host["results"]}
    assert results == {
        ids[0]: {"status": "done", "kind": "CMD", "rc": 0, "output": "hello world"},
        ids[1]: {"status": "done", "kind": "CMD", "rc": 126,
                 "output": "command 'rm' is not in this host's allowed_commands"},
        ids[2]: {"status": "done", "kind": "UPD", "rc": 0, "output": "updating to 9.9"}}
    assert marker.read_text() == "ran\n"


# --- Against a server played by the test -----------------------------------------


class FakeServer:
    """The server's side of the protocol on loopback, driven step by step by a test."""

    def __init__(self, family: int = socket.AF_INET, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]

    def receive(self) -> tuple[dict[str, Any], Any] | None:
        try:
            data, addr = self.sock.recvfrom(65535)
        except TimeoutError:
            return None
        text = data if data[:1] == b"{" else zlib.decompress(data)
        return json.loads(text), addr

    def send(self, message: dict[str, Any], addr: Any) -> None:
        self.sock.sendto(json.dumps(message).encode(), addr)

    def ack(self, htb: dict[str, Any], addr: Any) -> None:
        self.send({"ID": "ACK", "seq": htb["seq"], "ts": htb["ts"], "server_ts": time.time()},
                  addr)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """A UDP socket on 127.0.0.1 playing the heartbeat server."""
    fake = FakeServer()
    yield fake
    fake.close()


@pytest.mark.integration
def test_commands_and_update(fake_server: FakeServer, clients: Clients, tmp_path: Path) -> None:
    """CMD runs allow-listed argv + args once (a resend gets the same RES), refuses others
    unrun, kills on timeout; UPD runs update_command; CMDs from non-servers are ignored."""
    marker = tmp_path / "hello.log"
    hello = _script(tmp_path / "hello", f'echo "hello $*"; echo ran >> {marker}\n')
    evil = _script(tmp_path / "evil", f"touch {tmp_path / 'evil-ran'}\n")
    slow = _script(tmp_path / "slow", "echo working; exec sleep 30\n")
    update = _script(tmp_path / "update", 'echo "updating to $HEARTBEAT_VERSION" >&2\n')
    client = clients.start(PYTHON3, {
        "hb_port": fake_server.port, "interval": 0.2, "name": "mini-cmd", "plugins": ALL_OFF,
        "allowed_commands": {"hello": [hello, "fixed"], "slow": [slow]},
        "command_timeout": 0.5, "update_command": [update]}, "127.0.0.1")
    spoofer = FakeServer()
    results: dict[str, list[dict[str, Any]]] = {}
    messages: list[dict[str, Any]] = []
    resent = False
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            got = fake_server.receive()
            if got is None:
                if {"c1", "c2", "c3", "u1"} <= set(results) and len(results["c1"]) == 2:
                    break
                continue
            message, addr = got
            messages.append(message)
            if message["ID"] == "RES":
                results.setdefault(str(message["cmd_id"]), []).append(message)
            elif message["ID"] == "HTB":
                fake_server.ack(message, addr)
                if len([m for m in messages if m["ID"] == "HTB"]) == 1:
                    fake_server.send({"ID": "CMD", "cmd_id": "c1", "cmd": "hello",
                                      "args": ["world", "; rm -rf /"]}, addr)
                    fake_server.send({"ID": "CMD", "cmd_id": "c2", "cmd": evil, "args": []},
                                     addr)
                    fake_server.send({"ID": "CMD", "cmd_id": "c3", "cmd": "slow"}, addr)
                    fake_server.send({"ID": "UPD", "cmd_id": "u1", "version": "9.9"}, addr)
                    spoofer.send({"ID": "CMD", "cmd_id": "s1", "cmd": "hello", "args": []},
                                 addr)
                elif "c1" in results and not resent:
                    fake_server.send({"ID": "CMD", "cmd_id": "c1", "cmd": "hello",
                                      "args": ["world", "; rm -rf /"]}, addr)
                    resent = True
        assert spoofer.receive() is None
    finally:
        spoofer.close()
    assert clients.stop(client) == 0
    assert [{k: r[k] for k in ("cmd_id", "rc", "output")} for r in results["c1"]] == [
        {"cmd_id": "c1", "rc": 0, "output": "hello fixed world ; rm -rf /"}] * 2
    assert marker.read_text() == "ran\n"  # once: not for the resend, not for the spoofer
    assert {k: results["c2"][0][k] for k in ("rc", "output")} == {
        "rc": 126, "output": f"command {evil!r} is not in this host's allowed_commands"}
    assert not (tmp_path / "evil-ran").exists()
    assert {k: results["c3"][0][k] for k in ("rc", "output")} == {
        "rc": 124, "output": f"working\n[timed out, killed: {slow}]"}
    assert {k: results["u1"][0][k] for k in ("rc", "output")} == {
        "rc": 0, "output": "updating to 9.9"}
    assert "s1" not in results
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    beats = [m for m in messages if m["ID"] == "HTB"]
    assert {k: beats[0][k] for k in ("name", "interval", "version")} == {
        "name": "mini-cmd", "interval": 0.2, "version": "0.1.0"}
    assert "rtt" not in beats[0] and all(b["rtt"] >= 0 for b in beats[1:])


@pytest.mark.integration
def test_slow_plugin_does_not_delay_heartbeats(fake_server: FakeServer, clients: Clients,
                                               tmp_path: Path) -> None:
    """A nagios check that takes seconds leaves the HTB schedule regular."""
    sleeper = _script(tmp_path / "sleeper", "exec sleep 5\n")
    plugins = dict(ALL_OFF, cpu_monitor={"interval": 0.5},
                   nagios_runner={"commands": [{"name": "slow", "command": [sleeper]}]})
    client = clients.start(PYTHON3, {"hb_port": fake_server.port, "interval": 0.25,
                                     "name": "mini-slow", "plugins": plugins,
                                     "batch_delay": 0.1}, "127.0.0.1")
    arrivals: list[float] = []
    kinds: list[str] = []
    end = time.monotonic() + 15  # until the first HTB (start-up may be slow), then 1.75 s
    while time.monotonic() < end:
        got = fake_server.receive()
        if got is not None:
            kinds.append(got[0]["ID"])
            if got[0]["ID"] == "HTB":
                if not arrivals:
                    end = time.monotonic() + 1.75
                arrivals.append(time.monotonic())
                fake_server.ack(*got)
    assert clients.stop(client) == 0
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) >= 7
    assert all(0.1 < gap < 0.5 for gap in gaps), gaps
    assert "PLG" in kinds  # cpu_monitor's data went out while the check still ran


@pytest.mark.integration
def test_every_server_address_gets_heartbeats(clients: Clients) -> None:
    """IPv4 and IPv6 servers both get HTB, and the ACK over IPv6 counts for the RTT."""
    v4 = FakeServer()
    try:
        v6 = FakeServer(socket.AF_INET6, "::1", v4.port)
    except OSError:
        v4.close()
        pytest.skip("no IPv6 loopback here")
    try:
        client = clients.start(PYTHON3, {"hb_port": v4.port, "interval": 0.2,
                                         "name": "mini-dual", "plugins": ALL_OFF},
                               "127.0.0.1", "::1")
        seen: dict[str, list[dict[str, Any]]] = {"v4": [], "v6": []}
        end = time.monotonic() + 5
        while time.monotonic() < end and not (len(seen["v4"]) >= 2 and any(
                "rtt" in m for m in seen["v6"])):
            for label, fake in (("v4", v4), ("v6", v6)):
                got = fake.receive()
                if got and got[0]["ID"] == "HTB":
                    seen[label].append(got[0])
                    if label == "v6":
                        fake.ack(*got)
        assert clients.stop(client) == 0
    finally:
        v4.close()
        v6.close()
    assert len(seen["v4"]) >= 2 and any("rtt" in m for m in seen["v6"])
    assert {m["seq"] for m in seen["v4"]} & {m["seq"] for m in seen["v6"]}  # the same HTBs


@pytest.mark.integration
def test_plugins_due_together_share_each_plg(fake_server: FakeServer, clients: Clients) -> None:
    """Plugins with one interval stay in step (cpu's first sample is longer) and every
    round goes out as one PLG carrying all of them."""
    # 1.5 s: a collection longer than the interval skips a tick by design, and on a loaded
    # CI machine one round of every plugin has taken over 0.6 s.
    plugins = {name: {"interval": 1.5} for name in ALL_OFF}
    client = clients.start(PYTHON3, {"hb_port": fake_server.port, "interval": 5,
                                     "name": "mini-rounds", "plugins": plugins}, "127.0.0.1")
    rounds: list[list[str]] = []
    end = time.monotonic() + 30
    while time.monotonic() < end and len(rounds) < 3:
        got = fake_server.receive()
        if got is not None and got[0]["ID"] == "PLG":
            rounds.append(sorted(got[0]["plugins"]))
    assert clients.stop(client) == 0
    assert rounds == [sorted(ALL_OFF)] * 3
