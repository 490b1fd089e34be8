"""Status pages and badges, the pure parts: matching, order, summary, badge tokens and SVG."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heartbeat.server import status_pages
from heartbeat.server.badges import render_badge, text_width
from heartbeat.server.status_pages import (
    MAX_ROWS,
    BadgeBook,
    PageSummary,
    StatusPage,
    page_rows,
    summarise,
)


def test_names_and_globs_match_exactly_what_they_say() -> None:
    """Exact names, * and ? globs; case counts; nothing else slips in."""
    page = StatusPage("public", "Status", ["db1", "web*", "mail?.example.com"])
    hosts = ["db1", "db10", "web", "web-2", "Web1", "mail1.example.com", "mail12.example.com"]
    assert [h for h in hosts if page.shows(h)] == ["db1", "web", "web-2", "mail1.example.com"]


def test_rows_worst_first_bounded_and_summary_of_all() -> None:
    """DOWN and UNREACHABLE first, then UNKNOWN, then UP, by name; at most MAX_ROWS rows."""
    states = {"h3": ("UP", 1.0, False), "h1": ("DOWN", 2.0, False),
              "h2": ("UNKNOWN", None, False), "h0": ("UNREACHABLE", 3.0, False)}
    rows, summary = page_rows(states)
    assert rows == [("h1", "DOWN", 2.0, False), ("h0", "UNREACHABLE", 3.0, False),
                    ("h2", "UNKNOWN", None, False), ("h3", "UP", 1.0, False)]
    assert summary == PageSummary(4, 1, 2, 1, 0)
    many = {f"h{i:05d}": ("UP", 0.0, False) for i in range(MAX_ROWS + 5)}
    rows, summary = page_rows(many)
    assert (len(rows), summary.total) == (MAX_ROWS, MAX_ROWS + 5)


_rows = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=4),
    st.tuples(st.sampled_from(["UP", "DOWN", "UNREACHABLE", "UNKNOWN", "NEW"]),
              st.one_of(st.none(), st.floats(0, 10)), st.booleans()), max_size=40)


@given(_rows, st.integers(1, 12))
def test_the_rows_are_the_head_of_the_whole_order(
        states: dict[str, tuple[str, float | None, bool]], limit: int) -> None:
    """The rows (the problems' and the maintenance's first, then the first names UP, not a
    sort of every host) are the first MAX_ROWS of the documented order: problems worst
    first, then hosts in maintenance, then UP, each by name."""
    order = {"DOWN": 0, "UNREACHABLE": 1, "UP": 4}
    whole = sorted(((name, *row) for name, row in states.items()),
                   key=lambda r: (3 if r[3] else order.get(r[1], 2), r[0]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(status_pages, "MAX_ROWS", limit)
        rows, summary = page_rows(states)
    assert rows == whole[:limit]
    assert summary.total == len(states)


def test_overall_words() -> None:
    """no hosts, operational, degraded (with n/total down), outage."""
    cases = [[], ["UP", "UP"], ["UP", "DOWN"], ["UP", "UNKNOWN"], ["DOWN", "UNREACHABLE"]]
    summaries = [summarise((state, False) for state in c) for c in cases]
    assert [(s.overall, s.badge_text) for s in summaries] == [
        ("no hosts", "no hosts"), ("operational", "operational"), ("degraded", "1/2 down"),
        ("degraded", "degraded"), ("outage", "outage")]


def test_a_host_in_maintenance_is_no_outage() -> None:
    """A host a window covers is counted in maintenance only, whatever its state, and
    listed after the problems, before UP; with no other problem the page is in
    maintenance, not degraded; the rest still counts as ever."""
    states = {"h0": ("UP", 1.0, False), "h1": ("DOWN", 2.0, True), "h2": ("UP", 3.0, True),
              "h3": ("UNKNOWN", None, False), "h4": ("UNKNOWN", None, True)}
    rows, summary = page_rows(states)
    assert [(name, covered) for name, _, _, covered in rows] == [
        ("h3", False), ("h1", True), ("h2", True), ("h4", True), ("h0", False)]
    assert summary == PageSummary(total=5, up=1, down=0, unknown=1, maintenance=3)
    assert (summary.overall, summary.to_json()["maintenance"]) == ("degraded", 3)
    calm = summarise([("UP", False), ("DOWN", True), ("UNREACHABLE", True)])
    assert (calm.overall, calm.badge_text, calm.down) == ("maintenance", "maintenance", 0)
    all_in = summarise([("DOWN", True), ("DOWN", True)])
    assert (all_in.overall, all_in.up, all_in.down) == ("maintenance", 0, 0)
    assert summarise([("DOWN", False), ("DOWN", True)]).overall == "outage"
    assert summarise([("UP", False), ("UP", True)]).overall == "maintenance"


def test_badge_tokens_are_random_one_per_target_and_revocable() -> None:
    """Making a badge again replaces its token; revoking forgets it."""
    book = BadgeBook()
    first = book.make("host", "web1", 10.0)
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}", first.token)
    assert book.get(first.token) == first and book.of("host", "web1") == first
    second = book.make("host", "web1", 11.0)
    assert (book.get(first.token), book.get(second.token)) == (None, second)
    assert book.revoke("host", "web1") == second and book.get(second.token) is None
    assert book.make("page", "web1", 12.0).token != second.token


def test_badge_svg_is_valid_escaped_and_sized_to_its_text() -> None:
    """Well-formed SVG; markup in a name stays text; wider text, wider badge."""
    svg = render_badge('<script>"x"</script>', "DOWN")
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert texts == ['<script>"x"</script>', "DOWN"]
    assert "<script>" not in svg
    assert 'fill="#c62828"' in svg
    assert int(ET.fromstring(render_badge("a-much-longer-host-name", "UP")).get("width")) > \
        int(ET.fromstring(render_badge("web1", "UP")).get("width"))
    assert text_width("iii") < text_width("WWW")
