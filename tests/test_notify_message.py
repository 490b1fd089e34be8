"""What gets notified and how it reads: events in, Notification or Skip out (no clock)."""

from __future__ import annotations

import time

import pytest

from heartbeat.events import ALERT, HOST_BOOT, HOST_DOWN, HOST_MESSAGE, HOST_NEW, HOST_UP, Event
from heartbeat.server.notices import Notice
from heartbeat.server.notify.base import Notification, redact
from heartbeat.server.notify.message import (
    DIGEST_LINES,
    Overflow,
    Skip,
    digest,
    duration,
    notification_for,
)

TS = 1711234567.0


def at(ts: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return time.strftime(fmt, time.localtime(ts))


def test_down_after_timeout_is_critical_with_last_seen() -> None:
    """A timeout DOWN says when the host was last heard from and for how long it is silent."""
    event = Event(HOST_DOWN, "web1", TS, {"reason": "timeout", "previous": "UP",
                                          "last_seen": TS - 72, "silent_for": 72.0})
    assert notification_for(event) == Notification(
        "DOWN: web1", f"web1 is DOWN: no heartbeat since {at(TS - 72)} (1m 12s).", "critical",
        ("web1",), HOST_DOWN, TS)


def test_shutdown_is_a_shut_notice() -> None:
    """A DOWN with reason shutdown reads as SHUT, at warning level."""
    event = Event(HOST_DOWN, "db1", TS, {"reason": "shutdown", "previous": "UP"})
    assert notification_for(event) == Notification(
        "SHUT: db1", "db1 is shutting down (it sent SHUT).", "warning", ("db1",), HOST_DOWN, TS)


def test_recovery_after_a_real_outage() -> None:
    """UP after a DOWN of 4 s or more is an info notice naming the outage's length and cause."""
    event = Event(HOST_UP, "web1", TS, {"previous": "DOWN", "addr": "10.0.0.1",
                                        "down_for": 303.0, "down_reason": "timeout"})
    assert notification_for(event) == Notification(
        "UP: web1", "web1 is UP again after 5m 3s down (timeout).", "info", ("web1",),
        HOST_UP, TS)


@pytest.mark.parametrize(("data", "reason"), [
    ({"previous": "DOWN", "down_for": 3.9, "down_reason": "timeout"}, "short_down"),
    ({"previous": "UNKNOWN", "addr": "10.0.0.1"}, "first_sight"),
])
def test_recovery_suppressed(data: dict, reason: str) -> None:
    """No recovery notice for a down under 4 s, nor for a host's first heartbeat."""
    assert notification_for(Event(HOST_UP, "web1", TS, data)) == Skip(reason)


def test_boot() -> None:
    """BOOT names the boot time and the address it came from."""
    event = Event(HOST_BOOT, "web1", TS, {"boot_time": TS - 30, "addr": "10.0.0.1"})
    assert notification_for(event) == Notification(
        "BOOT: web1", f"web1 booted at {at(TS - 30)} (address 10.0.0.1).", "info", ("web1",),
        HOST_BOOT, TS)


@pytest.mark.parametrize("boot_time", [1e300, -1e300, 2.0**63])
def test_boot_time_no_calendar_holds(boot_time: float) -> None:
    """A boot_time past any calendar (the protocol allows any float) reads as the number,
    never failing the notice: one host's odd clock cannot break the notifier."""
    event = Event(HOST_BOOT, "web1", TS, {"boot_time": boot_time, "addr": "10.0.0.1"})
    assert notification_for(event) == Notification(
        "BOOT: web1", f"web1 booted at {boot_time:g} (not a time) (address 10.0.0.1).", "info",
        ("web1",), HOST_BOOT, TS)


def test_messages_from_warning_up() -> None:
    """MSG is notified at warning and error, with its text as the body; info is not."""
    warn = Event(HOST_MESSAGE, "web1", TS, {"text": "disk replaced", "level": "warning"})
    error = Event(HOST_MESSAGE, "web1", TS, {"text": "raid degraded", "level": "error"})
    info = Event(HOST_MESSAGE, "web1", TS, {"text": "hello", "level": "info"})
    assert [notification_for(e) for e in (warn, error, info)] == [
        Notification("MSG warning: web1", "disk replaced", "warning", ("web1",), HOST_MESSAGE, TS),
        Notification("MSG error: web1", "raid degraded", "error", ("web1",), HOST_MESSAGE, TS),
        Skip("message_below_warning")]


def test_alerts_transitions_reminders_and_silent_ones() -> None:
    """ALERT events: level titles, REMINDER and RECOVERED wording, notify=false skipped."""
    text = "cpu_monitor.cpu_percent = 96.0"
    events = [
        Event(ALERT, "web1", TS, {"level": "CRITICAL", "message": text, "notify": True,
                                  "reminder": False}),
        Event(ALERT, "web1", TS, {"level": "CRITICAL", "message": text, "notify": True,
                                  "reminder": True}),
        Event(ALERT, "web1", TS, {"level": "OK", "message": text, "notify": True,
                                  "reminder": False}),
        Event(ALERT, "web1", TS, {"level": "WARNING", "message": text, "notify": False,
                                  "reminder": False}),
    ]
    assert [notification_for(e) for e in events] == [
        Notification("CRITICAL: web1", text, "critical", ("web1",), ALERT, TS),
        Notification("REMINDER (CRITICAL): web1", text, "critical", ("web1",), ALERT, TS),
        Notification("RECOVERED: web1", text, "info", ("web1",), ALERT, TS),
        Skip("alert_not_notified")]


def test_other_kinds_are_not_notified() -> None:
    """A first sight (host.new) is not news for people."""
    assert notification_for(Event(HOST_NEW, "web1", TS, {})) == Skip("not_notified_kind")


def test_digest_lists_every_item_at_the_highest_level() -> None:
    """A digest names its event and host counts and has one line per event."""
    items = [
        Notification("DOWN: web1", "web1 is DOWN.", "critical", ("web1",), HOST_DOWN, TS, ("a",)),
        Notification("BOOT: web2", "", "info", ("web2",), HOST_BOOT, TS + 1, ("a",)),
        Notification("DOWN: web1", "again\nmore", "warning", ("web1",), HOST_DOWN, TS + 2, ("a",)),
    ]
    assert digest(items) == Notification(
        "3 events on 2 hosts",
        f"{at(TS, '%H:%M:%S')} DOWN: web1: web1 is DOWN.\n"
        f"{at(TS + 1, '%H:%M:%S')} BOOT: web2\n"
        f"{at(TS + 2, '%H:%M:%S')} DOWN: web1: again",
        "critical", ("web1", "web2"), "digest", TS + 2, ("a",))
    assert digest(items[:1]) == items[0]


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59.4, "59s"), (60, "1m"), (72, "1m 12s"), (3600, "1h"), (3725, "1h 2m"),
    (90061, "1d 1h"),
])
def test_duration(seconds: float, text: str) -> None:
    """Durations read as at most two units."""
    assert duration(seconds) == text


