"""Public status pages and badges through the server's web tree: no login, names and
states only, badges by unguessable tokens kept in the store."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heartbeat.config.server import HostConfig
from tests.apistack import START, Stack, user

PAGES = {"public": {"title": "Example <Corp> status", "hosts": ["web*", "mail1"],
                    "description": "Our public services"}}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True),
                                   "bob": user("bob-password")},
                  hosts={"mail1": HostConfig(), "web1": HostConfig(owner="bob")},
                  status_pages=PAGES)
    stack.send({"ID": "HTB", "name": "web1", "rtt": 3.0}, addr="192.0.2.55")
    stack.send({"ID": "PLG", "name": "web1", "plugins": {"os_info": {"kernel": "6.1-secret"}}})
    stack.heartbeat("web2")
    stack.send({"ID": "SHUT", "name": "web2"})
    stack.heartbeat("db1")
    yield stack
    stack.close()


def test_page_needs_no_login_and_shows_names_and_states_only(stack: Stack) -> None:
    """The page lists the matching hosts, worst first, escaped; nothing else about them."""
    page = stack.call("GET", "/status/public")
    assert (page.status, page.header("content-type")) == (200, "text/html; charset=utf-8")
    rows = re.findall(r'<tr data-host="([^"]+)" data-state="([A-Z]+)">', page.text)
    assert rows == [("web2", "DOWN"), ("mail1", "UNKNOWN"), ("web1", "UP")]
    assert "Example &lt;Corp&gt; status" in page.text and "<Corp>" not in page.text
    assert "Some systems are down" in page.text
    for secret in ("192.0.2.55", "6.1-secret", "db1", "rtt"):
        assert secret not in page.text
    assert "form-action 'none'" in page.header("content-security-policy")
    assert '<meta http-equiv="refresh" content="60">' in page.text  # inside <noscript>
    assert stack.call("GET", "/status/private").status == 404


def test_json_for_scripts(stack: Stack) -> None:
    """/status/<slug>.json: the same names and states (and whether in maintenance), and
    the summary."""
    body = stack.call("GET", "/status/public.json").json
    assert [{k: h[k] for k in ("name", "state")} for h in body["hosts"]] == [
        {"name": "web2", "state": "DOWN"}, {"name": "mail1", "state": "UNKNOWN"},
        {"name": "web1", "state": "UP"}]
    assert {key for h in body["hosts"] for key in h} == {"name", "state", "since",
                                                         "maintenance"}
    assert body["summary"] == {"total": 3, "up": 1, "down": 1, "unknown": 1,
                               "maintenance": 0, "overall": "degraded"}
    assert (body["title"], body["description"]) == ("Example <Corp> status",
                                                    "Our public services")


def test_page_badge_exists_from_the_start_and_follows_the_page(stack: Stack) -> None:
    """Each page has a badge from its first start; it shows the page's state now."""
    pages = stack.call("GET", "/api/0/status-pages", token=stack.token("bob")).json["pages"]
    (page,) = pages
    assert (page["slug"], page["url"], page["summary"]["overall"]) == (
        "public", "/status/public", "degraded")
    badge = stack.call("GET", page["badge"])
    assert (badge.status, badge.header("content-type")) == (200, "image/svg+xml; charset=utf-8")
    assert ">1/3 down<" in badge.text and "Example &lt;Corp&gt; status" in badge.text
    stack.heartbeat("web2")
    stack.heartbeat("mail1")
    assert ">operational<" in stack.call("GET", page["badge"]).text
    renewed = stack.call("POST", "/api/0/status-pages/public/badge",
                         token=stack.token("alice")).json
    assert stack.call("GET", page["badge"]).status == 404
    assert stack.call("GET", renewed["url"]).status == 200


def test_host_badges_made_and_revoked_by_owners_only(stack: Stack) -> None:
    """Bob owns web1: he makes its badge, which shows its state, and revokes it; he cannot
    make one for a host he does not own."""
    bob = stack.token("bob")
    assert stack.call("GET", "/api/0/hosts/web1/badge", token=bob).status == 404
    made = stack.call("POST", "/api/0/hosts/web1/badge", token=bob)
    assert made.status == 201 and re.fullmatch(r"/badge/[A-Za-z0-9_-]{24}\.svg",
                                                made.json["url"])
    svg = stack.call("GET", made.json["url"]).text
    assert ">web1<" in svg and ">UP<" in svg
    stack.send({"ID": "SHUT", "name": "web1"})
    assert ">DOWN<" in stack.call("GET", made.json["url"]).text
    assert stack.call("POST", "/api/0/hosts/db1/badge", token=bob).status == 404
    assert stack.call("DELETE", "/api/0/hosts/web1/badge", token=bob).status == 200
    gone = stack.call("GET", made.json["url"])
    assert (gone.status, ">unknown<" in gone.text) == (404, True)
    guessed = stack.call("GET", "/badge/" + "A" * 24 + ".svg")
    assert guessed.status == 404


