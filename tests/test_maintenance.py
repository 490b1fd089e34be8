"""Maintenance windows and the calendar, with plain times."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from heartbeat.config.loader import ConfigError
from heartbeat.server.maintenance import (
    HostSelector,
    MaintenanceCalendar,
    MaintenanceWindow,
    parse_window,
)
from heartbeat.server.schedule import OneOffWindow

BERLIN = ZoneInfo("Europe/Berlin")


def at(*parts: int) -> float:
    return datetime(*parts, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


def window(raw: dict[str, Any], window_id: str = "w", **kwargs: Any) -> MaintenanceWindow:
    return parse_window(raw, key="maintenance[0]", source="hb.yaml",
                        default_zone="Europe/Berlin", window_id=window_id, **kwargs)


def once(window_id: str, start: float, end: float, *hosts: str,
         tags: tuple[str, ...] = ()) -> MaintenanceWindow:
    return MaintenanceWindow(window_id, HostSelector(hosts, tags), OneOffWindow(start, end),
                             "UTC", source="api")


class SelectorTests:
    def test_names_globs_and_tags(self) -> None:
        """A host matches by exact name, by glob (case-sensitive, * spans dots), or by tag."""
        selector = HostSelector(("db1", "web*", "rack?.lab"), ("linux",))
        assert [selector.matches(h) for h in ("db1", "db2", "web1", "web.example.com", "WEB1",
                                              "rack3.lab", "rack10.lab")] == [
            True, False, True, True, False, True, False]
        assert selector.matches("mail1", frozenset({"linux", "mx"}))
        assert not selector.matches("mail1", frozenset({"bsd"}))


class ParseTests:
    def test_one_off_with_iso_times_in_its_zone(self) -> None:
        """start and end as ISO text without an offset are wall times in the window's zone."""
        w = window({"hosts": ["web*"], "start": "2026-12-24T18:00", "end": "2026-12-27T08:00",
                    "comment": "holidays"}, author="alice", created=5.0, origin="api")
        assert w.to_json(at(2026, 12, 25)) == {
            "id": "w", "hosts": ["web*"], "tags": [], "kind": "once",
            "start": at(2026, 12, 24, 18), "end": at(2026, 12, 27, 8), "cron": None,
            "duration": 62 * 3600.0, "timezone": "Europe/Berlin", "comment": "holidays",
            "author": "alice", "created": 5.0, "source": "api", "active": True,
            "current": {"start": at(2026, 12, 24, 18), "end": at(2026, 12, 27, 8)},
            "next_start": None, "next_change": at(2026, 12, 27, 8)}

    def test_recurring(self) -> None:
        """cron + duration in a named zone; the API shape says when it next opens."""
        w = window({"tags": ["linux"], "cron": "0 2 * * sun", "duration": "2h",
                    "timezone": "America/New_York"})
        ny = ZoneInfo("America/New_York")
        sunday = datetime(2026, 5, 10, 2, tzinfo=ny).timestamp()
        body = w.to_json(sunday - 60)
        assert (body["kind"], body["cron"], body["duration"], body["timezone"], body["active"],
                body["next_start"], body["next_change"], body["start"]) == (
            "recurring", "0 2 * * sun", 7200.0, "America/New_York", False, sunday, sunday, None)
        assert w.active_at(sunday + 3600) and not w.active_at(sunday + 7200)

    def test_start_and_duration(self) -> None:
        """A one-off window may give a duration instead of an end; numbers are Unix seconds."""
        w = window({"hosts": ["db1"], "start": 1000, "duration": 90})
        assert w.timing == OneOffWindow(1000.0, 1090.0)

    @pytest.mark.parametrize(("raw", "line"), [
        ({"hosts": [], "start": 1, "end": 2},
         "hb.yaml: maintenance[0].hosts: name at least one host, glob or tag (hosts: [web1, "
         "'db*'], tags: [linux])"),
        ({"hosts": ["web 1"], "start": 1, "end": 2},
         "hb.yaml: maintenance[0].hosts[0]: not a host name or glob: 'web 1'"),
        ({"hosts": ["a"], "tags": ["no space"], "start": 1, "end": 2},
         "hb.yaml: maintenance[0].tags[0]: not a tag (1-64 of A-Z a-z 0-9 . _ : -): "
         "'no space'"),
        ({"hosts": ["a"], "start": 2, "end": 1},
         "hb.yaml: maintenance[0].end: the window must end after it starts"),
        ({"hosts": ["a"], "start": 1},
         "hb.yaml: maintenance[0].end: a one-off window needs an end (or a duration)"),
        ({"hosts": ["a"]},
         "hb.yaml: maintenance[0].start: give start and end (or start and duration), or cron "
         "and duration"),
        ({"hosts": ["a"], "cron": "0 2 * * *"},
         "hb.yaml: maintenance[0].duration: a recurring window needs a duration (e.g. 2h)"),
        ({"hosts": ["a"], "cron": "0 25 * * *", "duration": 60},
         "hb.yaml: maintenance[0].cron: hour: 25 is out of range 0-23"),
        ({"hosts": ["a"], "cron": "0 2 * * *", "duration": 60, "start": 5},
         "hb.yaml: maintenance[0].start: a recurring window (cron) takes a duration, not "
         "start or end"),
        ({"hosts": ["a"], "cron": "0 2 * * *", "duration": "2x"},
         "hb.yaml: maintenance[0].duration: not a duration: '2x' (seconds, or e.g. 2h, 1h30m, "
         "1d)"),
        ({"hosts": ["a"], "cron": "0 2 * * *", "duration": 60, "timezone": "Mars/Base"},
         "hb.yaml: maintenance[0].timezone: unknown time zone 'Mars/Base' (an IANA name such "
         "as Europe/Berlin or UTC)"),
        ({"hosts": ["a"], "start": "2026-03-29T02:30", "end": "2026-03-29T05:00"},
         "hb.yaml: maintenance[0].start: 2026-03-29T02:30 does not exist in Europe/Berlin: "
         "the clocks skip it"),
        ({"hosts": ["a"], "start": 1, "end": 2, "coment": "x"},
         "hb.yaml: maintenance[0].coment: unknown field; a window has name, hosts, tags, "
         "start, end, duration, cron, timezone, comment"),
    ])
    def test_errors_name_the_key(self, raw: dict[str, Any], line: str) -> None:
        """Every mistake is one line naming the file, the window and the field."""
        with pytest.raises(ConfigError) as caught:
            window(raw)
        assert str(caught.value) == line

    def test_api_body_errors_name_the_field_alone(self) -> None:
        """With no key (an API body) the error names the field at the top."""
        with pytest.raises(ConfigError) as caught:
            parse_window({"hosts": ["a"], "start": 1}, key="", source="body",
                         default_zone="UTC", window_id="1")
        assert str(caught.value) == "body: end: a one-off window needs an end (or a duration)"


