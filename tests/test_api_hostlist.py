"""GET /api/0/hosts: pages, cursors, filters, and the whole list streamed for large fleets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, succeed
from twisted.internet.task import Clock

from heartbeat.config.server import HostConfig
from heartbeat.server.access import Viewer
from heartbeat.server.hostlist import HostFilter
from heartbeat.server.web.stream import StreamedBody
from tests.apistack import Response, Stack, fired, user

THRESHOLDS = {"cpu_monitor": {"cpu_percent": {"warning": 80.0, "critical": 90.0}}}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, thresholds=THRESHOLDS,
                  users={"admin": user("admin-password", admin=True),
                         "bob": user("bob-password")},
                  hosts={f"h{n:03d}": HostConfig(owner="bob") for n in (3, 4, 17)})
    for n in range(30):
        stack.heartbeat(f"h{n:03d}", addr=f"192.0.2.{n}")
    for n in (2, 4, 6):
        stack.send({"ID": "SHUT", "name": f"h{n:03d}"})
    for n, cpu in ((3, 95.0), (4, 85.0), (5, 10.0), (8, 99.0)):
        stack.send({"ID": "PLG", "name": f"h{n:03d}", "plugins": {"cpu_monitor": {
            "cpu_percent": cpu}}})
    yield stack
    stack.close()


def host_names(response: Response) -> list[str]:
    return [h["name"] for h in response.json["hosts"]]


class PagedListTests:
    def test_first_page_next_and_total(self, stack: Stack) -> None:
        """``limit`` gives a page in name order with the cursor of the next and the total."""
        token = stack.token("admin")
        first = stack.call("GET", "/api/0/hosts?limit=4", token=token)
        assert (first.status, host_names(first), first.json["next"], first.json["total"]) == (
            200, ["h000", "h001", "h002", "h003"], "h003", 30)
        whole = stack.call("GET", "/api/0/hosts", token=token)
        assert first.json["hosts"] == whole.json["hosts"][:4]

    def test_following_next_lists_everything_once(self, stack: Stack) -> None:
        """Walking the ``next`` cursors lists the same hosts as the whole list, once each."""
        token = stack.token("admin")
        listed: list[str] = []
        cursor = None
        while True:
            path = "/api/0/hosts?limit=7" + (f"&after={cursor}" if cursor else "")
            response = stack.call("GET", path, token=token)
            listed += host_names(response)
            cursor = response.json["next"]
            if cursor is None:
                break
        assert listed == [f"h{n:03d}" for n in range(30)]

    def test_filters(self, stack: Stack) -> None:
        """``state``, ``alerting`` and ``q`` narrow the list; ``total`` counts what matches."""
        token = stack.token("admin")
        down = stack.call("GET", "/api/0/hosts?limit=2&state=down", token=token)
        assert (host_names(down), down.json["next"], down.json["total"]) == (
            ["h002", "h004"], "h004", 3)
        alerting = stack.call("GET", "/api/0/hosts?limit=10&alerting=CRITICAL", token=token)
        assert (host_names(alerting), alerting.json["total"]) == (["h003", "h008"], 2)
        either = stack.call("GET", "/api/0/hosts?alerting=warning,critical", token=token)
        assert host_names(either) == ["h003", "h004", "h008"]
        assert [h["alert_level"] for h in either.json["hosts"]] == [
            "CRITICAL", "WARNING", "CRITICAL"]
        found = stack.call("GET", "/api/0/hosts?limit=50&q=H01", token=token)
        assert (host_names(found), found.json["total"]) == ([f"h{n:03d}" for n in range(10, 20)],
                                                            10)
        address = stack.call("GET", "/api/0/hosts?q=192.0.2.29", token=token)
        assert host_names(address) == ["h029"]

    def test_viewer_pages_only_its_hosts(self, stack: Stack) -> None:
        """A user pages through the hosts it holds a role on; total counts only those."""
        bob = stack.call("GET", "/api/0/hosts?limit=2", token=stack.token("bob"))
        assert (host_names(bob), bob.json["next"], bob.json["total"]) == (
            ["h003", "h004"], "h004", 3)
        assert [h["role"] for h in bob.json["hosts"]] == ["owner", "owner"]

    @pytest.mark.parametrize(("query", "detail"), [
        ("limit=0", "limit must be between 1 and 5000"),
        ("limit=5001", "limit must be between 1 and 5000"),
        ("limit=ten", "limit must be an integer"),
        ("state=SLEEPING", "state must be one or more of DOWN, UNKNOWN, UNREACHABLE, UP"),
        ("alerting=OK", "alerting must be one or more of CRITICAL, UNKNOWN, WARNING"),
    ])
    def test_bad_arguments_are_400(self, stack: Stack, query: str, detail: str) -> None:
        """A malformed limit or an unknown state or level is a 400 naming what is allowed."""
        response = stack.call("GET", f"/api/0/hosts?{query}", token=stack.token("admin"))
        assert (response.status, response.json) == (400, {"error": "bad_request",
                                                          "detail": detail})


class StreamedListTests:
    @staticmethod
    def turn_until(stack: Stack, http: StubTreq, d: Any) -> tuple[Any, int]:
        """Run the stub connection and the clock until ``d`` fires; its result and the
        reactor turns it took."""
        box: list[Any] = []
        d.addBoth(box.append)
        turns = 0
        while not box and turns < 10_000:
            http.flush()
            stack.clock.advance(0)
            turns += 1
        return fired(succeed(box[0]) if box else d), turns

    def streamed(self, stack: Stack, path: str, token: str) -> tuple[int, bytes, int]:
        """GET ``path``; the reactor turns it takes are counted, as the stream uses them."""
        http = StubTreq(stack.resource)
        response, turns = self.turn_until(stack, http, http.request(
            "GET", f"http://heartbeat.test{path}",
            headers={"Authorization": [f"Bearer {token}"]}))
        body, more = self.turn_until(stack, http, http.content(response))
        return response.code, body, turns + more

    def test_streamed_answer_is_todays_answer(self, stack: Stack) -> None:
        """Over ``stream_over`` hosts the whole list is written in chunks across reactor
        turns, byte for byte the answer built at once."""
        token = stack.token("admin")
        built = stack.call("GET", "/api/0/hosts", token=token)
        stack.api.stream_over = 5
        status, body, _ = self.streamed(stack, "/api/0/hosts", token)
        assert (status, body) == (200, built.raw)
        assert json.loads(body) == {"hosts": built.json["hosts"]}

    def test_streamed_in_many_chunks_with_filters(self, stack: Stack, monkeypatch: Any) -> None:
        """Chunks of one host each still give one valid JSON document, filters applied."""
        monkeypatch.setattr("heartbeat.server.web.api.STREAM_CHUNK", 1)
        token = stack.token("admin")
        stack.api.stream_over = 0
        status, body, _ = self.streamed(stack, "/api/0/hosts?state=UP&q=h00", token)
        expected = [f"h{n:03d}" for n in range(10) if n not in (2, 4, 6)]
        assert (status, [h["name"] for h in json.loads(body)["hosts"]]) == (200, expected)
        status, body, _ = self.streamed(stack, "/api/0/hosts?q=nothing", token)
        assert (status, body) == (200, b'{"hosts":[]}')

    def test_fleet_changing_between_chunks(self, stack: Stack, monkeypatch: Any) -> None:
        """A host removed between two chunks is not written, one added after the cursor is;
        the others are written once each, in order."""
        monkeypatch.setattr("heartbeat.server.web.api.STREAM_CHUNK", 1)
        admin = Viewer(stack.auth.directory, "admin", "bearer")
        chunks = stack.api._host_chunks(admin, HostFilter(), None, None)
        written = next(chunks) + next(chunks) + next(chunks)
        stack.registry.remove("h029", stack.clock.seconds())
        stack.heartbeat("h0295")
        stack.heartbeat("a-before-the-cursor")
        written += b"".join(chunks)
        listed = [h["name"] for h in json.loads(written)["hosts"]]
        assert listed == [f"h{n:03d}" for n in range(29)] + ["h0295"]


class ChunkRecorder:
    """The part of a request StreamedBody uses: writes, and the producer it registers."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)


