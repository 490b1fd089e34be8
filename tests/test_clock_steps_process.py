"""The real twistd while its wall clock is stepped (libfaketime, Debian's ``faketime``).

Ten minutes forward used to mark every beating host DOWN at once; an hour back
stalled the down check (a dead host stayed UP) and the rate windows for that
hour. Deadlines and timers now run on the monotonic clock
(heartbeat.server.steady); libfaketime steps only the wall clock here
(``FAKETIME_DONT_FAKE_MONOTONIC``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import ServerProcess, wait_until

pytestmark = pytest.mark.integration

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def _beat(server: ServerProcess, seconds: float) -> None:
    """Heartbeats every 0.25 s for ``seconds`` (a real host's, sped up)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        server.send({"ID": "HTB", "name": "web1", "interval": 1})
        time.sleep(0.25)


def _downs(server: ServerProcess) -> list[Any]:
    server.get("/api/0/messages?limit=1")  # the journal is written up to now
    return [e["event"] for e in server.journal_lines()
            if e.get("event", {}).get("type") == "host.down"]


def _state(server: ServerProcess) -> str:
    host = server.host("web1")
    return "" if host is None else str(host["state"])


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="apt-get install faketime")
def test_wall_clock_steps_move_no_deadline(server_factory: Any, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    for name, value in {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(offset),
                        "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}.items():
        monkeypatch.setenv(name, value)
    server = server_factory(grace=2.0)
    for name in ("LD_PRELOAD", "FAKETIME_TIMESTAMP_FILE"):
        monkeypatch.delenv(name)  # the test's own children run on the real clock
    _beat(server, 1.0)
    assert wait_until(lambda: _state(server) == "UP", 10)
    offset.write_text("+600\n")  # ten minutes forward
    _beat(server, 3.0)
    assert (_state(server), _downs(server)) == ("UP", [])
    offset.write_text("-3000\n")  # an hour back
    _beat(server, 3.0)
    assert _state(server) == "UP"
    assert wait_until(lambda: _state(server) == "DOWN", 15)  # silent: DOWN in 1 + 2 s
    status = server.get("/api/0/status")
    assert status["ingest"]["dropped"].get("rate_limited", 0) == 0
    assert len(_downs(server)) == 1
    assert "clock: the wall clock stepped +" in server.log()
