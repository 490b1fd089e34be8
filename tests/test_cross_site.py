"""Browsers of other sites, rebound names and proxies: what the HTTP side refuses, every mode.

In the API stack (in memory) for each rule; against the real twistd process in
headless Chromium for the attack as a page of another site runs it.
"""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heartbeat.server.web.errors import ApiError
from tests.apistack import Stack, user
from tests.support import ServerProcess, wait_until

EVIL = "http://evil.test"


@pytest.fixture
def open_stack(tmp_path: Path) -> Iterator[Stack]:
    """No users: the unauthenticated mode, the default."""
    stack = Stack(tmp_path)
    stack.heartbeat("web1")
    yield stack
    stack.close()


class UnauthenticatedModeTests:
    def test_a_change_from_another_site_is_refused(self, open_stack: Stack) -> None:
        """Without users, a change a browser sends from a page of another site (its Origin,
        or Sec-Fetch-Site) is refused and changes nothing; curl (neither header) may."""
        for headers in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"},
                        {"Origin": "null"}, {"Origin": "https://heartbeat.test"}):
            refused = open_stack.call("POST", "/api/0/hosts/web1/upgrade", headers=headers)
            assert (refused.status, refused.json["error"]) == (403, "csrf"), headers
        assert open_stack.registry.hosts["web1"].pending == {}
        same = open_stack.call("POST", "/api/0/hosts/web1/upgrade",
                               headers={"Origin": "http://heartbeat.test",
                                        "Sec-Fetch-Site": "same-origin"})
        assert same.status == 202
        assert open_stack.call("POST", "/api/0/hosts/web1/commands", {"cmd": "uptime"}).status \
            == 202
        assert len(open_stack.registry.hosts["web1"].pending) == 2

    def test_a_name_not_in_http_hosts_is_not_answered(self, open_stack: Stack) -> None:
        """A request by a name the server is not configured for (a rebound name) gets 421,
        with no data, whatever the route; an IP address is always answered."""
        for method, path in (("GET", "/api/0/hosts"), ("GET", "/live"), ("GET", "/static/x"),
                             ("POST", "/api/0/users")):
            refused = open_stack.call(method, path, host="evil.test:50004")
            assert (refused.status, refused.json["error"]) == (421, "unknown_host"), path
            assert "http_hosts" in refused.json["detail"]
        assert open_stack.call("GET", "/api/0/hosts", host="192.0.2.7:50004").status == 200

    def test_the_first_user_only_from_the_server_itself(self, open_stack: Stack) -> None:
        """The first user (an admin who turns logins on) is created through the API only by
        a local request: not from another address, not through a proxy, not by a name."""
        body = {"name": "root", "password": "root-password", "admin": True}
        for host, headers in (("heartbeat.test", {}),
                              ("localhost", {"X-Forwarded-For": "203.0.113.9"})):
            refused = open_stack.call("POST", "/api/0/users", body, host=host, headers=headers)
            assert (refused.status, refused.json["error"]) == (403, "first_user_not_local")
        assert not open_stack.auth.enabled
        assert open_stack.call("POST", "/api/0/users", body, host="localhost").status == 201
        assert open_stack.auth.enabled

    def test_the_feed_refuses_pages_of_another_host(self, open_stack: Stack) -> None:
        """The WebSocket feed, without users too, is not opened by a page of another host
        nor by a name outside http_hosts; a page of this host (any port) or a client
        without Origin opens it."""
        feed = open_stack.web_auth.feed_viewer
        with pytest.raises(ApiError) as cross:
            feed({"origin": EVIL}, {}, "127.0.0.1:50005")
        with pytest.raises(ApiError) as rebound:
            feed({"origin": "http://evil.test:50005"}, {}, "evil.test:50005")
        assert ((cross.value.status, cross.value.code), (rebound.value.status,
                                                          rebound.value.code)) == (
            (403, "cross_site"), (421, "unknown_host"))
        assert feed({"origin": "http://127.0.0.1:50004"}, {}, "127.0.0.1:50005").admin
        assert feed({}, {}, "localhost:50005").admin


