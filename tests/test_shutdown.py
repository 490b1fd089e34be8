"""Ordered shutdown: each child of the tree stopped in reverse order after the one before
has finished; outcomes published while draining reach the journal; hashing threads end
without the reactor thread waiting in a join."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from heartbeat.config.server import PushoverConfig
from heartbeat.server.auth import HasherClosed, PasswordHasher
from heartbeat.server.compose import ServerService
from heartbeat.server.serial import SerialWorker
from tests.apistack import fired
from tests.memserver import InProcessServer


class Child(Service):
    """A service whose stop waits for the test; it notes what was still running then."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.setName(name)
        self.log = log
        self.stopping: Deferred[None] | None = None

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.log.append(f"stop {self.name}")
        self.stopping = Deferred()
        return self.stopping


def test_children_stop_in_reverse_one_at_a_time() -> None:
    """The next child is asked to stop only once the one after it in the tree has stopped."""
    log: list[str] = []
    top = ServerService({})
    children = [Child(name, log) for name in ("store", "journal", "notify", "web")]
    for child in children:
        child.setServiceParent(top)
    top.startService()
    done = top.stopService()
    assert log == ["stop web"]
    for n, child in enumerate(reversed(children)):
        assert child.stopping is not None
        assert not done.called
        child.stopping.callback(None)
        assert len(log) == min(n + 2, 4)
    assert (fired(done), log, top.stopped) == (
        None, ["stop web", "stop notify", "stop journal", "stop store"],
        ["web", "notify", "journal", "store"])


def test_a_failing_stop_does_not_stop_the_others() -> None:
    """A child whose stop fails is logged; the children before it still stop."""
    log: list[str] = []
    top = ServerService({})
    first, second = Child("store", log), Child("web", log)
    first.setServiceParent(top)
    second.setServiceParent(top)
    top.startService()
    done = top.stopService()
    assert second.stopping is not None
    second.stopping.errback(RuntimeError("port would not close"))
    assert first.stopping is not None
    first.stopping.callback(None)
    assert (fired(done), top.stopped) == (None, ["web", "store"])


def test_notification_outcome_during_the_drain_is_journaled(tmp_path: Path) -> None:
    """A send still in flight when the server stops ends while it drains (listeners and
    alerting already stopped): its outcome is in the journal, which closes after it, and
    the store commits last."""
    server = InProcessServer(
        tmp_path, pushsrv="pushover", notify_timeout=60.0,
        pushover=PushoverConfig(token="app-token", user="group",
                                url="http://127.0.0.1:9/1/messages.json"))
    server.send({"ID": "HTB", "name": "web1", "interval": 10})
    server.reactor.advance(server.config.grace + 11)  # DOWN: a notification in flight
    notifier = server.parts.notifier
    assert notifier is not None
    assert notifier.to_json()["channels"]["pushover"]["in_flight"] == 1
    commits = server.parts.store.commits
    done = server.service.stopService()
    assert not done.called  # the notifier waits for its send
    assert server.service.stopped == [  # type: ignore[attr-defined]
        "hangup", "websocket-0", "web", "ingest", "status-pages", "jobs", "monitor",
        "operations", "alerting"]
    server.reactor.advance(5.0)  # the notifier's stop_timeout: the send is cancelled
    assert fired(done) is None
    assert server.service.stopped == [  # type: ignore[attr-defined]
        "hangup", "websocket-0", "web", "ingest", "status-pages", "jobs", "monitor",
        "operations", "alerting",
        "notify", "journal", "auth", "store", "collector"]
    journal = Path(server.config.journal_dir) / server.config.journal_file
    events = [json.loads(line)["event"] for line in journal.read_bytes().splitlines()
              if b'"event"' in line]
    failed = [e for e in events if e["type"] == "notify.failed"]
    assert ([e["type"] for e in events][-1], len(failed)) == ("notify.failed", 1)
    assert (failed[0]["host"], failed[0]["channel"], failed[0]["final"]) == (
        "web1", "pushover", True)
    assert server.parts.store.commits == commits + 1


@pytest_twisted.ensureDeferred
async def test_hashing_thread_ends_without_blocking_the_reactor() -> None:
    """Closing the hasher while a hash runs returns at once; queued hashes are dropped,
    the one in progress finishes, then the thread ends (no join while it works)."""
    from twisted.internet import reactor

    worker = SerialWorker(reactor, "test-passwords")
    hasher = PasswordHasher(worker, iterations=1000)
    worker.start()
    started, release = threading.Event(), threading.Event()

    def slow(*args: Any) -> str:
        started.set()
        release.wait(10)
        return "done"

    running = hasher._run(slow)
    queued = hasher.hash("queued")
    assert await deferToThread(started.wait, 10)
    closed = hasher.close()
    assert not closed.called  # returned without waiting for the thread
    refused = hasher.hash("after")
    release.set()
    assert await running == "done"
    outcomes = []
    for d in (queued, refused):
        try:
            await d
        except HasherClosed:
            outcomes.append("closed")
    await closed
    alive = [thread.name for thread in worker._pool.threads if thread.is_alive()]
    assert (outcomes, alive) == (["closed", "closed"], [])
