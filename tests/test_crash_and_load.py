"""The real server under load: killed with SIGKILL mid-run, and rotating its journal at speed."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ServerProcess, wait_until

pytestmark = pytest.mark.integration

HOSTS = 200
HOT = 50
"""Hosts whose CPU is past the critical threshold: each has a CRITICAL alert."""
THRESHOLDS = {"cpu_monitor": {"cpu_percent": {"warning": 50, "critical": 90}}}


def _heartbeat(n: int, seq: int) -> bytes:
    return json.dumps({"ID": "HTB", "name": f"load{n % HOSTS:03d}", "interval": 60,
                       "seq": seq}).encode()


def _plugins(n: int, seq: int) -> bytes:
    return zlib.compress(json.dumps({
        "ID": "PLG", "name": f"load{n % HOSTS:03d}", "seq": seq,
        "plugins": {"cpu_monitor": {"cpu_percent": 95 if n % HOSTS < HOT else 10,
                                    "load": [0.1, 0.2, 0.3]},
                    "memory_monitor": {"percent": 41.2, "pad": "x" * 600}}}).encode())


class Sender:
    """Sends paced datagrams from a thread until stopped; counts what it sent."""

    def __init__(self, port: int, rate: int) -> None:
        self.port = port
        self.rate = rate
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            start = time.monotonic()
            while not self._stop.is_set():
                due = int((time.monotonic() - start) * self.rate)
                while self.sent < due:
                    n = self.sent
                    data = _plugins(n, n) if n // HOSTS % 2 else _heartbeat(n, n)
                    sock.sendto(data, ("127.0.0.1", self.port))
                    self.sent += 1
                time.sleep(0.002)


def _journal_lines(directory: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(directory.glob("messages.journal*")):
        for line in path.read_bytes().split(b"\n")[:-1]:
            yield path, line


@pytest.mark.long(15)
def test_sigkill_mid_load_then_restart(server_factory: Any, tmp_path: Path) -> None:
    """Killed mid-load: the store opens, every host and alert is back, no journal line is torn
    but one closed off, and a torn line from a kill mid-write is detected and skipped."""
    settings = {"source_rate": 1e6, "journal_max_size": 100_000, "journal_max_backups": 100,
                "thresholds": THRESHOLDS}
    server: ServerProcess = server_factory(**settings)
    journal = Path(server.config["journal_dir"])
    with Sender(server.udp_port, rate=2000) as sender:
        wait_until(lambda: sender.sent > HOSTS * 2)
        alerts = wait_until(lambda: (a := server.get("/api/0/alerts")["alerts"])
                            and len(a) == HOT and a)
        seen = time.time()
        wait_until(lambda: (server.get("/api/0/status")["store"]["last_commit"] or 0)
                   > seen + 0.2)
        before = {h["name"]: h for h in server.get("/api/0/hosts")["hosts"]}
        # What the API showed is on disk once a batch begun after it committed: the second
        # commit from now (the first may have been gathered before). No pause: a loaded
        # machine may take longer than any pause to flush.
        commits = server.get("/api/0/status")["store"]["commits"]
        wait_until(lambda: server.get("/api/0/status")["store"]["commits"] >= commits + 2)
        server.kill()  # SIGKILL, with datagrams still arriving
    assert sorted(before) == [f"load{n:03d}" for n in range(HOSTS)]
    assert {(a["host"], a["metric_path"], a["level"]) for a in alerts} == {
        (f"load{n:03d}", "cpu_monitor.cpu_percent", "CRITICAL") for n in range(HOT)}
    store = sqlite3.connect(Path(server.config["state_dir"]) / "heartbeat.sqlite3")
    assert store.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert store.execute("SELECT COUNT(*) FROM hosts").fetchone() == (HOSTS,)
    store.close()
    lines = list(_journal_lines(journal))
    torn = [line for _, line in lines if not _parses(line)]
    assert len(lines) > 500 and len(torn) <= 1  # at most the line being written at the kill
    # What a kill in the middle of a write leaves behind: half a line, no newline.
    with open(journal / "messages.journal", "ab") as f:
        f.write(b'{"timestamp":1700000000.0,"datetime":"2023-11-14T22:13:20","source_ip":"12')
    again = server_factory(tmp_path, hb_port=server.udp_port, hbd_port=server.http_port,
                           ws_port=server.ws_port, **settings)
    after = {h["name"]: h for h in again.get("/api/0/hosts")["hosts"]}
    assert [(a["host"], a["metric_path"], a["level"], a["since"])
            for a in again.get("/api/0/alerts")["alerts"]] == [
        (a["host"], a["metric_path"], a["level"], a["since"]) for a in alerts]
    assert sorted(after) == sorted(before)
    assert {n: (h["state"], h["addr"]) for n, h in after.items()} == {
        n: ("UP", "127.0.0.1") for n in before}
    assert all(after[n]["last_seen"] >= before[n]["last_seen"] for n in before)
    assert "ended in a torn line" in again.log()
    again.send({"ID": "MSG", "name": "load000", "text": "after the restart"})
    messages = wait_until(lambda: again.get("/api/0/messages?limit=5")["messages"]
                          if again.get("/api/0/messages?limit=1")["messages"][0]["message"]
                          .get("text") == "after the restart" else None)
    assert messages[0]["message"]["text"] == "after the restart"
    # Oldest file first; the restart may have rotated the fragment into a backup, and if
    # the kill itself tore the last line, the fragment was appended to that same line.
    files = sorted(journal.glob("messages.journal*"),
                   key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 1)
    raw = [line for path in files for line in path.read_bytes().split(b"\n")[:-1]]
    fragment = next(i for i, line in enumerate(raw) if line.endswith(
        b'{"timestamp":1700000000.0,"datetime":"2023-11-14T22:13:20","source_ip":"12'))
    after_restart = raw[fragment + 1:]
    assert after_restart and all(_parses(line) for line in after_restart)  # they start clean
    assert (journal / "messages.journal").read_bytes().endswith(b"\n")


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


@pytest.mark.parametrize("seconds", [
    2,
    pytest.param(10, marks=pytest.mark.slow),
])
def test_rotation_at_5000_per_second_loses_no_line(server_factory: Any, seconds: int) -> None:
    """5,000 datagrams/s with the journal rotating every ~100 KB: lines == datagrams accepted."""
    server: ServerProcess = server_factory(source_rate=1e6, journal_max_size=100_000,
                                           journal_max_backups=1000)
    sender = Sender(server.udp_port, rate=5000)
    with sender:
        time.sleep(seconds)
    accepted = wait_until(lambda: _settled(server))
    journal = Path(server.config["journal_dir"])
    status = server.get("/api/0/status")
    server.stop()  # SIGTERM: the journal is flushed
    message_lines = 0
    for _, line in _journal_lines(journal):
        entry = json.loads(line)  # every line whole
        message_lines += "message" in entry
    assert status["journal"]["rotations"] > 10 * seconds
    assert (message_lines, accepted) == (accepted, sender.sent)


def _settled(server: ServerProcess) -> int | None:
    """The accepted count, once it and the journal's line count have stopped moving."""
    first = server.get("/api/0/status")
    time.sleep(0.3)
    second = server.get("/api/0/status")
    same = all(first[k] == second[k] for k in ("ingest", "journal"))
    return second["ingest"]["accepted"] if same else None
