"""One voice: the notice ledger (pure) and the notifier sending only while it leads."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from heartbeat.config.loader import parse_config
from heartbeat.config.server import ServerConfig
from heartbeat.events import (
    ALERT,
    HOST_BOOT,
    HOST_DOWN,
    HOST_MESSAGE,
    HOST_UP,
    JOB,
    Event,
    EventBus,
)
from heartbeat.server.compose import wire
from heartbeat.server.notices import ONE_SHOT, Notice, NoticeLedger, notice_of
from heartbeat.server.notify.routing import Router
from heartbeat.server.notify.service import NotifierService, NotifySettings
from tests.test_notify_service import FakeChannel

CONFIG = "email: {to: [ops@example.com]}\n"


def down(host: str, ts: float = 100.0) -> Event:
    return Event(HOST_DOWN, host, ts, {"last_seen": ts - 60, "silent_for": 60})


def up(host: str, ts: float = 200.0, down_for: float = 100.0) -> Event:
    return Event(HOST_UP, host, ts, {"previous": "DOWN", "down_for": down_for})


def alert(host: str, level: str, ts: float = 100.0, reminder: bool = False) -> Event:
    return Event(ALERT, host, ts, {"metric_path": "cpu.load", "level": level,
                                   "message": f"{level} {host}", "notify": True,
                                   "reminder": reminder})


class NoticeKeyTests:
    def test_every_server_derives_the_same_key(self) -> None:
        """Keys depend on what the event says, not on when a server heard it (a message
        within its 10 s bucket); reminders have none (only the leader sends them)."""
        assert notice_of(down("web1")) == Notice("host:web1", "down")
        assert notice_of(up("web1")) == Notice("host:web1", "up")
        assert notice_of(alert("web1", "CRITICAL")) == Notice("alert:web1:cpu.load", "CRITICAL")
        assert notice_of(alert("web1", "CRITICAL", reminder=True)) is None
        boot = Event(HOST_BOOT, "web1", 5.0, {"boot_time": 1234.0})
        assert notice_of(boot) == Notice("boot:web1:1234.0", ONE_SHOT)
        heard = [Event(HOST_MESSAGE, "web1", ts, {"text": "disk", "level": "error"})
                 for ts in (101.0, 101.004)]
        assert notice_of(heard[0]) == notice_of(heard[1])
        late = Event(JOB, "db1", 7.0, {"job": "backup", "level": "CRITICAL", "notify": True})
        assert notice_of(late) == Notice("job:backup", "CRITICAL")
        assert notice_of(late).resting == "OK"  # type: ignore[union-attr]


class LedgerTests:
    def test_catch_up_sends_what_the_marks_do_not_cover(self) -> None:
        ledger = NoticeLedger(keep=600.0)
        ledger.seen(Notice("host:a", "down"), down("a"))  # old leader sent it: marked
        ledger.seen(Notice("host:b", "down"), down("b"))  # went down during the failover
        ledger.seen(Notice("host:c", "up"), up("c"))  # up, never notified down: resting
        ledger.seen(Notice("host:d", "up"), up("d"))  # its DOWN was marked: its UP is due
        boot = Event(HOST_BOOT, "e", 100.0, {"boot_time": 7.0})
        ledger.seen(Notice("boot:e:7.0", ONE_SHOT), boot)
        old = Event(HOST_BOOT, "f", 1.0, {"boot_time": 8.0})  # older than keep: not sent
        ledger.seen(Notice("boot:f:8.0", ONE_SHOT), old)
        due = ledger.catch_up({"host:a": ("down", 100.3), "host:d": ("down", 50.0)}, now=700.0)
        assert [(e.kind, e.host) for e in due] == [
            (HOST_DOWN, "b"), (HOST_BOOT, "e"), (HOST_UP, "d")]
        assert ledger.catch_up({}, now=700.0) == []  # nothing remembered twice

    def test_a_follower_remembers_the_recent_events_of_its_last_keys(self) -> None:
        ledger = NoticeLedger(limit=2)
        ledger.seen(Notice("host:a", "down"), down("a"))
        ledger.seen(Notice("host:a", "up"), up("a"))
        ledger.seen(Notice("host:b", "down"), down("b"))
        ledger.seen(Notice("host:c", "down"), down("c"))  # a goes: the least recent
        due = ledger.catch_up({}, now=300.0)
        assert [(e.kind, e.host) for e in due] == [(HOST_DOWN, "b"), (HOST_DOWN, "c")]
        for n in range(NoticeLedger.PER_KEY + 4):
            ledger.seen(Notice("host:a", "down" if n % 2 else "up"),
                        (down if n % 2 else up)("a", ts=400.0 + n))
        due = ledger.catch_up({}, now=500.0)
        assert [e.ts for e in due] == [400.0 + n for n in range(5, NoticeLedger.PER_KEY + 4)]

    def test_down_and_up_while_nobody_led_are_both_sent(self) -> None:
        """A host went DOWN and came back between the old leader's death and the new one's
        lock: both notices, in order. What the old leader had sent, and a first run of
        events this server heard of the same change a little later, are not sent again."""
        ledger = NoticeLedger()
        for event in (down("a", 100.0), up("a", 200.0), down("b", 100.4), up("b", 200.0),
                      down("c", 100.0), up("c", 150.0), down("c", 300.0)):
            ledger.seen(notice_of(event), event)  # type: ignore[arg-type]
        marks = {"host:a": ("up", 20.0), "host:b": ("down", 100.2), "host:c": ("up", 150.1)}
        due = ledger.catch_up(marks, now=400.0)
        assert [(e.host, e.kind, e.ts) for e in due] == [
            ("a", HOST_DOWN, 100.0), ("a", HOST_UP, 200.0), ("b", HOST_UP, 200.0),
            ("c", HOST_DOWN, 300.0)]

    def test_a_state_is_sent_once_per_change_and_its_mark_written_when_settled(self) -> None:
        ledger = NoticeLedger()
        notice = Notice("host:a", "down")
        assert ledger.due(notice)
        ledger.sending(notice)
        assert not ledger.due(notice)
        assert ledger.take_dirty() == []  # not sent yet: nothing to mark in the store
        ledger.settled([notice], 12.0)
        assert ledger.take_dirty() == [("host:a", "down", 12.0)]
        assert ledger.due(Notice("host:a", "up"))
        assert ledger.due(Notice("boot:a:1", ONE_SHOT))  # one-shots: always, when leading


class Leader:
    def __init__(self) -> None:
        self.leading = False


class Rig:
    """A notifier with a fake channel, a leader flag and marks the test hands over."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.bus = EventBus(on_error=self._raise)
        self.channel = FakeChannel("email", self.clock)
        self.leader = Leader()
        self.ledger = NoticeLedger()
        self.marks: dict[str, tuple[str, float]] = {}
        conf: ServerConfig = parse_config(ServerConfig, CONFIG, "test.yaml")
        self.service = NotifierService(
            [self.channel], Router(conf, ("email",)), self.clock, self.bus,
            settings=NotifySettings(), leader=self.leader, ledger=self.ledger,
            marks=lambda: succeed(dict(self.marks)))
        wire(self.bus, notifier=self.service)
        self.service.startService()

    @staticmethod
    def _raise(subscriber: object, event: Event, error: BaseException) -> None:
        raise error

    def lead(self) -> Deferred[None] | None:
        self.leader.leading = True
        return self.service.lead(True)

    def sent(self) -> list[str]:
        return [note.title for _, note, _ in self.channel.calls]


