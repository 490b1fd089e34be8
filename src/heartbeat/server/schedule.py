"""Cron expressions and recurring windows in a named time zone, DST-correct.

Pure code: no reactor, no clock; every time is Unix seconds passed in. A
:class:`CronExpression` is the classic 5-field crontab line (minute, hour, day of
month, month, day of week) with lists, ranges, steps, names and the ``@daily``
family; a :class:`CronSchedule` evaluates one in an IANA time zone and answers
"next fire time after t" and "previous fire time before t" (maintenance windows
here, the expected runs of cron-job pings elsewhere). A :class:`RecurringWindow`
is a schedule plus a duration: "is it active at now", "next start after now",
"next change after now".

Daylight saving time, decided as Vixie cron / cronie decide it, so that a window
and the host's own cron agree:

- A fire time that does not exist (02:30 on a spring-forward day in Europe) fires
  at the first instant after the gap, the moment the clocks jump (03:00 local);
  several such times fold into that one fire.
- A fire time that occurs twice (02:30 on a fall-back day) fires once, at its
  first occurrence, unless the expression is periodic within the day (its minute
  or hour field starts with ``*``, e.g. ``*/15 * * * *``): then the repeated hour
  fires again, as cron does, because the job runs every so many real minutes.
- A duration is elapsed time: a 2-hour window from 01:00 on a spring-forward day
  ends at 04:00 local, two real hours later.
"""

from __future__ import annotations

import bisect
import calendar
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "CronExpression",
    "CronSchedule",
    "OneOffWindow",
    "RecurringWindow",
    "Timing",
    "local_zone_name",
    "parse_duration",
    "parse_instant",
    "zone",
]

_MONTHS: Final = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                  "dec")
_DAYS: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MACROS: Final = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS: Final = (
    # name, lowest, highest, names (index + offset = value)
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_SEARCH_YEARS: Final = 10
"""How far a search for the next or previous fire looks: far enough for 29 February
on a day of month alone (8 years apart around 2100), not for ever."""
_DAY: Final = timedelta(days=1)


def _value(text: str, name: str, lo: int, hi: int, names: tuple[str, ...]) -> int:
    word = text.lower()
    if names and word in names:
        return names.index(word) + (1 if name == "month" else 0)
    if not text.isdigit():
        known = f" (or a name: {', '.join(names)})" if names else ""
        raise ValueError(f"{name}: {text!r} is not a number{known}")
    number = int(text)
    if not lo <= number <= hi:
        raise ValueError(f"{name}: {number} is out of range {lo}-{hi}")
    return number


def _parse_field(text: str, name: str, lo: int, hi: int,
                 names: tuple[str, ...]) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ValueError(f"{name}: empty item in {text!r}")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name}: step {step_text!r} must be a whole number above 0")
            step = int(step_text)
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = (_value(first, name, lo, hi, names), _value(last, name, lo, hi, names))
            if start > end:
                raise ValueError(f"{name}: range {base} runs backwards")
        else:
            start = _value(base, name, lo, hi, names)
            end = hi if slash else start  # "5/15": from 5 to the end, every 15
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A parsed 5-field crontab expression (``minute hour dom month dow``)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 = Sunday ... 6 = Saturday (a 7 in the text is Sunday too)."""
    any_day: bool
    """The day-of-month field starts with ``*``."""
    any_weekday: bool
    """The day-of-week field starts with ``*``. When neither starts with ``*``, a day
    matches if either matches (cron's rule: ``0 0 13 * fri`` is every 13th and every
    Friday)."""
    periodic: bool
    """The minute or hour field starts with ``*``: the expression also fires in the
    repeated hour of a fall-back day."""
    times: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "times", tuple(
            (h, m) for h in sorted(self.hours) for m in sorted(self.minutes)))

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Parse ``text``; ValueError names the field and what is wrong with it."""
        if not isinstance(text, str):
            raise ValueError(f"expected a cron expression as text, got {text!r:.40}")
        line = " ".join(text.split())
        if line.startswith("@"):
            expanded = _MACROS.get(line.lower())
            if expanded is None:
                raise ValueError(f"unknown macro {line!r}; known: {', '.join(_MACROS)}")
            parts = expanded.split()
        else:
            parts = line.split()
        if len(parts) != 5:
            raise ValueError(f"expected 5 fields (minute hour day-of-month month day-of-week),"
                             f" got {len(parts)} in {line!r:.80}")
        sets = [_parse_field(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True)]
        minutes, hours, days, months, weekdays = sets
        weekdays = frozenset(d % 7 for d in weekdays)
        expression = cls(line, minutes, hours, days, months, weekdays,
                         any_day=parts[2].startswith("*"),
                         any_weekday=parts[4].startswith("*"),
                         periodic=parts[0].startswith("*") or parts[1].startswith("*"))
        expression._check_possible()
        return expression

    def _check_possible(self) -> None:
        """Refuse a day of month that no chosen month has (``0 0 31 4 *``): it never fires."""
        if not self.any_weekday and not self.any_day:
            return  # either field may match: the weekday always comes round
        if any(day <= calendar.monthrange(2000, month)[1] for month in self.months
               for day in self.days):
            return
        raise ValueError(f"day of month {','.join(map(str, sorted(self.days)))} never occurs in "
                         f"month {','.join(map(str, sorted(self.months)))}: it would never fire")

    def matches_day(self, day: date) -> bool:
        """Whether the expression fires on ``day`` (a local calendar date)."""
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def __str__(self) -> str:
        return self.text


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ValueError when there is none of that name."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"not a time zone name: {name!r:.60}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r:.60} (an IANA name such as "
                         f"Europe/Berlin or UTC)") from None


