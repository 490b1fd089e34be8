"""NotifierService with a Clock and scripted channels: routing, retries, drops, digests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from heartbeat.config.loader import parse_config
from heartbeat.config.server import ServerConfig
from heartbeat.events import HOST_DOWN, HOST_UP, Event, EventBus
from heartbeat.server.compose import wire
from heartbeat.server.notices import NoticeLedger
from heartbeat.server.notify.base import DeliveryError, Notification
from heartbeat.server.notify.routing import Router
from heartbeat.server.notify.service import NotifierService, NotifySettings
from heartbeat.server.retry import Backoff

CONFIG = """
pushsrv: pushover
email: {to: [ops@example.com]}
pushover: {token: tok-secret-123, user: group-key}
users:
  nina: {email: nina@example.com, notification_channels: [email]}
hosts:
  web1: {owner: nina}
  quiet: {watch: false}
"""


class FakeChannel:
    """Records each send; the test fires (or never fires) the Deferred it returned."""

    def __init__(self, name: str, clock: Clock, max_recipients: int = 50) -> None:
        self.name = name
        self.clock = clock
        self.max_recipients = max_recipients
        self.secrets: tuple[str, ...] = ("tok-secret-123",)
        self.calls: list[tuple[float, Notification, Deferred[None]]] = []
        self.cancelled: list[Notification] = []

    def send(self, notification: Notification) -> Deferred[None]:
        d: Deferred[None] = Deferred(lambda _: self.cancelled.append(notification))
        self.calls.append((self.clock.seconds(), notification, d))
        return d

    def answer_all(self) -> None:
        for _, _, d in self.calls:
            if not d.called:
                d.callback(None)


class FakePool:
    closed = 0

    def closeCachedConnections(self) -> Deferred[None]:
        self.closed += 1
        d: Deferred[None] = Deferred()
        d.callback(None)
        return d


class Rig:
    def __init__(self, config: str = CONFIG, channels: tuple[str, ...] = ("email", "pushover"),
                 ledger: NoticeLedger | None = None, **settings: Any) -> None:
        self.clock = Clock()
        self.bus = EventBus(on_error=self._raise)
        self.events: list[Event] = []
        self.bus.subscribe(self.events.append)
        self.channels = {name: FakeChannel(name, self.clock) for name in channels}
        self.pool = FakePool()
        conf: ServerConfig = parse_config(ServerConfig, config, "test.yaml")
        self.service = NotifierService(
            list(self.channels.values()), Router(conf, channels), self.clock, self.bus,
            settings=NotifySettings(**{"backoff": Backoff(2.0), **settings}), pool=self.pool,
            ledger=ledger)
        wire(self.bus, notifier=self.service)
        self.service.startService()

    @staticmethod
    def _raise(subscriber: Any, event: Event, error: BaseException) -> None:
        raise error

    def down(self, host: str) -> None:
        self.bus.publish(Event(HOST_DOWN, host, self.clock.seconds(),
                               {"reason": "timeout", "previous": "UP"}))

    def kinds(self, prefix: str = "notify.") -> list[tuple[str, str, dict[str, Any]]]:
        return [(e.kind, e.host, e.data) for e in self.events if e.kind.startswith(prefix)]

    def status(self, channel: str) -> dict[str, Any]:
        return self.service.to_json()["channels"][channel]


@pytest.fixture
def logged() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if str(event.get("log_namespace", "")).startswith("heartbeat.server.notify"):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def test_event_goes_to_each_channel_with_its_recipients() -> None:
    """A DOWN for web1 reaches email (ops + owner) and pushover (group key); outcomes published."""
    rig = Rig()
    rig.down("web1")
    assert [(n.title, n.recipients) for _, n, _ in rig.channels["email"].calls] == [
        ("DOWN: web1", ("ops@example.com", "nina@example.com"))]
    assert [(n.title, n.recipients) for _, n, _ in rig.channels["pushover"].calls] == [
        ("DOWN: web1", ("group-key",))]
    for channel in rig.channels.values():
        channel.answer_all()
    assert rig.kinds() == [
        ("notify.sent", "web1", {"channel": "email", "title": "DOWN: web1", "kind": HOST_DOWN,
                                 "hosts": ["web1"], "recipients": 2, "attempts": 1}),
        ("notify.sent", "web1", {"channel": "pushover", "title": "DOWN: web1", "kind": HOST_DOWN,
                                 "hosts": ["web1"], "recipients": 1, "attempts": 1}),
    ]
    assert rig.status("email")["sent"] == 1


def test_silenced_and_skipped_events_are_counted() -> None:
    """watch: false, a short down and a first sight send nothing and are counted by reason."""
    rig = Rig()
    rig.down("quiet")
    rig.bus.publish(Event(HOST_UP, "web1", 0.0, {"previous": "DOWN", "down_for": 1.0}))
    rig.bus.publish(Event(HOST_UP, "web1", 0.0, {"previous": "UNKNOWN"}))
    assert [c.calls for c in rig.channels.values()] == [[], []]
    assert rig.service.to_json()["suppressed"] == {
        "watch_false": 1, "short_down": 1, "first_sight": 1}


def test_retries_with_exponential_backoff_then_succeeds(logged: list[str]) -> None:
    """Failures are retried after 2 s then 4 s (clock-driven); the third attempt gets through."""
    rig = Rig(channels=("pushover",))
    pushover = rig.channels["pushover"]
    rig.down("db1")
    pushover.calls[0][2].errback(DeliveryError("HTTP 500: oops"))
    rig.clock.advance(1.9)
    assert len(pushover.calls) == 1
    rig.clock.advance(0.1)
    pushover.calls[1][2].errback(DeliveryError("HTTP 502"))
    rig.clock.advance(4)
    pushover.calls[2][2].callback(None)
    assert [t for t, _, _ in pushover.calls] == [0.0, 2.0, 6.0]
    assert [(kind, data.get("reason"), data.get("retry_in"), data.get("attempts"))
            for kind, _, data in rig.kinds()] == [
        ("notify.failed", "HTTP 500: oops", 2.0, None),
        ("notify.failed", "HTTP 502", 4.0, None),
        ("notify.sent", None, None, 3)]
    assert {k: rig.status("pushover")[k] for k in ("sent", "failed_attempts", "retries",
                                                     "gave_up")} == {
        "sent": 1, "failed_attempts": 2, "retries": 2, "gave_up": 0}
    assert logged[0] == ("notify: pushover: sending 'DOWN: db1' failed (attempt 1): "
                         "HTTP 500: oops; retrying in 2s")


def test_gives_up_after_retries_with_secrets_redacted(logged: list[str]) -> None:
    """After notify_retries the send is dropped, counted, journaled and logged without the token."""
    rig = Rig(channels=("pushover",), retries=1)
    pushover = rig.channels["pushover"]
    rig.down("db1")
    pushover.calls[0][2].errback(DeliveryError("bad token tok-secret-123"))
    rig.clock.advance(2)
    pushover.calls[1][2].errback(DeliveryError("bad token tok-secret-123"))
    rig.clock.advance(1000)
    assert len(pushover.calls) == 2
    final = rig.kinds()[-1]
    assert final == ("notify.failed", "db1", {
        "channel": "pushover", "title": "DOWN: db1", "hosts": ["db1"],
        "reason": "bad token [redacted]", "attempt": 2, "final": True, "retry_in": None})
    status = rig.status("pushover")
    assert (status["gave_up"], status["last_error"]) == (1, "bad token [redacted]")
    assert logged[-1] == ("notify: pushover: gave up on 'DOWN: db1' after 2 attempt(s): "
                          "bad token [redacted]")
    assert not any("tok-secret-123" in line for line in logged)


def test_send_past_timeout_is_cancelled_and_retried() -> None:
    """A send that hangs past notify_timeout is cancelled (connection aborted) and retried."""
    rig = Rig(channels=("pushover",), timeout=15.0)
    pushover = rig.channels["pushover"]
    rig.down("db1")
    rig.clock.advance(15)
    assert [n.title for n in pushover.cancelled] == ["DOWN: db1"]
    assert rig.kinds()[0][2]["reason"] == "timed out after 15s"
    rig.clock.advance(2)
    assert [t for t, _, _ in pushover.calls] == [0.0, 17.0]


def test_permanent_failure_is_not_retried() -> None:
    """A 4xx-style permanent error gives up at once."""
    rig = Rig(channels=("pushover",))
    rig.down("db1")
    rig.channels["pushover"].calls[0][2].errback(DeliveryError("HTTP 400: bad user", True))
    rig.clock.advance(100)
    assert (len(rig.channels["pushover"].calls), rig.status("pushover")["gave_up"]) == (1, 1)


def test_full_queue_drops_are_counted_and_journaled() -> None:
    """Beyond notify_queue_limit waiting sends, new ones are dropped, counted and published."""
    rig = Rig(channels=("pushover",), max_in_flight=1, queue_limit=2)
    for host in ("h1", "h2", "h3", "h4"):
        rig.down(host)
    assert [n.hosts for _, n, _ in rig.channels["pushover"].calls] == [("h1",)]
    status = rig.status("pushover")
    assert (status["in_flight"], status["queued"], status["dropped_queue_full"]) == (1, 2, 1)
    assert rig.kinds() == [("notify.dropped", "h4", {
        "channel": "pushover", "title": "DOWN: h4", "hosts": ["h4"],
        "reason": "queue full (2 waiting)"})]
    rig.channels["pushover"].answer_all()
    rig.channels["pushover"].answer_all()
    rig.channels["pushover"].answer_all()
    assert [n.hosts for _, n, _ in rig.channels["pushover"].calls] == [("h1",), ("h2",), ("h3",)]


def test_storm_becomes_one_digest_per_window() -> None:
    """Past notify_burst hosts in a window the rest go out as one digest; quiet ends the storm."""
    rig = Rig(channels=("pushover",), burst=3, window=30.0)
    pushover = rig.channels["pushover"]
    for n in range(8):
        rig.down(f"h{n}")
    rig.clock.advance(10)
    rig.down("h8")
    assert [n.title for _, n, _ in pushover.calls] == ["DOWN: h0", "DOWN: h1", "DOWN: h2"]
    rig.clock.advance(20)
    digest = pushover.calls[-1][1]
    assert (len(pushover.calls), digest.title, digest.hosts, digest.kind, digest.level) == (
        4, "6 events on 6 hosts", ("h3", "h4", "h5", "h6", "h7", "h8"), "digest", "critical")
    assert len(digest.body.splitlines()) == 6
    rig.clock.advance(30)  # a quiet window: the storm is over
    rig.down("h9")
    assert (pushover.calls[-1][0], pushover.calls[-1][1].title) == (60.0, "DOWN: h9")
    status = rig.status("pushover")
    assert (status["digests"], status["digested"], status["storm"]) == (1, 6, False)


def test_a_trickle_after_a_storm_ends_it() -> None:
    """A window holding notifications for no more than notify_burst hosts ends the storm:
    it still goes out as a digest, and what follows goes out one by one again."""
    rig = Rig(channels=("pushover",), burst=3, window=30.0)
    pushover = rig.channels["pushover"]
    for n in range(8):
        rig.down(f"h{n}")
    pushover.answer_all()
    rig.clock.advance(30)
    assert rig.status("pushover")["storm"] is True  # 5 hosts held: still a storm
    pushover.answer_all()
    rig.down("h0")
    rig.down("h1")
    rig.clock.advance(30)
    assert [n.title for _, n, _ in pushover.calls] == [
        "DOWN: h0", "DOWN: h1", "DOWN: h2", "5 events on 5 hosts", "2 events on 2 hosts"]
    pushover.answer_all()
    assert rig.status("pushover")["storm"] is False
    rig.clock.advance(1)
    rig.down("h2")
    assert (pushover.calls[-1][0], pushover.calls[-1][1].title) == (61.0, "DOWN: h2")


def test_storm_beyond_the_queue_limit_is_dropped_and_reported_once(
        logged: list[str]) -> None:
    """Held notifications are bounded by notify_queue_limit; the excess is one drop report,
    and the digest still counts it: it says how big the storm was (a fleet's fall of
    10,000 hosts once mailed '1000 events on 1000 hosts')."""
    rig = Rig(channels=("pushover",), burst=1, queue_limit=3)
    for n in range(10):
        rig.down(f"h{n}")
    rig.clock.advance(30)
    assert [n.title for _, n, _ in rig.channels["pushover"].calls] == [
        "DOWN: h0", "9 events on 9 hosts"]
    body = rig.channels["pushover"].calls[1][1].body.splitlines()
    assert [line.split(" ", 1)[1] for line in body[:9]] == [
        f"DOWN: h{n}: h{n} is DOWN: no heartbeat." for n in range(1, 10)]
    assert body[9:] == ["(6 of them past notify_queue_limit: the journal has every event)"]
    assert rig.kinds("notify.dropped") == [("notify.dropped", "", {
        "channel": "pushover", "title": "storm overflow",
        "hosts": ["h4", "h5", "h6", "h7", "h8", "h9"],
        "reason": "6 notification(s) beyond the digest's limit of 3"})]
    assert rig.status("pushover")["dropped_queue_full"] == 6
    assert sum("beyond the digest's limit" in line for line in logged) == 1


def test_every_recipients_digest_names_their_hosts_past_the_queue_limit() -> None:
    """A fleet's fall fills notify_queue_limit with the first owners' hosts; every other
    owner's digest still names their own hosts, not only a count (found at 100,000 hosts
    DOWN with 1,000 users: 990 digests listed none)."""
    users = "".join(f"  u{u}: {{email: u{u}@example.com, notification_channels: [email]}}\n"
                    for u in range(4))
    hosts = "".join(f"  u{u}-h{n}: {{owner: u{u}}}\n" for u in range(4) for n in range(4))
    rig = Rig(config=f"email: {{to: [ops@example.com]}}\nusers:\n{users}hosts:\n{hosts}",
              channels=("email",), burst=1, queue_limit=3)
    for u in range(4):
        for n in range(4):
            rig.down(f"u{u}-h{n}")
    rig.clock.advance(30)
    sent = rig.channels["email"].calls
    assert [(n.title, n.recipients) for _, n, _ in sent] == [
        ("DOWN: u0-h0", ("ops@example.com", "u0@example.com")),
        ("3 events on 3 hosts", ("ops@example.com", "u0@example.com")),
        *[("4 events on 4 hosts", ("ops@example.com", f"u{u}@example.com")) for u in (1, 2, 3)]]
    for u, (_, note, _) in zip(range(1, 4), sent[2:], strict=True):
        assert [line.split(" ")[2] for line in note.body.splitlines()[:4]] == [
            f"u{u}-h{n}:" for n in range(4)]
        assert note.body.splitlines()[4:] == [
            "(4 of them past notify_queue_limit: the journal has every event)"]
    assert rig.status("email")["dropped_queue_full"] == 12


def test_a_storms_digests_pass_a_full_queue() -> None:
    """A window's digests, one per set of recipients, all go however many sets there are:
    the queue's bound is for single notifications (found with 2,000 owners: the limit
    of 1,000 dropped 996 digests, and their owners heard nothing of their hosts' fall)."""
    users = "".join(f"  u{u}: {{email: u{u}@example.com, notification_channels: [email]}}\n"
                    for u in range(6))
    hosts = "".join(f"  u{u}-h: {{owner: u{u}}}\n" for u in range(6))
    rig = Rig(config=f"email: {{to: [ops@example.com]}}\nusers:\n{users}hosts:\n{hosts}",
              channels=("email",), burst=1, queue_limit=2, max_in_flight=1)
    for u in range(6):
        rig.down(f"u{u}-h")
    rig.channels["email"].answer_all()
    rig.clock.advance(30)
    rig.channels["email"].answer_all()  # max_in_flight 1: each answer lets the next go
    assert sorted(n.recipients[1] for _, n, _ in rig.channels["email"].calls) == [
        f"u{u}@example.com" for u in range(6)]
    assert rig.status("email")["dropped_queue_full"] == 3  # past the held limit, in digests
    assert rig.status("email")["sent"] == 6
    assert rig.kinds("notify.dropped")[0][2]["title"] == "storm overflow"
    assert len(rig.kinds("notify.dropped")) == 1


