"""Status pages and badges, the pure parts: matching, order, summary, badge tokens and SVG."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

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
    page = StatusPage("p", "P", ["h*"])
    states = {"h3": ("UP", 1.0), "h1": ("DOWN", 2.0), "h2": ("UNKNOWN", None),
              "h0": ("UNREACHABLE", 3.0), "x": ("DOWN", 4.0)}
    rows, summary = page_rows(page, states)
    assert rows == [("h1", "DOWN", 2.0), ("h0", "UNREACHABLE", 3.0), ("h2", "UNKNOWN", None),
                    ("h3", "UP", 1.0)]
    assert summary == PageSummary(4, 1, 2, 1)
    many = {f"h{i:05d}": ("UP", 0.0) for i in range(MAX_ROWS + 5)}
    rows, summary = page_rows(page, many)
    assert (len(rows), summary.total) == (MAX_ROWS, MAX_ROWS + 5)


def test_overall_words() -> None:
    """no hosts, operational, degraded (with n/total down), outage."""
    cases = [[], ["UP", "UP"], ["UP", "DOWN"], ["UP", "UNKNOWN"], ["DOWN", "UNREACHABLE"]]
    assert [(summarise(c).overall, summarise(c).badge_text) for c in cases] == [
        ("no hosts", "no hosts"), ("operational", "operational"), ("degraded", "1/2 down"),
        ("degraded", "degraded"), ("outage", "outage")]


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
