"""Maintenance windows: when which hosts are being worked on, so nobody is paged for it.

Pure code: no reactor, no I/O, ``now`` is an argument. A
:class:`MaintenanceWindow` names its hosts (exact names, globs such as ``web*``,
and tags given under ``hosts.<name>.tags``) and its timing: one-off (start, end)
or recurring (a cron expression, a duration and a time zone;
:mod:`heartbeat.server.schedule` has the DST rules). The
:class:`MaintenanceCalendar` holds every window, static (config ``maintenance:``)
and made through the API, and is the one object the notifier, the API and the
pages ask whether a host is in maintenance. docs/OPERATIONS.md is the user's
description.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from heartbeat.config.loader import ConfigError
from heartbeat.server.schedule import (
    CronExpression,
    CronSchedule,
    OneOffWindow,
    RecurringWindow,
    Timing,
    parse_duration,
    parse_instant,
    zone,
)

__all__ = [
    "WINDOW_FIELDS",
    "WINDOW_ID",
    "HostSelector",
    "MaintenanceCalendar",
    "MaintenanceWindow",
    "is_glob",
    "parse_window",
]

WINDOW_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A window's id: the config's ``name``, or the number the API gave it."""
WINDOW_FIELDS: Final = ("name", "hosts", "tags", "start", "end", "duration", "cron", "timezone",
                        "comment")
_TAG: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_GLOB_CHARS: Final = frozenset("*?[")
_HOST_PATTERN: Final = re.compile(r"[A-Za-z0-9._*?\[\]!-]{1,253}")


def is_glob(pattern: str) -> bool:
    """Whether ``pattern`` is a glob (``*``, ``?``, ``[...]``) rather than a plain name."""
    return not _GLOB_CHARS.isdisjoint(pattern)


def compile_glob(pattern: str) -> Callable[[str], bool]:
    """A case-sensitive shell-style matcher for ``pattern`` (``*`` also matches dots)."""
    if not is_glob(pattern):
        return lambda name: name == pattern
    compiled = re.compile(fnmatch.translate(pattern))
    return lambda name: compiled.match(name) is not None


def field_key(key: str, name: str) -> str:
    """``key.name``, or ``name`` alone at the top of an API body."""
    return f"{key}.{name}" if key else name


def spec_keys(raw: Any, key: str, source: str, known: tuple[str, ...],
              what: str) -> Callable[[str], str]:
    """Check that ``raw`` is a mapping of ``known`` fields; the function that names a
    field of it in errors (``maintenance[0].start``, or ``start`` in an API body)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(source, key, f"expected a mapping, got {raw!r:.60}")
    for name in raw:
        if name not in known:
            raise ConfigError(source, field_key(key, str(name)),
                              f"unknown field; {what} has {', '.join(known)}")
    return lambda name: field_key(key, name)


@dataclass(frozen=True, slots=True)
class HostSelector:
    """Hosts by exact name, by glob, or by tag; a host matches if any of them does."""

    names: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    _exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _globs: tuple[Callable[[str], bool], ...] = field(init=False, repr=False, compare=False)
    _tags: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_exact", frozenset(n for n in self.names if not is_glob(n)))
        object.__setattr__(self, "_globs",
                           tuple(compile_glob(n) for n in self.names if is_glob(n)))
        object.__setattr__(self, "_tags", frozenset(self.tags))

    def matches(self, host: str, tags: frozenset[str] = frozenset()) -> bool:
        if host in self._exact or (self._tags and not self._tags.isdisjoint(tags)):
            return True
        return any(match(host) for match in self._globs)

    @property
    def has_globs(self) -> bool:
        return bool(self._globs)


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A planned period during which its hosts' problems notify nobody."""

    id: str
    selector: HostSelector
    timing: Timing
    zone_name: str
    comment: str = ""
    author: str | None = None
    """Who made it through the API (None: the config)."""
    created: float = 0.0
    source: str = "config"
    """``config`` (read-only through the API) or ``api`` (kept in the store)."""
    spec: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """The window as given (start and end as Unix seconds): what the store keeps and
    what a PUT replaces."""

    def active_at(self, now: float) -> bool:
        return self.timing.active_at(now)

    def matches(self, host: str, tags: frozenset[str] = frozenset()) -> bool:
        return self.selector.matches(host, tags)

    @property
    def label(self) -> str:
        """How notices name it: ``maintenance 'weekly-patch'``, with its comment if any."""
        return f"maintenance {self.id!r}" + (f" ({self.comment})" if self.comment else "")

    def to_json(self, now: float) -> dict[str, Any]:
        """The API shape: the window as given, its source and author, and where it stands."""
        timing = self.timing
        occurrence = timing.occurrence_at(now)
        body: dict[str, Any] = {"id": self.id, "hosts": list(self.selector.names),
                                "tags": list(self.selector.tags)}
        if isinstance(timing, RecurringWindow):
            body.update(kind="recurring", start=None, end=None,
                        cron=timing.schedule.expression.text, duration=timing.duration)
        else:
            body.update(kind="once", start=timing.start, end=timing.end, cron=None,
                        duration=timing.end - timing.start)
        body.update(
            timezone=self.zone_name, comment=self.comment, author=self.author,
            created=self.created, source=self.source, active=occurrence is not None,
            current=None if occurrence is None else {"start": occurrence[0],
                                                      "end": occurrence[1]},
            next_start=timing.next_start_after(now), next_change=timing.next_change_after(now))
        return body


