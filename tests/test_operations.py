"""The operations service with a Clock and a real store: changes kept, timed and journaled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from heartbeat.config.loader import ConfigError
from heartbeat.events import ALERT, HOST_DOWN, HOST_UP, PROBLEM_STILL, Event
from heartbeat.server.acks import HOST as HOST_TARGET
from heartbeat.server.acks import AckBook
from heartbeat.server.dependencies import DependencyGraph
from heartbeat.server.flapping import FlapDetector
from heartbeat.server.maintenance import MaintenanceCalendar
from heartbeat.server.operations import RELEASE_SLICE, OperationsService, load_operations
from heartbeat.server.registry import Registry
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.silences import SilenceBook
from heartbeat.server.store import StoreService, open_sqlite
from heartbeat.server.suppression import Suppression

T0 = 1_800_000_000.0
SRC = ("10.0.0.5", 40000)


class Ops:
    """One server's operations: the books, a registry, a store file, a Clock."""

    def __init__(self, path: Path, now: float = T0) -> None:
        self.clock = Clock()
        self.clock.advance(now)
        self.backend = open_sqlite(path)
        self.store = StoreService(self.backend, ImmediateWorker(), self.clock, 0.5)
        self.flaps = FlapDetector()
        self.registry = Registry(grace=10, default_interval=30, dependencies=DependencyGraph(),
                                 flaps=self.flaps)
        self.suppression = Suppression(MaintenanceCalendar(), SilenceBook(), AckBook())
        self.events: list[Event] = []
        self.service = OperationsService(self.suppression, self.events.append, self.store,
                                         self.clock, registry=self.registry, engine=None,
                                         flaps=self.flaps, default_zone="UTC")
        self.service.restore(self.store.load(load_operations))
        self.service.attach()

    def start(self) -> Ops:
        self.store.startService()
        self.service.startService()
        return self

    def stop(self) -> None:
        self.service.stopService()
        self.store.stopService()

    def kinds(self) -> list[tuple[str, str, float]]:
        found = [(e.kind, e.host, e.ts) for e in self.events]
        self.events.clear()
        return found

    def beat(self, name: str) -> list[Event]:
        return self.registry.apply({"ID": "HTB", "name": name}, SRC, self.clock.seconds()).events


@pytest.fixture
def ops(tmp_path: Path) -> Any:
    made = Ops(tmp_path / "heartbeat.sqlite3").start()
    yield made
    made.stop()