def counted_stream() -> tuple[Clock, ChunkRecorder, list[int], Any]:
    """A StreamedBody of three chunks started on a Clock: what it built, and its Deferred."""
    clock = Clock()
    request = ChunkRecorder()
    built: list[int] = []

    def chunks() -> Iterator[bytes]:
        for n in range(3):
            built.append(n)
            yield f"<{n}>".encode()

    return clock, request, built, StreamedBody(request, chunks(), clock).start()


class StreamedBodyTests:
    def test_one_chunk_per_turn_and_none_while_paused(self) -> None:
        """Each chunk waits for a turn of the clock; a paused stream builds nothing until
        resumed, then ends with b"" and lets go of the request."""
        clock, request, built, done = counted_stream()
        assert (request.written, built) == ([], [])
        request.producer.pauseProducing()
        clock.advance(1)
        assert (request.written, built) == ([], [])
        request.producer.resumeProducing()
        clock.advance(0)
        assert request.written == [b"<0>", b"<1>", b"<2>"]
        assert (fired(done), request.producer) == (b"", None)

    def test_client_gone_stops_building(self) -> None:
        """stopProducing (the connection is lost) ends the stream with CancelledError and
        builds no further chunk."""
        clock, request, built, done = counted_stream()
        request.producer.stopProducing()
        clock.advance(1)
        failures: list[Any] = []
        done.addErrback(failures.append)
        assert (built, request.written, [f.check(CancelledError) for f in failures]) == (
            [], [], [CancelledError])
