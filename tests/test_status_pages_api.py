"""Public status pages and badges through the server's web tree: no login, names and
states only, badges by unguessable tokens kept in the store."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from heartbeat.config.server import HostConfig
from tests.apistack import Stack, user

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
    """/status/<slug>.json: the same names and states, and the summary."""
    body = stack.call("GET", "/status/public.json").json
    assert [{k: h[k] for k in ("name", "state")} for h in body["hosts"]] == [
        {"name": "web2", "state": "DOWN"}, {"name": "mail1", "state": "UNKNOWN"},
        {"name": "web1", "state": "UP"}]
    assert {key for h in body["hosts"] for key in h} == {"name", "state", "since"}
    assert body["summary"] == {"total": 3, "up": 1, "down": 1, "unknown": 1,
                               "overall": "degraded"}
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
