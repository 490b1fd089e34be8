"""Which events people hear about, and the words they get (pure: no clock, no I/O)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from heartbeat.events import (
    ALERT,
    ALERT_FLAPPING,
    HOST_BOOT,
    HOST_DOWN,
    HOST_FLAPPING,
    HOST_MESSAGE,
    HOST_UP,
    JOB,
    PROBLEM_STILL,
    Event,
)
from heartbeat.server.notices import Notice
from heartbeat.server.notify.base import Notification, level_rank

__all__ = [
    "DIGEST",
    "DIGEST_LINES",
    "NOTIFIED_KINDS",
    "RECOVERY_MIN_DOWN",
    "Overflow",
    "Skip",
    "digest",
    "duration",
    "notification_for",
]

NOTIFIED_KINDS: Final = (HOST_DOWN, HOST_UP, HOST_BOOT, HOST_MESSAGE, ALERT, HOST_FLAPPING,
                         ALERT_FLAPPING, PROBLEM_STILL, JOB)
"""The kinds :func:`notification_for` words (the notifier hears these)."""
RECOVERY_MIN_DOWN: Final = 4.0
"""A host that was down for less than this (s) gets no recovery notice: a blip, not news."""
DIGEST: Final = "digest"
DIGEST_LINES: Final = 50
BEHIND_NAMES: Final = 20
"""Hosts a parent's DOWN notice names one by one before it counts the rest."""
_ALERT_LEVELS: Final = {"critical": "critical", "warning": "warning", "unknown": "warning",
                        "ok": "info", "recovered": "info"}


@dataclass(frozen=True, slots=True)
class Skip:
    """Why an event is not notified (counted in the status)."""

    reason: str


