"""HTTP hardening: security headers on every answer, request deadlines, connection caps."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.resource import Resource

from heartbeat.server.web.app import (
    SECURITY_HEADERS,
    ConnectionBudget,
    ConnectionLimit,
    HeartbeatSite,
)
from heartbeat.server.web.pages import PAGE_CSP
from tests.apistack import Stack
from tests.support import ServerProcess, wait_until

EXPECTED_HEADERS = {
    "content-security-policy": PAGE_CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


def _parse(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP/1.1 responses in ``raw``, as (status, lower-cased headers, body)."""
    responses = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                body, rest = body + rest[:size], rest[size + 2:]
                if not size:
                    break
        else:
            length = int(headers.get("content-length", "0"))
            body, rest = rest[:length], rest[length:]
        responses.append((int(lines[0].split()[1]), headers, body))
        raw = rest
    return responses


class Connection:
    """One HTTP connection to a HeartbeatSite over a StringTransport, on a fake clock."""

    def __init__(self, site: HeartbeatSite) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.9", 4000))
        self.channel = site.buildProtocol(self.transport.getPeer())
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def responses(self) -> list[tuple[int, dict[str, str], bytes]]:
        return _parse(self.transport.value())

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path)
    yield stack
    stack.close()


@pytest.fixture
def clock() -> MemoryReactorClock:
    return MemoryReactorClock()


def _site(stack: Stack, clock: MemoryReactorClock, **options: Any) -> HeartbeatSite:
    return HeartbeatSite(stack.resource, reactor=clock, **{"idle_timeout": 60.0,
                                                            "max_body": 100,
                                                            "request_timeout": 5.0,
                                                            **options})


