"""The blocking workers' threads: in order, and below the reactor's priority."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest_twisted

from heartbeat.config.server import ServerConfig
from heartbeat.server.compose import build
from heartbeat.server.serial import WORKER_NICE, SerialWorker
from heartbeat.server.settings import ServerSettings


@pytest_twisted.ensureDeferred
async def test_a_worker_runs_below_the_reactors_priority() -> None:
    """A worker asked for WORKER_NICE runs that many steps below the thread that started it (the
    reactor's), which keeps its own priority: where they share a core, the reactor runs
    first (docs/PERFORMANCE.md, "WebSocket fan-out, 2026-12-03 afternoon")."""
    from twisted.internet import reactor

    before = os.getpriority(os.PRIO_PROCESS, 0)
    worker = SerialWorker(reactor, "test-nice", WORKER_NICE)
    worker.start()
    try:
        def where() -> tuple[int, int]:
            return threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0)

        thread, nice = await worker.run(where)
        assert thread != threading.get_native_id()
        assert WORKER_NICE > 0
        assert nice == min(19, before + WORKER_NICE)
        assert os.getpriority(os.PRIO_PROCESS, 0) == before
        assert [await worker.run(lambda n=n: n) for n in range(3)] == [0, 1, 2]
    finally:
        await worker.stop()


@pytest_twisted.ensureDeferred
async def test_only_the_servers_writers_are_niced(tmp_path: Path) -> None:
    """A login waits for its hash and an API read for the journal's reader: those threads
    of the composed server keep the process's priority (at nice 10 on a busy machine a
    login took seconds); the journal's writer runs niced."""
    from twisted.internet import reactor

    config = ServerConfig(state_dir=str(tmp_path), journal_dir=str(tmp_path))
    server = build(ServerSettings.from_config(config), reactor)
    assert server.journal is not None
    before = os.getpriority(os.PRIO_PROCESS, 0)
    expected = {"passwords": before, "journal reader": before,
                "journal writer": min(19, before + WORKER_NICE)}
    workers = {"passwords": server.auth.hasher.worker,
               "journal reader": getattr(server.journal, "_reader"),  # noqa: B009
               "journal writer": getattr(server.journal, "_worker")}  # noqa: B009
    found = {}
    for what, worker in workers.items():
        assert isinstance(worker, SerialWorker)
        worker.start()
        try:
            found[what] = await worker.run(os.getpriority, os.PRIO_PROCESS, 0)
        finally:
            await worker.stop()
    assert found == expected