class CalendarTests:
    def test_open_windows_for_a_host(self) -> None:
        """for_host lists the open windows covering a host; tags come from tags_of."""
        tags = {"db1": frozenset({"linux"})}
        calendar = MaintenanceCalendar(lambda host: tags.get(host, frozenset()))
        calendar.put(once("a", 100, 200, "web*"))
        calendar.put(once("b", 150, 300, tags=("linux",)))
        assert [w.id for w in calendar.for_host("web1", 120)] == ["a"]
        assert [w.id for w in calendar.for_host("db1", 120)] == []
        assert [w.id for w in calendar.for_host("db1", 160)] == ["b"]
        assert [w.id for w in calendar.for_host("web1", 160)] == ["a"]
        assert [w.id for w in calendar.for_host("web1", 250)] == []
        assert (calendar.in_maintenance("db1", 299), calendar.in_maintenance("db1", 300)) == (
            True, False)

    def test_next_change_and_edits(self) -> None:
        """next_change is the nearest opening or closing; edits take effect at once."""
        calendar = MaintenanceCalendar()
        assert calendar.next_change(0) is None
        calendar.put(once("a", 100, 200, "web1"))
        assert [calendar.next_change(t) for t in (0, 100, 150, 200)] == [100, 200, 200, None]
        assert calendar.in_maintenance("web1", 150)
        calendar.put(once("a", 100, 120, "web1"))  # replaced: ends sooner
        assert not calendar.in_maintenance("web1", 150)
        calendar.put(once("c", 140, 160, "web1"))
        assert calendar.in_maintenance("web1", 150)
        assert calendar.remove("c") is not None and calendar.remove("c") is None
        assert not calendar.in_maintenance("web1", 150)

    def test_time_going_backwards_is_recomputed(self) -> None:
        """Asking about an earlier time than the last works out the windows afresh."""
        calendar = MaintenanceCalendar()
        calendar.put(once("a", 100, 200, "web1"))
        assert calendar.in_maintenance("web1", 150)
        assert not calendar.in_maintenance("web1", 50)
        assert calendar.in_maintenance("web1", 150)

    def test_ids_never_repeat(self) -> None:
        """API ids count up past every id seen, and past the highest one ever stored."""
        calendar = MaintenanceCalendar()
        calendar.restore([once("7", 0, 1, "a"), once("weekly", 0, 1, "a")], last_id=9)
        assert calendar.next_id() == "10"
        calendar.remove("7")
        assert calendar.next_id() == "11"
        assert [w.id for w in calendar] == ["weekly"]

    def test_order_config_first_then_by_number(self) -> None:
        """Listing: config windows first, then API windows by number."""
        calendar = MaintenanceCalendar()
        for w in (once("10", 0, 1, "a"), once("2", 0, 1, "a"),
                  MaintenanceWindow("patch", HostSelector(("a",)), OneOffWindow(0, 1), "UTC",
                                    source="config")):
            calendar.put(w)
        assert [w.id for w in calendar] == ["patch", "2", "10"]

    def test_many_hosts(self) -> None:
        """10,000 hosts against a glob and a list of 1,000 names (bench/operations.py: 100k)."""
        calendar = MaintenanceCalendar()
        calendar.put(once("a", 0, 1000, "web*"))
        calendar.put(once("b", 0, 1000, *(f"db{i}" for i in range(1000))))
        hosts = [f"web{i}" for i in range(5_000)] + [f"db{i}" for i in range(5_000)]
        assert sum(calendar.in_maintenance(h, 10) for h in hosts) == 6_000
        assert sum(calendar.in_maintenance(h, 2000) for h in hosts) == 0