class SecurityHeadersTests:
    @pytest.mark.parametrize("request_bytes, status", [
        (b"GET /api/0/status HTTP/1.1\r\nHost: localhost\r\n\r\n", 200),
        (b"GET /no/such/page HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
        (b"GET /api/0/hosts/nobody HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
        (b"DELETE /api/0/status HTTP/1.1\r\nHost: localhost\r\n\r\n", 405),
        (b"POST /api/0/hosts/x/commands HTTP/1.1\r\nHost: localhost\r\nContent-Length: 500\r\n\r\n"
         + b"x" * 500, 413),
    ])
    def test_every_answer_carries_them(self, stack: Stack, clock: MemoryReactorClock,
                                       request_bytes: bytes, status: int) -> None:
        """Success, not found, wrong method, too large: each has the full set of headers."""
        connection = Connection(_site(stack, clock))
        connection.send(request_bytes)
        ((got, headers, _),) = connection.responses()
        assert got == status
        assert {k: v for k, v in headers.items() if k in EXPECTED_HEADERS} == EXPECTED_HEADERS

    def test_a_non_utf8_url_is_a_json_400(self, stack: Stack, clock: MemoryReactorClock) -> None:
        """A URL that is not UTF-8 once decoded gets the API's JSON error, not Klein's text."""
        connection = Connection(_site(stack, clock))
        connection.send(b"GET /api/0/hosts/%ff HTTP/1.1\r\nHost: localhost\r\n\r\n")
        ((got, headers, body),) = connection.responses()
        assert (got, headers.get("content-type"), json.loads(body)) == (
            400, "application/json",
            {"error": "bad_request", "detail": "the URL is not UTF-8 once percent-decoded"})

    def test_policy_allows_no_inline_script(self) -> None:
        """The CSP has script-src 'self' only, and frame-ancestors 'none'."""
        directives = dict(d.strip().split(" ", 1) for d in PAGE_CSP.split(";"))
        assert directives["script-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in PAGE_CSP
        assert dict(SECURITY_HEADERS)[b"X-Frame-Options"] == b"DENY"


class RequestDeadlineTests:
    def test_slow_headers_are_cut_off(self, stack: Stack, clock: MemoryReactorClock) -> None:
        """A client dripping header bytes (slowloris) is closed at the deadline, not the idle."""
        connection = Connection(_site(stack, clock, request_timeout=5.0))
        connection.send(b"GET /api/0/status HTTP/1.1\r\n")
        for _ in range(4):
            clock.advance(1.0)
            connection.send(b"X-a: b\r\n")
        assert not connection.closing
        clock.advance(1.0)
        assert connection.closing
        assert connection.responses() == []

    def test_slow_body_is_cut_off(self, stack: Stack, clock: MemoryReactorClock) -> None:
        """The deadline covers the body too."""
        connection = Connection(_site(stack, clock, request_timeout=5.0))
        connection.send(b"POST /api/0/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50\r\n\r\n")
        for _ in range(5):
            connection.send(b"x")
            clock.advance(1.0)
        assert connection.closing

    def test_silent_new_connection_cut_off(self, stack: Stack, clock: MemoryReactorClock) -> None:
        """A connection that never sends a byte is closed at the deadline too."""
        connection = Connection(_site(stack, clock, request_timeout=5.0))
        clock.advance(4.9)
        assert not connection.closing
        clock.advance(0.2)
        assert connection.closing

    def test_kept_alive_connection_gets_a_fresh_deadline(self, stack: Stack,
                                                         clock: MemoryReactorClock) -> None:
        """After a whole request the connection may idle; the next request has its own time."""
        connection = Connection(_site(stack, clock, request_timeout=5.0, idle_timeout=60.0))
        connection.send(b"GET /api/0/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        clock.advance(30.0)
        assert not connection.closing
        connection.send(b"GET /api/0/status HTTP/1.1\r\nHost: localhost\r\n")
        clock.advance(4.0)
        connection.send(b"\r\n")
        assert [status for status, _, _ in connection.responses()] == [200, 200]
        clock.advance(30.0)
        assert not connection.closing
        clock.advance(31.0)
        assert connection.closing  # the idle timeout still holds

    def test_deadline_cancelled_when_connection_closes(self, stack: Stack,
                                                       clock: MemoryReactorClock) -> None:
        """A closed connection leaves no timer behind."""
        connection = Connection(_site(stack, clock, request_timeout=5.0))
        connection.send(b"GET /api/0/status HTTP/1.1\r\n")
        connection.channel.connectionLost(None)
        assert [c for c in clock.getDelayedCalls() if c.active()] == []


class ConnectionLimitTests:
    def _limit(self, total: int, per_address: int) -> tuple[ConnectionLimit, ConnectionBudget]:
        budget = ConnectionBudget(total, per_address)
        root = Resource()
        return ConnectionLimit(HeartbeatSite(root, reactor=MemoryReactorClock()), budget), budget

    def test_caps_in_all_and_per_address(self) -> None:
        """Connections past either cap are refused at once; closing one frees its place."""
        limit, budget = self._limit(total=3, per_address=2)
        a1, a2, a3 = (limit.buildProtocol(IPv4Address("TCP", "192.0.2.1", p)) for p in (1, 2, 3))
        b1 = limit.buildProtocol(IPv4Address("TCP", "192.0.2.2", 1))
        c1 = limit.buildProtocol(IPv4Address("TCP", "192.0.2.3", 1))
        assert [p is not None for p in (a1, a2, a3, b1, c1)] == [True, True, False, True, False]
        for protocol in (a1, a2, b1):
            protocol.makeConnection(StringTransport())
        assert budget.to_json() == {"open": 3, "refused": 2}
        a1.connectionLost(None)
        assert limit.buildProtocol(IPv4Address("TCP", "192.0.2.3", 2)) is not None
        assert budget.to_json() == {"open": 3, "refused": 2}

    def test_budget_shared_between_ports(self) -> None:
        """Two ports drawing on one budget share its total."""
        budget = ConnectionBudget(total=1, per_address=10)
        first = ConnectionLimit(HeartbeatSite(Resource(), reactor=MemoryReactorClock()), budget)
        second = ConnectionLimit(HeartbeatSite(Resource(), reactor=MemoryReactorClock()), budget)
        assert first.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1)) is not None
        assert second.buildProtocol(IPv4Address("TCP", "192.0.2.2", 1)) is None


    def test_feed_backlog_seen_through_the_wrapper(self) -> None:
        """A feed client behind the limit (and TLS) still reports its unsent bytes."""
        from twisted.protocols.policies import ProtocolWrapper

        from heartbeat.server.web.websocket import FeedProtocol

        class Socket(StringTransport):
            dataBuffer = b"x" * 700
            _tempDataLen = 300

        feed = FeedProtocol()
        wrapper = ProtocolWrapper(ConnectionLimit(Resource(), ConnectionBudget(1, 1)), feed)
        wrapper.transport = Socket()
        feed.transport = wrapper
        assert feed.backlog() == 1000


def _raw_get(port: int, path: str) -> tuple[int, dict[str, str]]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    ((status, headers, _),) = _parse(data)
    return status, headers


def _closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_real_server_hardening(server_factory: Any) -> None:
    """The real twistd: headers on API and 404 answers; slowloris cut; caps refuse."""
    server: ServerProcess = server_factory(http_request_timeout=0.5,
                                           http_max_connections_per_ip=4)
    for path, status in (("/api/0/status", 200), ("/nope", 404), ("/ws", 426)):
        got, headers = _raw_get(server.http_port, path)
        assert got == status, path
        if path != "/ws":  # autobahn answers a failed upgrade itself: status line, no body
            assert {k: v for k, v in headers.items() if k in EXPECTED_HEADERS} == \
                EXPECTED_HEADERS, path
    slow = socket.create_connection(("127.0.0.1", server.http_port), timeout=3)
    started = time.monotonic()
    slow.sendall(b"GET /api/0/status HTTP/1.1\r\n")
    for _ in range(3):
        slow.sendall(b"X-a: b\r\n")
        time.sleep(0.1)
    assert wait_until(lambda: _closed_by_server(slow), timeout=3)
    assert time.monotonic() - started < 2.0
    slow.close()
    held = [socket.create_connection(("127.0.0.1", server.http_port), timeout=3)
            for _ in range(4)]
    refused = socket.create_connection(("127.0.0.1", server.http_port), timeout=3)
    refused.settimeout(2)
    assert _closed_by_server(refused)
    for s in [*held, refused]:
        s.close()

    def status_once_freed() -> dict[str, Any] | None:
        try:  # refused until the server has seen the closes
            body: dict[str, Any] = server.get("/api/0/status")
        except OSError:
            return None
        return body if body["http"]["open"] == 1 else None

    status = wait_until(status_once_freed)
    assert status["http"]["refused"] >= 1 and status["http"]["slow_requests"] >= 1


def _status_codes_in_source() -> set[int]:
    """Every HTTP status the server's code answers with, found in its source."""
    import re

    codes = {200}  # json_response's default
    pattern = re.compile(r"(?:ApiError\(|setResponseCode\(|_refuse\()(\d{3})\b"
                         r"|json_response\(.*, (\d{3})\)")
    for path in (Path(__file__).parent.parent / "src/heartbeat/server").rglob("*.py"):
        codes.update(int(a or b) for a, b in pattern.findall(path.read_text()))
    return codes


def test_every_status_we_answer_with_has_its_reason_phrase() -> None:
    """The status line of each code the server uses reads its standard phrase, never 'Unknown'."""
    from http import HTTPStatus

    from heartbeat.server.web.app import reason_phrase

    codes = _status_codes_in_source()
    assert {200, 201, 202, 303, 401, 403, 404, 405, 409, 413, 429} <= codes
    assert {code: reason_phrase(code) for code in codes} == {
        code: HTTPStatus(code).phrase.encode() for code in codes}


def test_429_status_line_says_too_many_requests(tmp_path: Path, clock: MemoryReactorClock
                                               ) -> None:
    """A throttled login answers 'HTTP/1.1 429 Too Many Requests' on the wire."""
    from heartbeat.server.sessions import LoginThrottle
    from tests.apistack import user

    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True)},
                  throttle=LoginThrottle(free_attempts=1))
    try:
        site = _site(stack, clock, max_body=4096)
        body = b'{"username":"alice","password":"wrong-password"}'
        request = (b"POST /api/0/auth/login HTTP/1.1\r\nHost: localhost\r\n"
                   b"Content-Type: application/json\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\n\r\n" + body)
        lines = []
        for _ in range(2):
            connection = Connection(site)
            connection.send(request)
            lines.append(connection.transport.value().split(b"\r\n", 1)[0])
        assert lines == [b"HTTP/1.1 401 Unauthorized", b"HTTP/1.1 429 Too Many Requests"]
    finally:
        stack.close()
