"""Cron expressions and recurring windows in a time zone, with plain times (DST included)."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heartbeat.server.schedule import (
    CronExpression,
    CronSchedule,
    OneOffWindow,
    RecurringWindow,
    local_zone_name,
    parse_duration,
    parse_instant,
    zone,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # a 30-minute DST shift
UTC = ZoneInfo("UTC")


def at(tz: ZoneInfo, *parts: int, fold: int = 0) -> float:
    return datetime(*parts, tzinfo=tz, fold=fold).timestamp()  # type: ignore[misc]


def local(t: float | None, tz: ZoneInfo = BERLIN) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, tz).isoformat()


def schedule(text: str, tz: ZoneInfo = BERLIN) -> CronSchedule:
    return CronSchedule(CronExpression.parse(text), tz)


class ParseTests:
    def test_fields_lists_ranges_steps_and_names(self) -> None:
        """Every field form: lists, ranges, */n, a-b/n, a/n, month and day names, 7 = Sunday."""
        expression = CronExpression.parse("0,30 9-17/4 1,15 jan-mar/2 MON-fri,7")
        assert (sorted(expression.minutes), sorted(expression.hours), sorted(expression.days),
                sorted(expression.months), sorted(expression.weekdays)) == (
            [0, 30], [9, 13, 17], [1, 15], [1, 3], [0, 1, 2, 3, 4, 5])
        assert sorted(CronExpression.parse("5/20 * * * *").minutes) == [5, 25, 45]
        assert (CronExpression.parse("*/15 3 * * *").periodic,
                CronExpression.parse("15 */3 * * *").periodic,
                CronExpression.parse("15 3 * * *").periodic) == (True, True, False)

    def test_macros(self) -> None:
        """@daily and friends are their five-field forms; whitespace is normalised."""
        assert CronExpression.parse("@weekly") == dataclasses.replace(
            CronExpression.parse("0 0 * * 0"), text="@weekly")
        assert CronExpression.parse("  @HOURLY ").text == "@HOURLY"
        assert CronExpression.parse("@yearly").times == ((0, 0),)
        assert CronExpression.parse(" 0  2\t* * sun").text == "0 2 * * sun"

    @pytest.mark.parametrize(("text", "problem"), [
        ("0 2 * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4 in "
                    "'0 2 * *'"),
        ("60 * * * *", "minute: 60 is out of range 0-59"),
        ("0 24 * * *", "hour: 24 is out of range 0-23"),
        ("0 0 0 * *", "day of month: 0 is out of range 1-31"),
        ("0 0 * 13 *", "month: 13 is out of range 1-12"),
        ("0 0 * * 8", "day of week: 8 is out of range 0-7"),
        ("0 0 * * mun", "day of week: 'mun' is not a number (or a name: sun, mon, tue, wed, "
                        "thu, fri, sat)"),
        ("*/0 * * * *", "minute: step '0' must be a whole number above 0"),
        ("0 5-1 * * *", "hour: range 5-1 runs backwards"),
        ("0,,5 * * * *", "minute: empty item in '0,,5'"),
        ("@reboot", "unknown macro '@reboot'; known: @yearly, @annually, @monthly, @weekly, "
                    "@daily, @midnight, @hourly"),
        ("0 0 31 4,6 *", "day of month 31 never occurs in month 4,6: it would never fire"),
        ("0 0 30 2 *", "day of month 30 never occurs in month 2: it would never fire"),
    ])
    def test_errors_name_the_field(self, text: str, problem: str) -> None:
        """A bad expression is refused with a message naming the field and the value."""
        with pytest.raises(ValueError) as caught:
            CronExpression.parse(text)
        assert str(caught.value) == problem

    def test_impossible_day_is_fine_when_weekdays_may_match(self) -> None:
        """``0 0 31 2 mon``: day and weekday are ORed, so Mondays in February fire."""
        fires = list(schedule("0 0 31 2 mon", UTC).fires(at(UTC, 2027, 1, 1), at(UTC, 2027, 3, 1)))
        assert [local(t, UTC) for t in fires] == [
            f"2027-02-{d:02d}T00:00:00+00:00" for d in (1, 8, 15, 22)]


class MatchingTests:
    def test_day_of_month_or_day_of_week_when_both_restricted(self) -> None:
        """Both day fields restricted: either matches (13th, or Friday); one starred: both."""
        either = schedule("0 12 13 * fri", UTC)
        both = schedule("0 12 */1 * fri", UTC)
        days = [date(2026, 2, d) for d in range(1, 29)]
        assert [d.day for d in days if either.expression.matches_day(d)] == [6, 13, 20, 27]
        assert [d.day for d in days if both.expression.matches_day(d)] == [6, 13, 20, 27]
        assert [d.day for d in days if schedule("0 12 13 * *").expression.matches_day(d)] == [13]
        assert [d.day for d in [date(2026, 3, 13)]
                if either.expression.matches_day(d)] == [13]  # a Friday the 13th once

    def test_next_and_previous_across_month_and_year(self) -> None:
        """Next fire strictly after, previous strictly before, across month and year ends."""
        s = schedule("30 23 31 12 *", BERLIN)
        t = at(BERLIN, 2026, 12, 31, 23, 30)
        assert (local(s.next_after(t - 1)), local(s.next_after(t)),
                local(s.previous_before(t)), local(s.previous_before(t + 1)),
                local(s.latest_at_or_before(t))) == (
            "2026-12-31T23:30:00+01:00", "2027-12-31T23:30:00+01:00",
            "2025-12-31T23:30:00+01:00", "2026-12-31T23:30:00+01:00",
            "2026-12-31T23:30:00+01:00")

    def test_leap_day(self) -> None:
        """29 February alone fires in leap years only: 2096, then 2104 (2100 is not one)."""
        s = schedule("0 0 29 2 *", UTC)
        assert local(s.next_after(at(UTC, 2097, 1, 1)), UTC) == "2104-02-29T00:00:00+00:00"
        assert local(s.previous_before(at(UTC, 2104, 1, 1)), UTC) == \
            "2096-02-29T00:00:00+00:00"

    def test_fires_in_range(self) -> None:
        """fires(start, end) lists [start, end) in order."""
        s = schedule("*/20 9 * * mon-fri", UTC)
        assert [local(t, UTC)[11:16] for t in s.fires(at(UTC, 2026, 5, 8, 9, 20),
                                                      at(UTC, 2026, 5, 11, 9, 40))] == [
            "09:20", "09:40", "09:00", "09:20"]  # Friday, then Monday (no weekend)


class DaylightSavingTests:
    def test_spring_forward_time_fires_when_the_clocks_jump(self) -> None:
        """02:30 does not exist on 29 March 2026 in Berlin: it fires at 03:00 CEST, once."""
        s = schedule("30 2 * * *")
        fires = list(s.fires(at(BERLIN, 2026, 3, 28, 12), at(BERLIN, 2026, 3, 31, 12)))
        assert [local(t) for t in fires] == [
            "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00",
            "2026-03-31T02:30:00+02:00"]
        assert fires[0] == at(UTC, 2026, 3, 29, 1, 0)

    def test_times_inside_the_gap_fold_into_one_fire(self) -> None:
        """*/15 during hour 2 on a spring-forward day: all four fold into 03:00."""
        s = schedule("*/15 2 * * *", NEW_YORK)
        fires = list(s.fires(at(NEW_YORK, 2026, 3, 8), at(NEW_YORK, 2026, 3, 9)))
        assert [local(t, NEW_YORK) for t in fires] == ["2026-03-08T03:00:00-04:00"]

    def test_fall_back_fixed_time_fires_once_at_first_occurrence(self) -> None:
        """02:30 happens twice on 25 October 2026 in Berlin; a fixed time fires the first."""
        s = schedule("30 2 * * *")
        fires = list(s.fires(at(BERLIN, 2026, 10, 25), at(BERLIN, 2026, 10, 26)))
        assert fires == [at(UTC, 2026, 10, 25, 0, 30)]
        assert local(fires[0]) == "2026-10-25T02:30:00+02:00"

    def test_fall_back_periodic_expression_fires_in_both_hours(self) -> None:
        """A periodic expression (minute field *…) fires in the repeated hour again."""
        s = schedule("*/30 2 * * *")
        fires = list(s.fires(at(BERLIN, 2026, 10, 25), at(BERLIN, 2026, 10, 26)))
        assert [local(t) for t in fires] == [
            "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00"]
        hourly = schedule("0 * * * *")
        assert len(list(hourly.fires(at(BERLIN, 2026, 10, 25), at(BERLIN, 2026, 10, 26)))) == 25
        assert len(list(hourly.fires(at(BERLIN, 2026, 3, 29), at(BERLIN, 2026, 3, 30)))) == 23

    def test_half_hour_shift(self) -> None:
        """Lord Howe moves its clocks by 30 minutes: 02:15 on its spring day fires at 02:30."""
        s = schedule("15 2 * * *", LORD_HOWE)
        fires = list(s.fires(at(LORD_HOWE, 2026, 10, 4), at(LORD_HOWE, 2026, 10, 5)))
        assert [local(t, LORD_HOWE) for t in fires] == ["2026-10-04T02:30:00+11:00"]

    def test_next_and_previous_around_transitions(self) -> None:
        """next_after and previous_before step over the DST change correctly."""
        s = schedule("30 2 * * *")
        assert local(s.next_after(at(BERLIN, 2026, 3, 28, 3))) == "2026-03-29T03:00:00+02:00"
        assert local(s.previous_before(at(BERLIN, 2026, 3, 30))) == "2026-03-29T03:00:00+02:00"
        assert local(s.next_after(at(BERLIN, 2026, 10, 25, 2, 30))) == \
            "2026-10-26T02:30:00+01:00"


Minute = tuple[float, list[datetime], bool]


def real_minutes(tz: ZoneInfo, start: float, end: float) -> list[Minute]:
    """Each real minute in [start, end): its wall time first, then any wall minutes the
    clocks jumped over just before it (a gap), and whether its wall time is a repeat."""
    minutes: list[Minute] = []
    t = start - start % 60
    previous = datetime.fromtimestamp(t - 60, tz).replace(tzinfo=None, fold=0)
    while t < end:
        wall = datetime.fromtimestamp(t, tz)
        naive = wall.replace(tzinfo=None, fold=0)
        skipped = []
        probe = previous + timedelta(minutes=1)
        while probe < naive and naive - previous < timedelta(hours=3):
            skipped.append(probe)
            probe += timedelta(minutes=1)
        minutes.append((float(t), [naive, *skipped], wall.fold == 1 and
                        wall.replace(fold=0).timestamp() != t))
        previous = naive
        t += 60
    return minutes


def brute_force(text: str, minutes: list[Minute]) -> list[float]:
    """The DST rules written a second way: which real minutes the wall clock says fire."""
    expression = CronExpression.parse(text)
    return [t for t, walls, repeated in minutes
            if any(w.minute in expression.minutes and w.hour in expression.hours
                   and expression.matches_day(w.date()) for w in walls)
            and (not repeated or expression.periodic)]


EXPRESSIONS = ("30 2 * * *", "*/15 * * * *", "0 * * * *", "0,30 1-3 * * *", "*/7 2 * * sun",
               "59 1 * * *", "0 3 * * *", "15 */2 * * *", "0 2 25-31 3,10 0")
DST_DAYS = {  # the zone's two changes in 2026, and an ordinary day
    BERLIN: (date(2026, 3, 29), date(2026, 10, 25), date(2026, 7, 1)),
    NEW_YORK: (date(2026, 3, 8), date(2026, 11, 1), date(2026, 7, 1)),
    LORD_HOWE: (date(2026, 4, 5), date(2026, 10, 4), date(2026, 7, 1)),
}


@pytest.mark.parametrize("tz", list(DST_DAYS), ids=str)
def test_matches_a_minute_by_minute_walk(tz: ZoneInfo) -> None:
    """Around every DST change of the zone, fires() equals a walk over every real minute."""
    for day in DST_DAYS[tz]:
        start = datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() - 3600
        end = start + 30 * 3600
        minutes = real_minutes(tz, start, end)
        for text in EXPRESSIONS:
            assert list(CronSchedule(CronExpression.parse(text), tz).fires(start, end)) == \
                brute_force(text, minutes), (text, day)


@settings(max_examples=40, deadline=None)
@given(t=st.floats(min_value=1.7e9, max_value=2.0e9), text=st.sampled_from(EXPRESSIONS),
       tz=st.sampled_from([BERLIN, NEW_YORK, LORD_HOWE, UTC]))
def test_next_and_previous_agree(t: float, text: str, tz: ZoneInfo) -> None:
    """next_after(t) is the first fire after t: previous_before of it is at or before t."""
    s = CronSchedule(CronExpression.parse(text), tz)
    following = s.next_after(t)
    assert following is not None and following > t
    assert s.previous_before(following) is None or s.previous_before(following) <= t
    assert s.next_after(s.latest_at_or_before(t) or 0) == following


class WindowTests:
    def test_one_off(self) -> None:
        """A one-off window is active in [start, end); its changes are its start and end."""
        w = OneOffWindow(100.0, 200.0)
        assert [w.active_at(t) for t in (99.0, 100.0, 199.0, 200.0)] == [False, True, True, False]
        assert [w.next_change_after(t) for t in (50.0, 100.0, 150.0, 250.0)] == [
            100.0, 200.0, 200.0, None]
        assert (w.next_start_after(50.0), w.next_start_after(100.0), w.occurrence_at(150.0)) \
            == (100.0, None, (100.0, 200.0))

    def test_recurring_active_next_start_next_change(self) -> None:
        """Sunday 02:00 for 2 h: active inside, and says when it next opens and closes."""
        w = RecurringWindow(schedule("0 2 * * sun"), 7200)
        sunday = at(BERLIN, 2026, 5, 10, 2)
        assert [w.active_at(sunday + d) for d in (-1, 0, 7199, 7200)] == [
            False, True, True, False]
        assert (local(w.next_change_after(sunday - 1)), local(w.next_change_after(sunday)),
                local(w.next_start_after(sunday)), w.occurrence_at(sunday + 60)) == (
            "2026-05-10T02:00:00+02:00", "2026-05-10T04:00:00+02:00",
            "2026-05-17T02:00:00+02:00", (sunday, sunday + 7200))

    def test_duration_is_elapsed_time_across_dst(self) -> None:
        """A 2-hour window from 01:00 on a spring-forward day ends at 04:00 local."""
        w = RecurringWindow(schedule("0 1 * * *"), 7200)
        start = at(BERLIN, 2026, 3, 29, 1)
        assert local(w.next_change_after(start)) == "2026-03-29T04:00:00+02:00"
        assert w.next_change_after(start) - start == 7200

    def test_window_in_the_gap_opens_when_the_clocks_jump(self) -> None:
        """02:30 for 1 h on the spring-forward day: open 03:00-04:00 CEST."""
        w = RecurringWindow(schedule("30 2 * * *"), 3600)
        before = at(BERLIN, 2026, 3, 29, 1, 59)
        opens = w.next_change_after(before)
        assert (local(opens), local(w.next_change_after(opens))) == (
            "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00")

    def test_window_in_the_repeated_hour_opens_once(self) -> None:
        """02:30 for 1 h on the fall-back day: open once, from the first 02:30, 1 real hour."""
        w = RecurringWindow(schedule("30 2 * * *"), 3600)
        first = at(BERLIN, 2026, 10, 25, 2, 30)
        assert (local(w.next_change_after(first - 1)), local(w.next_change_after(first))) == (
            "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00")
        assert not w.active_at(at(BERLIN, 2026, 10, 25, 2, 45, fold=1))

    def test_overlapping_occurrences_merge(self) -> None:
        """Hourly for 90 minutes never closes within the merge horizon; hourly for 30 does."""
        never = RecurringWindow(schedule("0 * * * *", UTC), 5400)
        t = at(UTC, 2026, 1, 1, 0, 10)
        assert never.active_at(t) and never.next_change_after(t) is None
        touching = RecurringWindow(schedule("0 0,1 * * *", UTC), 3600)
        assert local(touching.next_change_after(t), UTC) == "2026-01-01T02:00:00+00:00"

    def test_duration_must_be_positive(self) -> None:
        """A window of no length is refused."""
        with pytest.raises(ValueError, match="duration must be above 0 seconds, got 0"):
            RecurringWindow(schedule("0 0 * * *"), 0)


class ParsingHelpersTests:
    @pytest.mark.parametrize(("text", "seconds"), [
        (90, 90.0), ("90", 90.0), ("2h", 7200.0), ("1h30m", 5400.0), ("1d", 86400.0),
        ("45s", 45.0), ("1w", 604800.0), ("1.5h", 5400.0), (" 2 h ", 7200.0)])
    def test_durations(self, text: object, seconds: float) -> None:
        """A duration is seconds, or a number with units w d h m s."""
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("text", ["", "2x", "h", "-5", 0, True, None, "1h-"])
    def test_bad_durations(self, text: object) -> None:
        """Anything else is refused."""
        with pytest.raises(ValueError):
            parse_duration(text)

    def test_instants(self) -> None:
        """Numbers are Unix seconds; ISO with an offset is exact; without, a wall time in tz."""
        assert parse_instant(1_800_000_000, BERLIN) == 1_800_000_000.0
        assert parse_instant("2026-12-24T18:00:00+01:00", NEW_YORK) == \
            at(UTC, 2026, 12, 24, 17)
        assert parse_instant("2026-12-24T18:00", BERLIN) == at(UTC, 2026, 12, 24, 17)
        assert parse_instant(date(2026, 12, 24), BERLIN) == at(UTC, 2026, 12, 23, 23)
        assert parse_instant("2026-10-25T02:30", BERLIN) == at(UTC, 2026, 10, 25, 0, 30)
        with pytest.raises(ValueError, match="does not exist in Europe/Berlin"):
            parse_instant("2026-03-29T02:30", BERLIN)
        with pytest.raises(ValueError, match="not a time"):
            parse_instant("tomorrow", BERLIN)

    def test_zones(self) -> None:
        """Zones are IANA names; a path or an unknown name is refused."""
        assert zone("Europe/Berlin") is BERLIN
        for bad in ("Mars/Olympus", "../etc/passwd", "/etc/localtime", ""):
            with pytest.raises(ValueError):
                zone(bad)
        assert local_zone_name(":Europe/Berlin", None) == "Europe/Berlin"
        assert local_zone_name(None, "/usr/share/zoneinfo/America/New_York") == \
            "America/New_York"
        assert local_zone_name("CET-1CEST", None) == "UTC"
        assert local_zone_name(None, None) == "UTC"