def test_a_storms_overflow_is_marked_when_its_digest_goes() -> None:
    """With servers sharing a store, what came past notify_queue_limit is marked settled
    once, when the window's digest goes, and what was held once that digest is sent."""
    ledger = NoticeLedger()
    rig = Rig(channels=("pushover",), burst=1, queue_limit=2, ledger=ledger)
    for n in range(5):
        rig.down(f"h{n}")
    rig.channels["pushover"].answer_all()
    assert [key for key, _, _ in ledger.take_dirty()] == ["host:h0"]
    rig.clock.advance(30)
    assert sorted(key for key, _, _ in ledger.take_dirty()) == ["host:h3", "host:h4"]
    rig.channels["pushover"].answer_all()
    assert sorted((key, state) for key, state, _ in ledger.take_dirty()) == [
        ("host:h1", "down"), ("host:h2", "down")]


def test_same_host_repeating_is_not_a_storm() -> None:
    """The burst counts different hosts: one flapping host is sent individually."""
    rig = Rig(channels=("pushover",), burst=2)
    for _ in range(5):
        rig.down("flappy")
        rig.channels["pushover"].answer_all()
    assert len(rig.channels["pushover"].calls) == 5


def test_digests_split_by_recipients() -> None:
    """During a storm, hosts with different recipients get separate digests."""
    rig = Rig(channels=("email",), burst=1)
    for host in ("a1", "web1", "a2", "a3"):
        rig.down(host)
    rig.clock.advance(30)
    assert [(n.title, n.recipients) for _, n, _ in rig.channels["email"].calls] == [
        ("DOWN: a1", ("ops@example.com",)),
        ("DOWN: web1", ("ops@example.com", "nina@example.com")),
        ("2 events on 2 hosts", ("ops@example.com",)),
    ]