def test_badges_survive_a_restart(stack: Stack) -> None:
    """Tokens are kept in the store: the same URLs work after a restart."""
    made = stack.call("POST", "/api/0/hosts/web1/badge", token=stack.token("bob")).json
    page = stack.call("GET", "/api/0/status-pages", token=stack.token("bob")).json["pages"][0]
    again = stack.restarted()
    try:
        assert again.call("GET", made["url"]).status == 200
        assert again.call("GET", page["badge"]).status == 200
    finally:
        again.close()


class _Viewer:
    """A status feed viewer that reads everything (what the board sends it, decoded)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def backlog(self) -> int:
        return 0

    def sendMessage(self, payload: bytes) -> None:
        self.messages.append(json.loads(payload))


def test_a_host_in_maintenance_is_shown_so_and_nothing_of_its_window(stack: Stack) -> None:
    """An admin opens a window over web2 (DOWN): the page, its JSON, its feed and both
    badges say web2 is in maintenance, and the page is no longer down; the window's
    comment and author appear nowhere; ending the window ends all of it."""
    alice = stack.token("alice")
    board = stack.api.status_board
    assert board is not None
    viewer = _Viewer()
    board.join("public", viewer)  # type: ignore[arg-type]
    host_badge = stack.call("POST", "/api/0/hosts/web2/badge", token=alice).json["url"]
    page_badge = stack.call("GET", "/api/0/status-pages", token=alice).json["pages"][0]["badge"]
    made = stack.call("POST", "/api/0/maintenance", {
        "hosts": ["web2"], "start": START - 60, "duration": "1h",
        "comment": "secret-kernel-upgrade"}, token=alice)
    assert made.status == 201, made
    assert stack.call("GET", "/api/0/hosts/web2", token=alice).json["in_maintenance"] is True
    stack.clock.advance(0)
    snapshot = viewer.messages[-1]
    assert snapshot["type"] == "snapshot"
    assert [(h["name"], h["state"], h["maintenance"]) for h in snapshot["hosts"]] == [
        ("mail1", "UNKNOWN", False), ("web2", "DOWN", True), ("web1", "UP", False)]
    assert snapshot["summary"] == {"total": 3, "up": 1, "down": 0, "unknown": 1,
                                   "maintenance": 1, "overall": "degraded"}
    body = stack.call("GET", "/status/public.json").json
    assert {k: body[k] for k in ("hosts", "summary")} == {
        k: snapshot[k] for k in ("hosts", "summary")}
    page = stack.call("GET", "/status/public").text
    rows = re.findall(
        r'<tr data-host="([^"]+)" data-state="([A-Z]+)"( data-maintenance="true")?>', page)
    assert rows == [("mail1", "UNKNOWN", ""), ("web2", "DOWN", ' data-maintenance="true"'),
                    ("web1", "UP", "")]
    assert page.count('class="tag marker marker-maintenance">maintenance<') == 1
    assert "1 up, 0 down, 1 unknown, 1 in maintenance of 3" in page
    assert ">DOWN \N{MIDDLE DOT} maintenance<" in stack.call("GET", host_badge).text
    stack.heartbeat("mail1")
    assert ">maintenance<" in stack.call("GET", page_badge).text
    assert "Maintenance in progress" in stack.call("GET", "/status/public").text
    said = [page, json.dumps(body), json.dumps(viewer.messages),
            stack.call("GET", host_badge).text, stack.call("GET", page_badge).text]
    for secret in ("secret-kernel-upgrade", "alice", '"author"', '"comment"'):
        assert not any(secret in text for text in said), secret
    assert stack.call("DELETE", f"/api/0/maintenance/{made.json['id']}",
                      token=alice).status == 200
    stack.clock.advance(0)
    assert [(h["name"], h["maintenance"]) for h in viewer.messages[-1]["hosts"]] == [
        ("web2", False), ("mail1", False), ("web1", False)]
    assert ">DOWN<" in stack.call("GET", host_badge).text
    assert ">1/3 down<" in stack.call("GET", page_badge).text
    assert "data-maintenance" not in stack.call("GET", "/status/public").text


def test_a_page_is_made_once_a_second_and_again_after_an_event(stack: Stack) -> None:
    """Anyone may ask a public page as often as they like: its rows and counts are made
    at most once a second, and again at once after a host event of theirs, through the
    real bus."""
    board = stack.server.status_board
    assert board is not None
    made: list[float] = []
    states = board.states

    def counted(slug: str) -> Any:
        made.append(stack.clock.seconds())
        return states(slug)

    board.states = counted  # type: ignore[method-assign]
    for _ in range(20):
        for path in ("/status/public", "/status/public.json"):
            assert stack.call("GET", path).status == 200
    assert len(made) == 1
    stack.heartbeat("web3")  # a new host the page shows: host.new on the bus
    body = stack.call("GET", "/status/public.json").json
    assert "web3" in [h["name"] for h in body["hosts"]] and len(made) == 2
    stack.clock.advance(0.5)
    stack.call("GET", "/status/public.json")
    assert len(made) == 2
    stack.clock.advance(0.5)
    stack.call("GET", "/status/public.json")
    assert made == [START, START, START + 1.0]