class OneVoiceTests:
    def test_a_follower_sends_nothing_and_catches_up_when_it_leads(self) -> None:
        rig = Rig()
        rig.bus.publish(down("web1"))
        rig.bus.publish(down("db1"))
        assert rig.sent() == []
        assert rig.service.to_json()["suppressed"] == {"not_leader": 2}
        rig.marks = {"host:web1": ("down", 100.2)}  # the old leader had sent this one
        rig.lead()
        assert rig.sent() == ["DOWN: db1"]
        rig.bus.publish(down("db1", ts=150.0))  # heard again: already notified
        rig.bus.publish(up("web1"))
        assert rig.sent() == ["DOWN: db1", "UP: web1"]
        assert rig.service.to_json()["one_voice"]["duplicates_skipped"] == 2  # web1, db1

    def test_an_outage_while_nobody_led_is_sent_when_one_leads(self) -> None:
        """DOWN and UP between two leaders: the new one sends both, one after the other."""
        rig = Rig()
        rig.bus.publish(down("web1"))
        rig.bus.publish(up("web1"))
        rig.marks = {"host:web1": ("up", 20.0)}  # its last notice, long before
        rig.lead()
        assert rig.sent() == ["DOWN: web1"]
        rig.channel.answer_all()
        assert rig.sent() == ["DOWN: web1", "UP: web1"]
        rig.channel.answer_all()
        assert rig.ledger.take_dirty() == [("host:web1", "up", 0.0)]  # the key's last mark

    def test_marks_are_written_once_the_send_is_done(self) -> None:
        """Send first, mark after: a crash in between sends it again (once), never loses it."""
        rig = Rig()
        rig.lead()
        rig.bus.publish(down("web1"))
        assert rig.ledger.take_dirty() == []
        rig.clock.advance(3.0)
        rig.channel.answer_all()
        assert rig.ledger.take_dirty() == [("host:web1", "down", 3.0)]

    def test_a_skipped_change_still_moves_the_mark(self) -> None:
        """An UP not worth a notice (down 2 s) is still the host's state: its next DOWN
        is sent."""
        rig = Rig()
        rig.lead()
        rig.bus.publish(down("web1"))
        rig.channel.answer_all()  # delivered: web1's next notice may go
        rig.bus.publish(up("web1", down_for=2.0))
        rig.bus.publish(down("web1", ts=300.0))
        assert rig.sent() == ["DOWN: web1", "DOWN: web1"]

    def test_losing_the_lead_silences_it_until_it_caught_up_again(self) -> None:
        rig = Rig()
        rig.lead()
        rig.bus.publish(alert("web1", "CRITICAL"))
        rig.channel.answer_all()
        rig.leader.leading = False
        rig.service.lead(False)
        rig.bus.publish(alert("web1", "OK", ts=150.0))
        assert rig.sent() == ["CRITICAL: web1"]
        rig.marks = {"alert:web1:cpu.load": ("CRITICAL", 100.1)}
        rig.lead()
        assert rig.sent() == ["CRITICAL: web1", "RECOVERED: web1"]

    def test_marks_that_cannot_be_read_fail_the_take_over(self) -> None:
        """The leader service tells the notifier again; until then it stays silent."""
        rig = Rig()
        failing: Deferred[Any] = Deferred()
        rig.service._marks = lambda: failing
        d = rig.lead()
        assert d is not None
        errors: list[Any] = []
        d.addErrback(errors.append)
        failing.errback(ConnectionError("store out of reach"))
        rig.bus.publish(down("web1"))
        assert (len(errors), rig.service.speaking, rig.sent()) == (1, False, [])