class WindowTests:
    def test_events_of_a_window_belong_to_the_hosts_it_names(self, ops: Ops) -> None:
        """A window naming hosts one by one has its events once per host (their viewers
        see them on the feed); one of globs or tags, one event of no host (admins)."""
        ops.service.add_window({"hosts": ["web1", "web2"], "start": T0 + 5, "duration": 5},
                               "bob")
        ops.service.add_window({"hosts": ["db1"], "tags": ["linux"], "start": T0 + 5,
                                "duration": 5}, "alice")
        ops.clock.advance(5)
        assert ops.kinds() == [("maintenance.created", "web1", T0),
                               ("maintenance.created", "web2", T0),
                               ("maintenance.created", "", T0),
                               ("maintenance.started", "web1", T0 + 5),
                               ("maintenance.started", "web2", T0 + 5),
                               ("maintenance.started", "", T0 + 5)]

    def test_window_opens_and_closes_on_time(self, ops: Ops) -> None:
        """A one-off window is journaled when made, when it opens and when it closes."""
        window = ops.service.add_window({"hosts": ["web*"], "start": T0 + 60, "end": T0 + 120,
                                         "comment": "kernel"}, "alice")
        assert (window.id, window.author, window.source) == ("1", "alice", "api")
        assert ops.kinds() == [("maintenance.created", "", T0)]
        ops.clock.advance(59)
        assert ops.kinds() == []
        ops.clock.advance(1)
        assert ops.kinds() == [("maintenance.started", "", T0 + 60)]
        ops.clock.advance(60)
        assert ops.kinds() == [("maintenance.ended", "", T0 + 120)]
        assert [c.getTime() for c in ops.clock.getDelayedCalls()
                if c.func == ops.service.check] == [T0 + 120 + 3600]  # nothing ahead

    def test_hosts_in_maintenance_at_once_are_those_asked_one_by_one(self, ops: Ops) -> None:
        """in_maintenance_of (a status page's many hosts) answers what in_maintenance does
        for each, before, while and after windows of names and globs are open."""
        hosts = ["web1", "web2", "db1", "mail1"]
        ops.service.add_window({"hosts": ["web*"], "start": T0 + 10, "duration": 20}, "bob")
        ops.service.add_window({"hosts": ["db1"], "start": T0 + 20, "duration": 20}, "bob")
        seen = []
        for step in (0, 10, 10, 10, 10):
            ops.clock.advance(step)
            at_once = ops.service.in_maintenance_of(hosts)
            assert at_once == {h for h in hosts if ops.service.in_maintenance(h)}
            seen.append(sorted(at_once))
        assert seen == [[], ["web1", "web2"], ["db1", "web1", "web2"], ["db1"], []]

    def test_held_problem_is_released_when_the_window_ends(self, ops: Ops) -> None:
        """A DOWN held during the window and still DOWN at its end: one problem.still."""
        ops.service.add_window({"hosts": ["web1"], "start": T0, "duration": 300}, "alice")
        ops.beat("web1")
        ops.clock.advance(100)
        (down,) = [e for e in ops.registry.expire(ops.clock.seconds()) if e.kind == HOST_DOWN]
        assert ops.suppression.decide(down, ops.clock.seconds()) is not None
        ops.kinds()
        ops.clock.advance(200)
        events = [e for e in ops.events if e.kind == PROBLEM_STILL]
        assert [(e.host, e.ts, e.data) for e in events] == [
            ("web1", T0 + 300, {"key": "host.down", "level": "DOWN", "reason": "maintenance",
                                "label": "maintenance '1'", "since": T0 + 100,
                                "held_since": T0 + 100})]

    def test_a_fleets_problems_are_released_a_slice_a_turn(self, ops: Ops) -> None:
        """A window over 2,500 DOWN hosts that ends releases RELEASE_SLICE (1,000) of them
        a turn of the reactor, each once, until all are; the DELETE's own turn takes one
        slice (100,000 at once held the reactor 2.7 s)."""
        names = [f"host{n:05d}" for n in range(2500)]
        window = ops.service.add_window({"hosts": ["host*"], "start": T0, "duration": 300},
                                        "alice")
        for name in names:
            ops.beat(name)
        ops.clock.advance(100)
        for down in ops.registry.expire(ops.clock.seconds()):
            assert ops.suppression.decide(down, ops.clock.seconds()) is not None
        ops.kinds()

        def still() -> list[str]:
            found = [e.host for e in ops.events if e.kind == PROBLEM_STILL]
            ops.events.clear()
            return found

        ops.service.delete_window(window.id, "alice")
        first = still()
        assert len(first) == RELEASE_SLICE and ops.suppression.releasing
        assert [c.getTime() for c in ops.clock.getDelayedCalls()
                if c.func == ops.service._release] == [T0 + 100]  # the next turn
        ops.clock.advance(0)  # Clock runs the turns that follow at once
        rest = still()
        assert sorted(first + rest) == names and not ops.suppression.releasing
        assert ops.suppression.held() == [] and ops.service.to_json()["released"] == 2500
        ops.clock.advance(0)
        assert still() == []

    def test_a_change_during_a_release_is_walked_after_it(self, ops: Ops) -> None:
        """A problem held when a walk began but released by a change during it (a second
        window ending) is released by the walk that follows; none twice."""
        names = [f"host{n:05d}" for n in range(1500)]
        fleet = ops.service.add_window({"hosts": ["host*"], "start": T0, "duration": 300},
                                       "alice")
        for name in ["db1", *names]:  # db1 first: looked at in the first slice, held
            ops.beat(name)
        db = ops.service.add_window({"hosts": ["db1"], "start": T0, "duration": 300}, "bob")
        ops.clock.advance(100)
        for down in ops.registry.expire(ops.clock.seconds()):
            ops.suppression.decide(down, ops.clock.seconds())
        ops.kinds()
        ops.service.delete_window(fleet.id, "alice")  # db1 still held by its own window
        ops.service.delete_window(db.id, "bob")  # during the walk
        released = [e.host for e in ops.events if e.kind == PROBLEM_STILL]
        while ops.suppression.releasing:
            ops.clock.advance(0)
            released = [e.host for e in ops.events if e.kind == PROBLEM_STILL]
        assert sorted(released) == sorted([*names, "db1"])

    def test_deleting_an_open_window_ends_it_now(self, ops: Ops) -> None:
        """Deleting an open window journals its deletion and its end, and releases."""
        ops.service.add_window({"hosts": ["web1"], "start": T0, "duration": 300}, "alice")
        ops.beat("web1")
        ops.clock.advance(50)
        (down,) = ops.registry.expire(ops.clock.seconds())
        ops.suppression.decide(down, ops.clock.seconds())
        ops.kinds()
        assert ops.service.delete_window("1", "bob") is not None
        assert ops.kinds() == [("maintenance.deleted", "web1", T0 + 50),  # its host's
                               ("maintenance.ended", "web1", T0 + 50),
                               ("problem.still", "web1", T0 + 50)]
        assert ops.service.delete_window("1", "bob") is None

    def test_replace_keeps_id_author_and_created(self, ops: Ops) -> None:
        """PUT semantics: new content, same id, author and creation time."""
        ops.service.add_window({"hosts": ["web1"], "start": T0 + 10, "duration": 60}, "alice")
        ops.clock.advance(5)
        window = ops.service.replace_window("1", {"tags": ["linux"], "cron": "0 3 * * *",
                                                  "duration": "1h"}, "bob")
        assert (window.id, window.author, window.created, window.spec["cron"]) == (
            "1", "alice", T0, "0 3 * * *")

    def test_bad_window_names_the_field(self, ops: Ops) -> None:
        """A bad body is refused with the field's name; no id is used up."""
        with pytest.raises(ConfigError, match=r"^body: end: the window must end after it "
                                              r"starts$"):
            ops.service.add_window({"hosts": ["a"], "start": T0, "end": T0 - 1}, "alice")
        assert ops.service.add_window({"hosts": ["a"], "start": T0, "end": T0 + 1},
                                      "alice").id == "1"