def test_redact_replaces_every_secret_longest_first() -> None:
    """Secrets (and a URL containing another secret) never survive into a reason."""
    url = "https://chat.example.com/hooks/abcd1234"
    assert redact(f"POST {url} failed; key abcd1234; pw x", [url, "abcd1234", "x"]) == (
        "POST [redacted] failed; key [redacted]; pw x")


def test_long_digest_lists_the_first_events_and_counts_the_rest() -> None:
    """A digest lists at most max_lines events, then how many more there were."""
    items = [Notification(f"DOWN: h{n}", "", "critical", (f"h{n}",), HOST_DOWN, TS, ("a",))
             for n in range(5)]
    body = digest(items, max_lines=2).body.splitlines()
    assert body == [f"{at(TS, '%H:%M:%S')} DOWN: h0", f"{at(TS, '%H:%M:%S')} DOWN: h1",
                    "... and 3 more"]


def _overflow(notes: list[Notification], listed: int = DIGEST_LINES) -> Overflow:
    beyond = Overflow(notes[0].recipients, listed)
    for note in notes:
        beyond.add(note)
    return beyond


def test_a_digest_counts_what_the_storm_could_not_keep() -> None:
    """Notifications past notify_queue_limit are counted, hosts too (one host twice counts
    once), with the level of the worst and the time of the last; they are listed after
    the held ones while lines are left, and alone they still make one digest."""
    items = [Notification(f"DOWN: h{n}", "", "warning", (f"h{n}",), HOST_DOWN, TS, ("a",))
             for n in range(3)]
    beyond = [Notification(f"DOWN: h{n}", "", "critical", (f"h{n}",), HOST_DOWN, TS + n,
                           ("a",)) for n in range(2, 6)]
    made = digest(items, max_lines=2, beyond=_overflow(beyond))
    assert (made.title, made.level, made.hosts, made.ts, made.recipients) == (
        "7 events on 6 hosts", "critical", ("h0", "h1", "h2"), TS + 5, ("a",))
    assert made.body.splitlines()[2:] == [
        "... and 5 more", "(4 of them past notify_queue_limit: the journal has every event)"]
    listed = digest(items[:1], max_lines=4, beyond=_overflow(beyond)).body.splitlines()
    assert [line.split(" ", 1)[1] for line in listed[:4]] == [
        "DOWN: h0", "DOWN: h2", "DOWN: h3", "DOWN: h4"]
    assert listed[4:] == [
        "... and 1 more", "(4 of them past notify_queue_limit: the journal has every event)"]
    alone = digest([], beyond=_overflow(beyond[:1]))
    assert (alone.title, alone.hosts, alone.recipients) == ("1 event on 1 host", (), ("a",))
    assert alone.body.splitlines()[0] == f"{at(TS + 2, '%H:%M:%S')} DOWN: h2"


def test_an_overflow_keeps_what_its_digest_lists_and_counts_the_rest() -> None:
    """Past the first ``listed`` notifications only the count, hosts, worst level, last
    time and notices stay: a fleet's fall past the limit costs a name and a notice each."""
    notes = [Notification(f"DOWN: h{n % 3}", "", level, (f"h{n % 3}",), HOST_DOWN, TS + n,
                          ("a",), (Notice(f"host:h{n % 3}", "down"),))
             for n, level in enumerate(["info", "critical", "warning", "info", "info"])]
    beyond = _overflow(notes, listed=2)
    assert beyond.first == notes[:2]
    assert (beyond.count, list(beyond.hosts), beyond.level, beyond.ts) == (
        5, ["h0", "h1", "h2"], "critical", TS + 4)
    assert beyond.notices == [note.notices[0] for note in notes]
