"""Silences: "do not tell me about this for a while", by host and metric.

Pure code: no reactor, no I/O, ``now`` is an argument. A :class:`Silence` names a
host glob and a subject glob, a start, an expiry, its author and a comment. The
subject of a threshold alert is its metric path (``disk_monitor.partitions./.percent``);
the subject of a host's own notices is their event kind (``host.down`` for DOWN
and SHUT, ``host.up``, ``host.boot``, ``host.msg``, ``host.flapping``), so
``*`` silences everything about a host, ``host.*`` only its own notices and
``disk_monitor.*`` only its disk alerts. The :class:`SilenceBook` holds them all
and is the one object the notifier, the API and the pages ask.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from heartbeat.config.loader import ConfigError
from heartbeat.server.maintenance import compile_glob, is_glob, spec_keys
from heartbeat.server.schedule import parse_duration, parse_instant, zone

__all__ = ["SILENCE_FIELDS", "Silence", "SilenceBook", "parse_silence"]

SILENCE_FIELDS: Final = ("host", "metric", "start", "end", "duration", "comment", "timezone")
PENDING: Final = "pending"
ACTIVE: Final = "active"
EXPIRED: Final = "expired"
_PATTERN: Final = re.compile(r"[^\x00-\x1f\x7f]{1,500}")


@dataclass(frozen=True, slots=True)
class Silence:
    """Notices about ``host`` (a glob) and ``metric`` (a glob) held from ``start`` to ``end``."""

    id: str
    host: str
    metric: str
    start: float
    end: float
    author: str | None
    comment: str
    created: float
    ended_by: str | None = None
    """Who ended it early through the API (its ``end`` is then when they did)."""
    _host: Callable[[str], bool] = field(init=False, repr=False, compare=False)
    _metric: Callable[[str], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_host", compile_glob(self.host))
        object.__setattr__(self, "_metric", compile_glob(self.metric))

    def state(self, now: float) -> str:
        if now < self.start:
            return PENDING
        return ACTIVE if now < self.end else EXPIRED

    def active_at(self, now: float) -> bool:
        return self.start <= now < self.end

    def matches(self, host: str, subject: str) -> bool:
        return self._host(host) and self._metric(subject)

    def matches_host(self, host: str) -> bool:
        return self._host(host)

    @property
    def label(self) -> str:
        """How notices name it: ``silence 4 by alice (disk swap)``."""
        by = f" by {self.author}" if self.author else ""
        return f"silence {self.id}{by}" + (f" ({self.comment})" if self.comment else "")

    def to_json(self, now: float) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "metric": self.metric, "start": self.start,
                "end": self.end, "author": self.author, "comment": self.comment,
                "created": self.created, "ended_by": self.ended_by, "state": self.state(now)}

    def to_row(self) -> dict[str, Any]:
        """What the store keeps: every field as given."""
        return {"id": self.id, "host": self.host, "metric": self.metric, "start": self.start,
                "end": self.end, "author": self.author, "comment": self.comment,
                "created": self.created, "ended_by": self.ended_by}


def _glob(raw: Any, key: str, source: str) -> str:
    if not isinstance(raw, str) or not _PATTERN.fullmatch(raw):
        raise ConfigError(source, key, "expected a glob of 1-500 printable characters, "
                                       f"got {raw!r:.60}")
    return raw


def parse_silence(
    raw: Mapping[str, Any], *, source: str, default_zone: str, now: float, silence_id: str,
    author: str | None, key: str = "",
) -> Silence:
    """Check a silence (an API body): ``host`` and ``comment`` are required, ``metric``
    defaults to ``*``, ``start`` to now, and it needs an ``end`` or a ``duration``."""
    k = spec_keys(raw, key, source, SILENCE_FIELDS, "a silence")
    if "host" not in raw:
        raise ConfigError(source, k("host"), "is required: a host name or glob")
    host = _glob(raw["host"], k("host"), source)
    metric = _glob(raw.get("metric", "*"), k("metric"), source)
    comment = raw.get("comment")
    if not isinstance(comment, str) or not comment.strip() or len(comment) > 1000:
        raise ConfigError(source, k("comment"), "is required: say why (at most 1000 "
                                                "characters)")
    try:
        tz = zone(raw.get("timezone") or default_zone)
    except ValueError as e:
        raise ConfigError(source, k("timezone"), str(e)) from None
    try:
        start = now if raw.get("start") is None else parse_instant(raw["start"], tz)
    except ValueError as e:
        raise ConfigError(source, k("start"), str(e)) from None
    if raw.get("end") is not None and raw.get("duration") is not None:
        raise ConfigError(source, k("duration"), "give end or duration, not both")
    if raw.get("end") is None and raw.get("duration") is None:
        raise ConfigError(source, k("end"), "a silence needs an end or a duration (e.g. 2h)")
    name = "end" if raw.get("end") is not None else "duration"
    try:
        if name == "end":
            end = parse_instant(raw["end"], tz)
        else:
            end = start + parse_duration(raw["duration"])
    except ValueError as e:
        raise ConfigError(source, k(name), str(e)) from None
    if end <= start:
        raise ConfigError(source, k("end"), "the silence must end after it starts")
    if end <= now:
        raise ConfigError(source, k("end"), "the silence would already be over")
    return Silence(silence_id, host, metric, start, end, author, comment.strip(), now)


class SilenceBook:
    """Every silence, pending, active or recently expired."""

    def __init__(self) -> None:
        self._silences: dict[str, Silence] = {}
        self._last_id = 0
        self._index: tuple[dict[str, list[Silence]], list[Silence]] | None = None
        """Silences by exact host, and those of a glob; made again after a change, so
        asking about a host (every notice, every host object) costs a lookup, not a walk."""

    def _indexed(self) -> tuple[dict[str, list[Silence]], list[Silence]]:
        if self._index is None:
            by_host: dict[str, list[Silence]] = {}
            globs: list[Silence] = []
            for silence in self._silences.values():
                if is_glob(silence.host):
                    globs.append(silence)
                else:
                    by_host.setdefault(silence.host, []).append(silence)
            self._index = (by_host, globs)
        return self._index

    def __iter__(self) -> Iterator[Silence]:
        return iter(sorted(self._silences.values(), key=lambda s: (s.start, _number(s.id))))

    def __len__(self) -> int:
        return len(self._silences)

    def get(self, silence_id: str) -> Silence | None:
        return self._silences.get(silence_id)

    def put(self, silence: Silence) -> None:
        self._silences[silence.id] = silence
        self._index = None
        self._last_id = max(self._last_id, _number(silence.id))

    def expire(self, silence_id: str, now: float, by: str | None) -> Silence | None:
        """End a silence now (one not started yet ends before it begins); None if unknown.

        An expired silence stays listed, with who ended it, until :meth:`purge`.
        """
        silence = self._silences.get(silence_id)
        if silence is None:
            return None
        if silence.end > now:
            silence = replace(silence, start=min(silence.start, now), end=now, ended_by=by)
            self._silences[silence_id] = silence
            self._index = None
        return silence

    def matching(self, host: str, subject: str, now: float) -> Silence | None:
        """The active silence covering ``host``'s ``subject`` (the one lasting longest)."""
        by_host, globs = self._indexed()
        exact = by_host.get(host)
        if exact is None and not globs:  # most hosts: no walk
            return None
        found = [s for group in (exact or (), globs) for s in group
                 if s.active_at(now) and s.matches(host, subject)]
        return max(found, key=lambda s: s.end) if found else None

    def active(self, now: float) -> list[Silence]:
        return [s for s in self if s.active_at(now)]

    def next_change(self, now: float) -> float | None:
        """When a silence next starts or expires."""
        times = [t for s in self._silences.values() for t in (s.start, s.end) if t > now]
        return min(times, default=None)

    def purge(self, before: float) -> list[str]:
        """Forget silences that expired before ``before``; their ids."""
        gone = [i for i, s in self._silences.items() if s.end < before]
        for silence_id in gone:
            del self._silences[silence_id]
            self._index = None
        return gone

    def next_id(self) -> str:
        """A new id, never one given before (restore() tells it the highest stored)."""
        self._last_id += 1
        return str(self._last_id)

    def restore(self, silences: Iterable[Silence], last_id: int = 0, *,
                replace: bool = False) -> None:
        """Silences kept in the store (``replace``: instead of those held now)."""
        if replace:
            self._silences.clear()
            self._index = None
        for silence in silences:
            self.put(silence)
        self._last_id = max(self._last_id, last_id)


def _number(text: str) -> int:
    return int(text) if text.isdigit() else 0