def local_zone_name(environ_tz: str | None, localtime_link: str | None) -> str:
    """The IANA name of the machine's own zone, from ``$TZ`` or the ``/etc/localtime``
    link target (both read by the caller); UTC when neither names one."""
    for candidate in (environ_tz.lstrip(":") if environ_tz else None, localtime_link):
        if not candidate:
            continue
        marker = "zoneinfo/"
        name = candidate.split(marker, 1)[1] if marker in candidate else candidate
        try:
            zone(name)
        except ValueError:
            continue
        return name
    return "UTC"


class CronSchedule:
    """A :class:`CronExpression` evaluated in one time zone."""

    __slots__ = ("_cache", "expression", "zone")

    def __init__(self, expression: CronExpression, tz: ZoneInfo) -> None:
        self.expression = expression
        self.zone = tz
        self._cache: dict[date, tuple[float, ...]] = {}

    def fires_on(self, day: date) -> tuple[float, ...]:
        """The fire instants of a local calendar ``day``, ascending."""
        found = self._cache.get(day)
        if found is not None:
            return found
        instants: set[float] = set()
        if self.expression.matches_day(day):
            midnight = self._plain(datetime(day.year, day.month, day.day))
            following = day + _DAY
            tomorrow = self._plain(datetime(following.year, following.month, following.day))
            if midnight is not None and tomorrow is not None and tomorrow - midnight == 86400:
                # A day of 24 hours has no transition (tzdb has no day with two that
                # cancel out): every wall time is the midnight instant plus its offset.
                instants.update(midnight + hour * 3600 + minute * 60
                                for hour, minute in self.expression.times)
            else:
                for hour, minute in self.expression.times:
                    instants.update(self._instants(datetime(day.year, day.month, day.day,
                                                            hour, minute)))
        found = tuple(sorted(instants))
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[day] = found
        return found

    def _plain(self, wall: datetime) -> float | None:
        """The one instant of ``wall``; None when it is skipped or repeated."""
        first = wall.replace(tzinfo=self.zone).timestamp()
        return first if first == wall.replace(tzinfo=self.zone, fold=1).timestamp() else None

    def _instants(self, wall: datetime) -> tuple[float, ...]:
        first = wall.replace(tzinfo=self.zone).timestamp()
        second = wall.replace(tzinfo=self.zone, fold=1).timestamp()
        if first == second:
            return (first,)
        if datetime.fromtimestamp(first, self.zone).replace(tzinfo=None) != wall:
            return (self._gap_end(min(first, second), max(first, second)),)
        return (first, second) if self.expression.periodic else (first,)

    def _gap_end(self, lo: float, hi: float) -> float:
        """The first instant with the offset after a transition between ``lo`` and ``hi``."""
        before = datetime.fromtimestamp(lo, self.zone).utcoffset()
        low, high = int(lo), int(hi)
        while high - low > 1:
            middle = (low + high) // 2
            if datetime.fromtimestamp(middle, self.zone).utcoffset() == before:
                low = middle
            else:
                high = middle
        return float(high)

    def _local_day(self, t: float) -> date:
        return datetime.fromtimestamp(t, self.zone).date()

    def fires(self, start: float, end: float) -> Iterator[float]:
        """Every fire instant in ``[start, end)``, ascending."""
        day = self._local_day(start) - _DAY
        last = self._local_day(end)
        while day <= last:
            for instant in self.fires_on(day):
                if instant >= end:
                    return
                if instant >= start:
                    yield instant
            day += _DAY

    def next_after(self, t: float) -> float | None:
        """The first fire instant strictly after ``t`` (None: none within ten years)."""
        day = self._local_day(t) - _DAY
        limit = day + timedelta(days=366 * _SEARCH_YEARS)
        months = self.expression.months
        while day <= limit:
            if day.month not in months:
                day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
                continue
            fires = self.fires_on(day)
            found = bisect.bisect_right(fires, t)
            if found < len(fires):
                return fires[found]
            day += _DAY
        return None

    def previous_before(self, t: float) -> float | None:
        """The last fire instant strictly before ``t`` (None: none within ten years)."""
        return self._latest(t, inclusive=False)

    def latest_at_or_before(self, t: float) -> float | None:
        """The last fire instant at or before ``t``."""
        return self._latest(t, inclusive=True)

    def _latest(self, t: float, *, inclusive: bool) -> float | None:
        day = self._local_day(t) + _DAY
        limit = day - timedelta(days=366 * _SEARCH_YEARS)
        months = self.expression.months
        while day >= limit:
            if day.month not in months:
                day = day.replace(day=1) - _DAY
                continue
            fires = self.fires_on(day)
            found = (bisect.bisect_right if inclusive else bisect.bisect_left)(fires, t)
            if found:
                return fires[found - 1]
            day -= _DAY
        return None

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression.text!r}, {self.zone.key!r})"

    def __str__(self) -> str:
        return f"{self.expression.text} ({self.zone.key})"