class ThrottleTests:
    def test_one_ipv6_slash_64_is_one_address(self, tmp_path: Path) -> None:
        """Failed logins from many addresses of one /64 count as one address: the /64 is
        slowed down, another /64 and the account's owner elsewhere are not."""
        stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True),
                                       "bob": user("bob-password")})
        for n in range(6):
            stack.auth.login(f"guess{n}", "wrong-password", f"2001:db8:1:2::{n + 1:x}") \
                .addErrback(lambda f: None)
        throttled = stack.auth.login("bob", "bob-password", "2001:db8:1:2::99")
        assert throttled.result.type.__name__ == "LoginThrottled"
        throttled.addErrback(lambda f: None)
        elsewhere = stack.auth.login("bob", "bob-password", "2001:db8:1:3::1")
        assert elsewhere.result[1].user == "bob"
        stack.close()

    def test_behind_a_trusted_proxy_each_client_is_throttled_alone(self, tmp_path: Path
                                                                   ) -> None:
        """With trusted_proxies, one client's failed logins slow down that client, never
        the others who come through the same proxy."""
        stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True),
                                       "bob": user("bob-password")},
                      config={"trusted_proxies": ["127.0.0.1"]})
        for n in range(8):
            stack.call("POST", "/api/0/auth/login",
                       {"username": f"guess{n}", "password": "wrong-password"},
                       headers={"X-Forwarded-For": "203.0.113.9"})
        blocked = stack.call("POST", "/api/0/auth/login",
                             {"username": "bob", "password": "bob-password"},
                             headers={"X-Forwarded-For": "203.0.113.9"})
        other = stack.call("POST", "/api/0/auth/login",
                           {"username": "bob", "password": "bob-password"},
                           headers={"X-Forwarded-For": "198.51.100.7"})
        assert (blocked.status, other.status) == (429, 200)
        stack.close()


# The attack as a browser runs it, against the real server.

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"

ATTACK = """<!doctype html><html><body>
<form id="f" method="post" action="http://127.0.0.1:{http}/api/0/hosts/web1/upgrade"
      target="sink"></form>
<iframe name="sink"></iframe>
<script>
  window.feed = [];
  window.feedState = "connecting";
  const ws = new WebSocket("ws://127.0.0.1:{ws}/");
  ws.onmessage = (e) => window.feed.push(e.data);
  ws.onopen = () => {{ window.feedState = "open"; }};
  ws.onclose = () => {{ window.feedState = "closed"; }};
  document.getElementById("f").submit();
  window.submitted = true;
</script></body></html>"""


@pytest.fixture
def page(playwright: Any) -> Iterator[Any]:
    """A page in a browser of its own: evil.test resolves to this machine (a rebound name),
    every other name but the loopback ones to nothing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing (.ci/apt-install installs Debian's chromium)")
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--disable-gpu", "--host-resolver-rules=MAP evil.test 127.0.0.1, "
              "MAP * ~NOTFOUND , EXCLUDE 127.0.0.1, EXCLUDE localhost"])
    try:
        yield browser.new_page()
    finally:
        browser.close()


@pytest.fixture
def attacker(tmp_path: Path) -> Iterator[Any]:
    """A web server of another site (``localhost``) serving one page."""
    pages: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield pages, httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.mark.integration
def test_a_page_of_another_site_can_neither_change_nor_read(
        server: ServerProcess, attacker: Any, page: Any) -> None:
    """Without users (the default), a page on another site submits a cross-site form that
    would queue an UPD and opens the WebSocket feed: Chromium sends them, the real server
    refuses both (nothing queued, no event read); a rebound name gets no data either."""
    pages, port = attacker
    server.send({"ID": "HTB", "name": "web1", "interval": 60})
    wait_until(lambda: server.host("web1"))
    pages["/attack"] = ATTACK.format(http=server.http_port, ws=server.ws_port)
    page.goto(f"http://localhost:{port}/attack")
    page.wait_for_function("window.submitted && window.feedState !== 'connecting'")
    server.send({"ID": "MSG", "name": "web1", "text": "secret news"})
    page.wait_for_timeout(300)  # a feed that was open would get the MSG by now
    assert page.evaluate("[window.feedState, window.feed]") == ["closed", []]
    assert server.host("web1")["pending_commands"] == 0
    answer = page.goto(f"http://evil.test:{server.http_port}/api/0/hosts")
    assert answer is not None and answer.status == 421
    assert "web1" not in page.content()