class SilenceTests:
    def test_silence_start_and_early_end_are_journaled(self, ops: Ops) -> None:
        """A silence is journaled when made, when it starts and when it is ended early."""
        silence = ops.service.add_silence({"host": "db1", "start": T0 + 10, "duration": 100,
                                           "comment": "disk swap"}, "bob")
        assert ops.kinds() == [("silence.created", "db1", T0)]
        ops.clock.advance(10)
        assert ops.kinds() == [("silence.started", "db1", T0 + 10)]
        ops.clock.advance(5)
        ended = ops.service.end_silence(silence.id, "carol")
        assert ended is not None and ended.ended_by == "carol"
        assert ops.kinds() == [("silence.ended", "db1", T0 + 15)]

    def test_glob_silence_events_belong_to_no_host(self, ops: Ops) -> None:
        """A silence of a glob is journaled without a host (only admins see it on the feed)."""
        ops.service.add_silence({"host": "web*", "duration": 60, "comment": "x"}, "bob")
        assert ops.kinds() == [("silence.created", "", T0), ("silence.started", "", T0)]


class AckTests:
    def test_ack_ends_when_the_level_changes(self, ops: Ops) -> None:
        """An acknowledgement of CRITICAL ends when the alert goes WARNING (journaled)."""
        ops.service.acknowledge("db1", "cpu", "CRITICAL", "bob", "on it")
        assert ops.kinds() == [("ack.added", "db1", T0)]
        ops.service.on_alert(Event(ALERT, "db1", T0, {"metric_path": "cpu",
                                                       "level": "CRITICAL", "reminder": True}))
        assert ops.kinds() == []
        ops.service.on_alert(Event(ALERT, "db1", T0, {"metric_path": "cpu", "level": "WARNING"}))
        assert [(e.kind, e.data["reason"]) for e in ops.events] == [
            ("ack.removed", "level_changed")]
        assert ops.suppression.acks.get("db1", "cpu") is None

    def test_host_ack_ends_when_it_is_up(self, ops: Ops) -> None:
        """A DOWN host's acknowledgement ends when it is UP again."""
        ops.service.acknowledge("web1", HOST_TARGET, "DOWN", "bob", "rebooting")
        ops.service.on_host_state(Event(HOST_UP, "web1", T0, {"previous": "DOWN"}))
        assert ops.suppression.acks.get("web1", HOST_TARGET) is None


