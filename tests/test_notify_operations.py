"""Notices of dependencies, flapping and held-over problems: events in, words out."""

from __future__ import annotations

import time

from heartbeat.events import ALERT_FLAPPING, HOST_DOWN, HOST_FLAPPING, HOST_UP, PROBLEM_STILL, Event
from heartbeat.server.notify.base import Notification
from heartbeat.server.notify.message import Skip, notification_for

TS = 1711234567.0


def at(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def test_parent_down_lists_the_hosts_behind_it() -> None:
    """A parent's DOWN notice names the hosts now UNREACHABLE behind it, 20 then a count."""
    behind = [f"web{i}" for i in range(23)]
    event = Event(HOST_DOWN, "router1", TS, {"reason": "timeout", "previous": "UP",
                                             "last_seen": TS - 70, "silent_for": 70.0,
                                             "unreachable": behind})
    note = notification_for(event)
    assert isinstance(note, Notification)
    assert note.body == (f"router1 is DOWN: no heartbeat since {at(TS - 70)} (1m 10s).\n"
                         f"Behind it, now UNREACHABLE (23): {', '.join(behind[:20])} and 3 "
                         f"more.")
    assert (note.title, note.level, note.hosts) == ("DOWN: router1", "critical", ("router1",))


def test_parent_down_says_when_more_hosts_follow() -> None:
    """A fall too large for one pass (registry.CASCADE) says the count is so far."""
    behind = [f"web{i}" for i in range(1000)]
    event = Event(HOST_DOWN, "router1", TS, {"reason": "timeout", "previous": "UP",
                                             "unreachable": behind, "unreachable_more": True})
    note = notification_for(event)
    assert isinstance(note, Notification)
    assert note.body.endswith(f"Behind it, now UNREACHABLE (1000 so far, the rest follow): "
                              f"{', '.join(behind[:20])} and 980 more.")


def test_up_after_unreachable_is_not_notified() -> None:
    """An UNREACHABLE host heard again was never notified down: no UP notice."""
    event = Event(HOST_UP, "web1", TS, {"previous": "UNREACHABLE"})
    assert notification_for(event) == Skip("after_unreachable")


def test_flapping_start_and_stop_of_a_host() -> None:
    """One FLAPPING notice at the start, one FLAPPING STOPPED when it settles."""
    start = Event(HOST_FLAPPING, "web1", TS, {"subject": "", "flapping": True, "percent": 35.6,
                                              "state": "DOWN", "since": TS})
    stop = Event(HOST_FLAPPING, "web1", TS + 900, {"subject": "", "flapping": False,
                                                   "percent": 18.1, "state": "UP", "since": TS})
    assert notification_for(start) == Notification(
        "FLAPPING: web1", "web1 is flapping: its state changed in 35.6% of the last 21 checks "
        "(now DOWN). Its ups and downs are not notified until it settles.", "warning",
        ("web1",), HOST_FLAPPING, TS)
    assert notification_for(stop) == Notification(
        "FLAPPING STOPPED: web1", "web1 has stopped flapping (18.1%); it is UP.", "info",
        ("web1",), HOST_FLAPPING, TS + 900)


def test_flapping_metric_settled_in_a_problem_is_at_its_level() -> None:
    """A metric that settles CRITICAL says so, at critical level."""
    stop = Event(ALERT_FLAPPING, "db1", TS, {"subject": "cpu_monitor.cpu_percent",
                                             "flapping": False, "percent": 20.0,
                                             "state": "CRITICAL", "since": TS - 600})
    assert notification_for(stop) == Notification(
        "FLAPPING STOPPED: db1", "db1 - cpu_monitor.cpu_percent has stopped flapping (20.0%); "
        "it is CRITICAL.", "critical", ("db1",), ALERT_FLAPPING, TS)


def test_still_down_after_maintenance() -> None:
    """A DOWN held during a window and still there at its end: one STILL DOWN notice."""
    event = Event(PROBLEM_STILL, "web1", TS, {
        "key": "host.down", "level": "DOWN", "reason": "maintenance",
        "label": "maintenance 'patch' (kernel)", "held_since": TS - 1800, "since": TS - 1800})
    assert notification_for(event) == Notification(
        "STILL DOWN: web1", f"web1 is still DOWN since {at(TS - 1800)} (30m); notices were "
        f"held during maintenance 'patch' (kernel), which ended.", "critical", ("web1",),
        PROBLEM_STILL, TS)


def test_still_an_alert_after_a_silence() -> None:
    """An alert held by a silence that outlived it: its message, and what held it."""
    event = Event(PROBLEM_STILL, "db1", TS, {
        "key": "disk_monitor.partitions./.percent", "level": "WARNING", "reason": "silenced",
        "label": "silence 4 by bob (swap)", "held_since": TS - 60, "since": TS - 120,
        "message": "WARNING: db1 - disk_monitor.partitions./.percent = 85.0"})
    assert notification_for(event) == Notification(
        "STILL WARNING: db1", f"WARNING: db1 - disk_monitor.partitions./.percent = 85.0\n"
        f"Still WARNING since {at(TS - 120)} (2m); notices were held during silence 4 by bob "
        f"(swap), which ended.", "warning", ("db1",), PROBLEM_STILL, TS)