# -- windows ---------------------------------------------------------------------------

_MERGE_LIMIT: Final = 10_000
"""Occurrences a merged span is followed through (``* * * * *`` for 5 minutes is one
endless span: its end is reported as unknown rather than searched for ever)."""


@dataclass(frozen=True, slots=True)
class OneOffWindow:
    """From ``start`` to ``end`` (Unix seconds), once."""

    start: float
    end: float

    def occurrence_at(self, now: float) -> tuple[float, float] | None:
        return (self.start, self.end) if self.start <= now < self.end else None

    def active_at(self, now: float) -> bool:
        return self.start <= now < self.end

    def next_start_after(self, now: float) -> float | None:
        return self.start if now < self.start else None

    def next_change_after(self, now: float) -> float | None:
        if now < self.start:
            return self.start
        return self.end if now < self.end else None


class RecurringWindow:
    """A window opening at each fire of a :class:`CronSchedule`, open for ``duration`` s.

    Occurrences that overlap or touch make one span: the window is active from
    the first start to the last end, and "next change" is that end.
    """

    __slots__ = ("duration", "schedule")

    def __init__(self, schedule: CronSchedule, duration: float) -> None:
        if not duration > 0:
            raise ValueError(f"duration must be above 0 seconds, got {duration}")
        self.schedule = schedule
        self.duration = float(duration)

    def occurrence_at(self, now: float) -> tuple[float, float] | None:
        """The (start, end) of the occurrence ``now`` is in (the latest, if several)."""
        start = self.schedule.latest_at_or_before(now)
        if start is None or now >= start + self.duration:
            return None
        return start, start + self.duration

    def active_at(self, now: float) -> bool:
        return self.occurrence_at(now) is not None

    def next_start_after(self, now: float) -> float | None:
        return self.schedule.next_after(now)

    def next_change_after(self, now: float) -> float | None:
        """When the window next opens (inactive now) or closes (active now, merged)."""
        current = self.occurrence_at(now)
        if current is None:
            return self.schedule.next_after(now)
        start, end = current
        following = self.schedule.fires(start, start + 366 * 86400.0 * _SEARCH_YEARS)
        for seen, instant in enumerate(following):
            if instant > end:
                return end
            end = max(end, instant + self.duration)
            if seen >= _MERGE_LIMIT:
                return None
        return end

    def __repr__(self) -> str:
        return f"RecurringWindow({self.schedule!r}, {self.duration:g})"


Timing = OneOffWindow | RecurringWindow
"""When a window is open: once, or on a schedule."""


_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])")
_UNITS: Final = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(value: object) -> float:
    """Seconds from a number, or text such as ``90``, ``2h``, ``1h30m``, ``1d``, ``45s``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif text and _DURATION.sub("", text) == "":
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text))
        else:
            raise ValueError(f"not a duration: {value!r:.40} (seconds, or e.g. 2h, 1h30m, 1d)")
    else:
        raise ValueError(f"expected a duration, got {value!r:.40}")
    if not 0 < seconds < float("inf"):
        raise ValueError(f"a duration must be above 0, got {value!r:.40}")
    return seconds


def parse_instant(value: object, tz: ZoneInfo) -> float:
    """Unix seconds from a number, or an ISO 8601 date-time; one without an offset is a
    wall time in ``tz`` (a time skipped by DST is refused, a repeated one is the first)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a time, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite time, got {value!r}")
        return float(value)
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not a time: {value!r:.60} (Unix seconds or ISO 8601, e.g. "
                             f"2026-12-24T18:00:00+01:00)") from None
    else:
        raise ValueError(f"expected a time, got {value!r:.40}")
    if moment.tzinfo is None:
        wall = moment
        moment = wall.replace(tzinfo=tz)
        if datetime.fromtimestamp(moment.timestamp(), tz).replace(tzinfo=None) != wall:
            raise ValueError(f"{value!s:.40} does not exist in {tz.key}: the clocks skip it")
    return moment.timestamp()