def _strings(raw: Any, key: str, source: str, check: Callable[[str], str | None]) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise ConfigError(source, key, f"expected a list of strings, got {raw!r:.60}")
    found: list[str] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise ConfigError(source, f"{key}[{i}]", f"expected a string, got {item!r:.60}")
        problem = check(item)
        if problem:
            raise ConfigError(source, f"{key}[{i}]", problem)
        found.append(item)
    return list(dict.fromkeys(found))


def _host_pattern(text: str) -> str | None:
    if _HOST_PATTERN.fullmatch(text):
        return None
    return f"not a host name or glob: {text!r:.60}"


def _tag(text: str) -> str | None:
    if _TAG.fullmatch(text):
        return None
    return f"not a tag (1-64 of A-Z a-z 0-9 . _ : -): {text!r:.60}"


def parse_window(
    raw: Mapping[str, Any], *, key: str, source: str, default_zone: str, window_id: str,
    author: str | None = None, created: float = 0.0, origin: str = "config",
) -> MaintenanceWindow:
    """Check one window (a ``maintenance:`` item, or an API body) into a window.

    Every problem is a :class:`ConfigError` naming ``key`` and the field, so the
    config loader and the API word their errors alike.
    """
    k = spec_keys(raw, key, source, WINDOW_FIELDS, "a window")
    hosts = _strings(raw.get("hosts"), k("hosts"), source, _host_pattern)
    tags = _strings(raw.get("tags"), k("tags"), source, _tag)
    if not hosts and not tags:
        raise ConfigError(source, k("hosts"), "name at least one host, glob or tag "
                                                  "(hosts: [web1, 'db*'], tags: [linux])")
    zone_name = raw.get("timezone") or default_zone
    try:
        tz = zone(zone_name)
    except ValueError as e:
        raise ConfigError(source, k("timezone"), str(e)) from None
    comment = raw.get("comment") or ""
    if not isinstance(comment, str) or len(comment) > 1000:
        raise ConfigError(source, k("comment"), "expected a text of at most 1000 characters")
    timing: Timing
    spec: dict[str, Any] = {"hosts": hosts, "tags": tags, "timezone": zone_name,
                            "comment": comment}
    if raw.get("cron") is not None:
        for name in ("start", "end"):
            if raw.get(name) is not None:
                raise ConfigError(source, k(name), "a recurring window (cron) takes "
                                  "a duration, not start or end")
        try:
            expression = CronExpression.parse(raw["cron"])
        except ValueError as e:
            raise ConfigError(source, k("cron"), str(e)) from None
        if raw.get("duration") is None:
            raise ConfigError(source, k("duration"), "a recurring window needs a duration "
                                                         "(e.g. 2h)")
        duration = _duration(raw["duration"], k("duration"), source)
        timing = RecurringWindow(CronSchedule(expression, tz), duration)
        spec.update(cron=expression.text, duration=duration)
    else:
        if raw.get("start") is None:
            raise ConfigError(source, k("start"), "give start and end (or start and "
                                                      "duration), or cron and duration")
        start = _instant(raw["start"], k("start"), source, tz)
        if raw.get("end") is not None:
            if raw.get("duration") is not None:
                raise ConfigError(source, k("duration"), "give end or duration, not both")
            end = _instant(raw["end"], k("end"), source, tz)
        elif raw.get("duration") is not None:
            end = start + _duration(raw["duration"], k("duration"), source)
        else:
            raise ConfigError(source, k("end"), "a one-off window needs an end (or a "
                                                    "duration)")
        if end <= start:
            raise ConfigError(source, k("end"), "the window must end after it starts")
        timing = OneOffWindow(start, end)
        spec.update(start=start, end=end)
    return MaintenanceWindow(window_id, HostSelector(tuple(hosts), tuple(tags)), timing,
                             zone_name, comment, author, created, origin, spec)