def duration(seconds: float) -> str:
    """``4m 12s``-style text for a span of seconds."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    parts = []
    for unit, size in units:
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts[:2])


def _when(ts: float) -> str:
    """Local time of ``ts``; a time no calendar holds (a host's ``boot_time`` of 1e300)
    is shown as the number it is, never failing the notification."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    except (OverflowError, OSError, ValueError):
        return f"{ts:g} (not a time)"


def _down(event: Event) -> Notification:
    name, data = event.host, event.data
    if data.get("reason") == "shutdown":
        return Notification(f"SHUT: {name}", f"{name} is shutting down (it sent SHUT).",
                            "warning", (name,), event.kind, event.ts)
    body = f"{name} is DOWN: no heartbeat"
    if data.get("last_seen") is not None:
        body += f" since {_when(data['last_seen'])}"
    if data.get("silent_for") is not None:
        body += f" ({duration(data['silent_for'])})"
    body += "." + _behind(data)
    return Notification(f"DOWN: {name}", body, "critical", (name,), event.kind, event.ts)


def _behind(data: dict[str, Any]) -> str:
    """The line naming the hosts UNREACHABLE behind a DOWN one (empty if none)."""
    behind = data.get("unreachable") or []
    if not behind:
        return ""
    names = ", ".join(behind[:BEHIND_NAMES])
    more = f" and {len(behind) - BEHIND_NAMES} more" if len(behind) > BEHIND_NAMES else ""
    count = f"{len(behind)} so far, the rest follow" if data.get("unreachable_more") \
        else f"{len(behind)}"
    return f"\nBehind it, now UNREACHABLE ({count}): {names}{more}."


def _up(event: Event) -> Notification | Skip:
    name, data = event.host, event.data
    down_for = data.get("down_for")
    if data.get("previous") == "UNREACHABLE":
        return Skip("after_unreachable")
    if data.get("previous") != "DOWN" or down_for is None:
        return Skip("first_sight")
    if down_for < RECOVERY_MIN_DOWN:
        return Skip("short_down")
    reason = data.get("down_reason")
    why = f" ({reason})" if reason else ""
    return Notification(f"UP: {name}", f"{name} is UP again after {duration(down_for)} down{why}.",
                        "info", (name,), event.kind, event.ts)


def _boot(event: Event) -> Notification:
    name, data = event.host, event.data
    body = f"{name} booted"
    if data.get("boot_time") is not None:
        body += f" at {_when(data['boot_time'])}"
    if data.get("addr"):
        body += f" (address {data['addr']})"
    return Notification(f"BOOT: {name}", body + ".", "info", (name,), event.kind, event.ts)


def _message(event: Event) -> Notification | Skip:
    level = str(event.data.get("level", "info"))
    if level_rank(level) < level_rank("warning"):
        return Skip("message_below_warning")
    return Notification(f"MSG {level}: {event.host}", str(event.data.get("text", "")),
                        level, (event.host,), event.kind, event.ts)


def _alert(event: Event) -> Notification | Skip:
    data = event.data
    if not data.get("notify", True):
        return Skip("alert_not_notified")
    raw = str(data.get("level", "warning")).lower()
    level = _ALERT_LEVELS.get(raw, "warning")
    if data.get("reminder"):
        title = f"REMINDER ({raw.upper()}): {event.host}"
    elif level == "info":
        title = f"RECOVERED: {event.host}"
    else:
        title = f"{raw.upper()}: {event.host}"
    return Notification(title, str(data.get("message", "")), level, (event.host,), event.kind,
                        event.ts)


def _flapping(event: Event) -> Notification:
    """The one notice when a host state or a metric starts flapping, and the one when it
    settles."""
    name, data = event.host, event.data
    what = name if event.kind == HOST_FLAPPING else f"{name} - {data.get('subject', '')}"
    percent = data.get("percent", 0)
    state = data.get("state", "")
    if data.get("flapping"):
        body = (f"{what} is flapping: its state changed in {percent}% of the last 21 checks "
                f"(now {state}). Its ups and downs are not notified until it settles.")
        return Notification(f"FLAPPING: {name}", body, "warning", (name,), event.kind,
                            event.ts)
    body = f"{what} has stopped flapping ({percent}%); it is {state}."
    level = "info" if state in ("UP", "OK") else _STATE_LEVELS.get(state, "warning")
    return Notification(f"FLAPPING STOPPED: {name}", body, level, (name,), event.kind, event.ts)


_STATE_LEVELS: Final = {"DOWN": "critical", "CRITICAL": "critical", "WARNING": "warning",
                        "UNKNOWN": "warning", "UNREACHABLE": "warning"}


def _still(event: Event) -> Notification:
    """A problem held back (maintenance, a silence) that is still there when that ends."""
    name, data = event.host, event.data
    level = str(data.get("level", ""))
    label = data.get("label", "")
    since = data.get("since")
    began = f" since {_when(since)} ({duration(event.ts - since)})" if since else ""
    if data.get("key") == HOST_DOWN:
        body = (f"{name} is still DOWN{began}; notices were held during {label}, which "
                f"ended.{_behind(data)}")
    elif data.get("job"):
        job = data["job"]
        body = (f"Job {job} on {name} is still {level} ({data.get('problem', '')}){began}; "
                f"notices were held during {label}, which ended.\n{_last_success(data)}")
        return Notification(f"STILL {level}: job {job}", body,
                            _STATE_LEVELS.get(level, "warning"), (name,), event.kind, event.ts)
    else:
        body = (f"{data.get('message', '')}\nStill {level}{began}; notices were held during "
                f"{label}, which ended.")
    return Notification(f"STILL {level}: {name}", body, _STATE_LEVELS.get(level, "warning"),
                        (name,), event.kind, event.ts)


_JOB_LEVELS: Final = {"CRITICAL": "critical", "WARNING": "warning", "OK": "info"}


def _last_success(data: dict[str, Any]) -> str:
    """A job notice's last line: when the job last succeeded."""
    success = data.get("last_success")
    return f"Last success: {_when(success)}." if success else "No successful run yet."


def _job(event: Event) -> Notification | Skip:
    """A cron job late, failed, running too long, or recovered (heartbeat.server.jobs)."""
    data = event.data
    if not data.get("notify", True):
        return Skip("job_not_notified")
    name, level = data.get("job", ""), str(data.get("level", ""))
    on = f" on {event.host}" if event.host else ""
    reason = str(data.get("reason", ""))
    last = _last_success(data)
    if level == "OK":
        took = data.get("duration")
        after = f" (its last run took {duration(took)})" if took is not None else ""
        title = f"RECOVERED: job {name}"
        body = f"Job {name}{on} is OK again{after}; it was {data.get('previous', '')}."
    elif reason.startswith("failed"):
        title = f"FAILED: job {name}"
        body = (f"Job {name}{on} failed: its last run ended with exit code "
                f"{data.get('exit_code')}.\n{last}")
        if data.get("log_tail"):
            body += f"\nThe end of its output:\n{data['log_tail']}"
    elif reason.startswith("late"):
        title = f"LATE: job {name}"
        expected = data.get("expected")
        when = f" by {_when(expected)}" if expected is not None else ""
        grace = f" (+{duration(data['grace'])} grace)" if data.get("grace") else ""
        running = data.get("running_since")
        still = f"\nA run started at {_when(running)} has not ended." if running else ""
        body = (f"Job {name}{on} is late: a run was due to end{when}{grace} "
                f"({data.get('schedule', '')}).{still}\n{last}")
    else:
        title = f"RUNNING TOO LONG: job {name}"
        running = data.get("running_since")
        since = f" since {_when(running)}" if running else ""
        body = (f"Job {name}{on} has been running{since}, longer than its max_runtime of "
                f"{duration(float(data.get('max_runtime') or 0))}.\n{last}")
    return Notification(title, body, _JOB_LEVELS.get(level, "warning"),
                        (event.host,) if event.host else (), event.kind, event.ts)


def notification_for(event: Event) -> Notification | Skip:
    """The notification ``event`` deserves, or why it gets none."""
    if event.kind == HOST_DOWN:
        return _down(event)
    if event.kind == HOST_UP:
        return _up(event)
    if event.kind == HOST_BOOT:
        return _boot(event)
    if event.kind == HOST_MESSAGE:
        return _message(event)
    if event.kind == ALERT:
        return _alert(event)
    if event.kind in (HOST_FLAPPING, ALERT_FLAPPING):
        return _flapping(event)
    if event.kind == PROBLEM_STILL:
        return _still(event)
    if event.kind == JOB:
        return _job(event)
    return Skip("not_notified_kind")


def _digest_line(item: Notification) -> str:
    line = f"{time.strftime('%H:%M:%S', time.localtime(item.ts))} {item.title}"
    first = item.body.splitlines()[0] if item.body else ""
    return f"{line}: {first}" if first else line


@dataclass
class Overflow:
    """One recipient set's notifications past ``notify_queue_limit`` in a storm's window.

    Not queued, but not lost from the digest either. A fleet's fall makes one digest per
    recipient set, and each set's digest names its own hosts, however many sets filled
    the limit first: a set keeps its first ``listed`` notifications whole, what its
    digest can list, and of the rest what the digest and the drop report say (count,
    hosts, worst level, last time, the notices to mark), not the notifications.
    """

    recipients: tuple[str, ...]
    listed: int = DIGEST_LINES
    first: list[Notification] = field(default_factory=list)
    count: int = 0
    hosts: dict[str, None] = field(default_factory=dict)
    level: str | None = None
    ts: float = 0.0
    notices: list[Notice] = field(default_factory=list)

    def add(self, note: Notification) -> None:
        self.count += 1
        if len(self.first) < self.listed:
            self.first.append(note)
        self.hosts.update(dict.fromkeys(note.hosts))
        if self.level is None or level_rank(note.level) > level_rank(self.level):
            self.level = note.level
        self.ts = note.ts
        self.notices.extend(note.notices)


def digest(items: Sequence[Notification], max_lines: int = DIGEST_LINES,
           beyond: Overflow | None = None) -> Notification:
    """One message listing ``items`` (same recipients), instead of one message each.

    At most ``max_lines`` events are listed, then a count of the rest: a digest has
    to fit the smallest channel (Pushover: 1024 characters shown). ``beyond`` are the
    same recipients' notifications the storm could not hold (``notify_queue_limit``):
    listed after ``items`` while lines are left, and counted, so a digest of a fleet's
    fall says how big it is and names the recipients' own hosts.
    """
    if beyond is None or not beyond.count:
        if len(items) == 1:
            return items[0]
        beyond = None
    count = len(items) + (beyond.count if beyond else 0)
    hosts = tuple(dict.fromkeys(host for item in items for host in item.hosts))
    everywhere = len(set(hosts).union(beyond.hosts) if beyond else hosts)
    levels = [item.level for item in items]
    if beyond and beyond.level is not None:
        levels.append(beyond.level)
    level = max(levels, key=level_rank)
    title = (f"{count} event{'s' if count != 1 else ''} on {everywhere} "
             f"host{'s' if everywhere != 1 else ''}")
    shown = [*items, *(beyond.first if beyond else ())][:max_lines]
    lines = [_digest_line(item) for item in shown]
    if count > len(shown):
        lines.append(f"... and {count - len(shown)} more")
    if beyond:
        lines.append(f"({beyond.count} of them past notify_queue_limit: the journal has "
                     f"every event)")
    return Notification(title, "\n".join(lines), level, hosts, DIGEST,
                        beyond.ts if beyond else items[-1].ts,
                        beyond.recipients if beyond else items[0].recipients,
                        tuple(notice for item in items for notice in item.notices))
