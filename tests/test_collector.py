"""The garbage collector runs after the store's flushes, and at least every period."""

from __future__ import annotations

import gc
from pathlib import Path

from twisted.internet.task import Clock

from heartbeat.server.collector import CollectorService
from tests.memserver import InProcessServer


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_automatic_collections_are_off_while_it_runs() -> None:
    """Started, it turns the automatic collections off; stopped, it turns them back on,
    and leaves them off when they were off before it started."""
    clock = Clock()
    gc.enable()
    collector = CollectorService(clock, 2.0)
    collector.startService()
    assert (gc.isenabled(), collector.to_json()["automatic"]) == (False, False)
    collector.stopService()
    assert gc.isenabled()
    gc.disable()
    collector = CollectorService(clock, 2.0)
    collector.startService()
    collector.stopService()
    assert not gc.isenabled()


def test_each_flush_collects_and_older_generations_take_turns() -> None:
    """Every flush collects the young, every ``middle_every``-th the middle generation,
    every ``full_every``-th all three; garbage cycles are found and counted."""
    clock = Clock()
    collector = CollectorService(clock, 2.0, middle_every=3, full_every=6)
    collector.after_flush()  # not running: nothing
    assert collector.collections == [0, 0, 0]
    collector.startService()
    gc.collect()
    for _ in range(5):
        _Cycle()
    for _ in range(12):
        clock.advance(0.5)
        collector.after_flush()
    assert collector.collections == [8, 2, 2]
    assert collector.collected >= 5  # the cycles only a collection frees
    assert collector.last == clock.seconds()
    body = collector.to_json()
    assert body["seconds"] >= body["longest"] > 0
    collector.stopService()


def test_the_timer_collects_when_no_flush_did() -> None:
    """Without flushes (a writer stuck on a slow disk) the timer collects every period;
    a flush's collection puts the timer's off."""
    clock = Clock()
    collector = CollectorService(clock, 2.0)
    collector.startService()
    clock.advance(2.0)
    clock.advance(2.0)
    assert sum(collector.collections) == 2
    clock.advance(1.5)
    collector.after_flush()
    clock.advance(0.5)  # the timer's tick, 0.5 s after the flush's collection
    assert sum(collector.collections) == 3
    clock.advance(2.0)
    assert sum(collector.collections) == 4
    collector.stopService()
    clock.advance(10.0)
    assert sum(collector.collections) == 4


def test_the_whole_server_collects_after_the_flush_freed_the_plgs(tmp_path: Path) -> None:
    """In the tree twistd builds: automatic collections off while it runs, and when the
    collector runs after a flush, the decoded PLGs the recorder held for it are gone
    from the young generation: the collection walks what outlives the flush only."""
    server = InProcessServer(tmp_path)
    collector = server.parts.collector
    assert collector is not None and not gc.isenabled()
    young: list[int] = []
    collect = collector.collect

    def held() -> int:
        """The PLGs' innermost dicts among the young (marked by their key)."""
        return sum(1 for o in gc.get_objects(0) if type(o) is dict and "held" in o)

    def counted() -> int:
        young.append(held())
        return collect()

    collector.collect = counted  # type: ignore[method-assign]
    server.reactor.advance(1.0)
    gc.collect()
    plugins = {f"p{n}": {"a": {"b": n}, "c": {"held": [n]}} for n in range(4)}
    for n in range(300):
        server.send({"ID": "PLG", "name": f"h{n}", "plugins": plugins}, ("192.0.2.1", 40000))
    del plugins
    assert held() == 300 * 4  # each PLG decoded, held by the recorder for the flush
    server.reactor.advance(server.config.store_flush_interval)
    assert young and young[-1] == 0
    status = server.http("GET", "/api/0/status")[1]["collector"]
    assert status["collections"][0] >= 1 and status["automatic"] is False
    server.stop()
    assert gc.isenabled()