def _duration(value: Any, key: str, source: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise ConfigError(source, key, str(e)) from None


def _instant(value: Any, key: str, source: str, tz: Any) -> float:
    try:
        return parse_instant(value, tz)
    except ValueError as e:
        raise ConfigError(source, key, str(e)) from None


class MaintenanceCalendar:
    """Every maintenance window, and which are open for which host at a given time.

    Which windows are open is worked out once per change (a window opening or
    closing, one added or removed) and kept until the next change, so asking
    about a host costs a dictionary lookup; ``tags_of`` gives a host's tags.
    """

    def __init__(self, tags_of: Callable[[str], frozenset[str]] | None = None) -> None:
        self.tags_of = tags_of or (lambda host: frozenset())
        self._windows: dict[str, MaintenanceWindow] = {}
        self._open: tuple[MaintenanceWindow, ...] = ()
        self._valid: tuple[float, float] | None = None
        """[from, until) during which ``_open`` holds; None: work it out again."""
        self._by_host: dict[str, tuple[MaintenanceWindow, ...]] = {}
        self._last_id = 0

    def __iter__(self) -> Iterator[MaintenanceWindow]:
        return iter(sorted(self._windows.values(), key=_order))

    def __len__(self) -> int:
        return len(self._windows)

    def get(self, window_id: str) -> MaintenanceWindow | None:
        return self._windows.get(window_id)

    def put(self, window: MaintenanceWindow) -> None:
        """Add a window, or replace the one with its id."""
        self._windows[window.id] = window
        if window.id.isdigit():
            self._last_id = max(self._last_id, int(window.id))
        self._changed()

    def next_id(self) -> str:
        """An id for a window made through the API: a number never given before."""
        self._last_id += 1
        return str(self._last_id)

    def restore(self, windows: Iterable[MaintenanceWindow], last_id: int = 0) -> None:
        """Windows kept in the store, and the highest id ever given."""
        for window in windows:
            self.put(window)
        self._last_id = max(self._last_id, last_id)

    def remove(self, window_id: str) -> MaintenanceWindow | None:
        window = self._windows.pop(window_id, None)
        if window is not None:
            self._changed()
        return window

    def _changed(self) -> None:
        self._valid = None
        self._by_host.clear()

    def open(self, now: float) -> tuple[MaintenanceWindow, ...]:
        """The windows open at ``now``."""
        valid = self._valid
        if valid is None or not valid[0] <= now < valid[1]:
            self._open = tuple(w for w in self._windows.values() if w.active_at(now))
            changes = [c for w in self._windows.values()
                       if (c := w.timing.next_change_after(now)) is not None]
            self._valid = (now, min(changes, default=float("inf")))
            self._by_host.clear()
        return self._open

    def for_host(self, host: str, now: float) -> tuple[MaintenanceWindow, ...]:
        """The windows open at ``now`` that cover ``host``."""
        open_now = self.open(now)
        if not open_now:
            return ()
        found = self._by_host.get(host)
        if found is None:
            tags = self.tags_of(host)
            found = tuple(w for w in open_now if w.matches(host, tags))
            if len(self._by_host) < 200_000:
                self._by_host[host] = found
        return found

    def in_maintenance(self, host: str, now: float) -> bool:
        return bool(self.for_host(host, now))

    def next_change(self, now: float) -> float | None:
        """When a window next opens or closes (None: never, as far as can be seen)."""
        self.open(now)
        assert self._valid is not None
        until = self._valid[1]
        return None if until == float("inf") else until

    def covers(self, window: MaintenanceWindow, hosts: Iterable[str]) -> list[str]:
        """Which of ``hosts`` the window names (open or not)."""
        return [h for h in hosts if window.matches(h, self.tags_of(h))]


def _order(window: MaintenanceWindow) -> tuple[int, str]:
    """Config windows first, then API ones by number, then by id."""
    return (0 if window.source == "config" else 1,
            f"{int(window.id):012d}" if window.id.isdigit() else window.id)