def test_recipients_split_to_channel_capacity() -> None:
    """A channel taking one recipient per send (Mattermost) gets one send per recipient."""
    rig = Rig(channels=("email",))
    rig.channels["email"].max_recipients = 1
    rig.down("web1")
    assert [n.recipients for _, n, _ in rig.channels["email"].calls] == [
        ("ops@example.com",), ("nina@example.com",)]


def test_stop_waits_for_sends_in_flight_then_closes_pool() -> None:
    """stopService fires only after the send in flight ends, then closes the HTTP pool."""
    rig = Rig(channels=("pushover",))
    rig.down("db1")
    stopped = rig.service.stopService()
    assert (stopped.called, rig.pool.closed) == (False, 0)
    rig.channels["pushover"].answer_all()
    assert (stopped.called, rig.pool.closed) == (True, 1)
    rig.down("db2")  # after stop: ignored
    assert len(rig.channels["pushover"].calls) == 1


def test_stop_is_bounded_sends_queue_and_abandons_retries() -> None:
    """At stop: queued sends go out, pending retries are abandoned, hung sends cancelled."""
    rig = Rig(channels=("pushover",), max_in_flight=1, stop_timeout=5.0)
    pushover = rig.channels["pushover"]
    rig.down("h1")
    pushover.calls[0][2].errback(DeliveryError("HTTP 503"))  # h1 now waits for a retry
    rig.down("h2")
    rig.down("h3")  # queued behind h2 (one in flight at a time)
    stopped = rig.service.stopService()
    assert [n.hosts for _, n, _ in pushover.calls] == [("h1",), ("h2",), ("h3",)]
    rig.clock.advance(5)
    assert stopped.called
    status = rig.status("pushover")
    assert (status["abandoned_at_stop"], status["gave_up"], status["in_flight"]) == (1, 2, 0)
    assert rig.clock.getDelayedCalls() == []


def test_channel_raising_is_a_failed_attempt() -> None:
    """A channel that raises instead of failing its Deferred is retried like any failure."""
    rig = Rig(channels=("pushover",))

    def broken(notification: Notification) -> Deferred[None]:
        raise RuntimeError("boom")

    rig.channels["pushover"].send = broken  # type: ignore[method-assign]
    rig.down("db1")
    assert rig.kinds()[0][2]["reason"] == "RuntimeError: boom"