class PersistenceTests:
    def test_everything_survives_a_restart(self, tmp_path: Path) -> None:
        """Windows, silences, acknowledgements, held problems, flap histories and the ids
        given come back after a restart; ids go on where they were."""
        path = tmp_path / "heartbeat.sqlite3"
        first = Ops(path).start()
        first.service.add_window({"hosts": ["web1"], "cron": "0 2 * * sun", "duration": "2h",
                                  "timezone": "Europe/Berlin", "comment": "patch"}, "alice")
        first.service.add_window({"hosts": ["gone"], "start": T0, "end": T0 + 5}, "alice")
        first.service.delete_window("2", "alice")
        first.service.add_silence({"host": "db1", "duration": "1h", "comment": "swap"}, "bob")
        first.service.acknowledge("db1", "cpu", "CRITICAL", "bob", "on it")
        first.service.add_window({"hosts": ["web1"], "start": T0, "end": T0 + 100}, "alice")
        first.beat("web1")
        first.clock.advance(50)
        (down,) = first.registry.expire(first.clock.seconds())
        first.suppression.decide(down, first.clock.seconds())
        first.beat("web1")
        first.stop()
        second = Ops(path, T0 + 60).start()
        windows = [(w.id, w.author, w.spec.get("cron")) for w in second.suppression.calendar]
        assert windows == [("1", "alice", "0 2 * * sun"), ("3", "alice", None)]
        assert [(s.id, s.comment) for s in second.suppression.silences] == [("1", "swap")]
        ack = second.suppression.acks.get("db1", "cpu")
        assert ack is not None and (ack.author, ack.comment) == ("bob", "on it")
        assert second.flaps.get("web1", "") == first.flaps.get("web1", "")
        assert second.suppression.calendar.next_id() == "4"
        assert second.suppression.silences.next_id() == "2"
        second.stop()


class SharedStoreTests:
    def test_a_new_leader_reads_what_the_last_one_kept(self, tmp_path: Path) -> None:
        """Two servers on one store: the follower takes no change; taking over, it reads the
        windows, silences and acknowledgements the leader made since it started, instead of
        those it loaded (a window deleted meanwhile is gone)."""
        path = tmp_path / "heartbeat.sqlite3"
        leader = Ops(path).start()
        leader.service.add_window({"hosts": ["old"], "start": T0, "duration": 60}, "alice")
        leader.store.flush()
        follower = Ops(path).start()
        assert follower.service.lead(False) is None
        assert follower.service.leading is False
        leader.service.delete_window("1", "alice")
        leader.service.add_window({"hosts": ["web1"], "start": T0, "duration": 60}, "alice")
        leader.service.add_silence({"host": "db1", "duration": 60, "comment": "swap"}, "bob")
        leader.service.acknowledge("db1", "cpu", "CRITICAL", "bob", "on it")
        leader.store.flush()
        assert [w.id for w in follower.suppression.calendar] == ["1"]
        follower.kinds()
        done = follower.service.lead(True)
        assert done is not None and done.called and follower.service.leading is True
        assert [(w.id, w.spec["hosts"]) for w in follower.suppression.calendar] == [
            ("2", ["web1"])]
        assert [s.comment for s in follower.suppression.silences] == ["swap"]
        assert follower.suppression.acks.get("db1", "cpu") is not None
        assert follower.suppression.calendar.next_id() == "3"
        assert ("maintenance.started", "web1", T0) in follower.kinds()
        follower.stop()
        leader.stop()
