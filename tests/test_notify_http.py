"""Pushover, Mattermost and signal-cli channels against loopback HTTP stand-ins (real treq).

The request bodies are asserted whole; 500s and hung requests prove the retry with
backoff, the timeout and the counted drop through the real NotifierService.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs

import pytest_twisted
from treq.client import HTTPClient
from twisted.internet.defer import DeferredQueue
from twisted.internet.task import deferLater
from twisted.web.client import Agent, HTTPConnectionPool

from heartbeat.config.server import MattermostConfig, PushoverConfig, ServerConfig, SignalConfig
from heartbeat.events import HOST_DOWN, Event, EventBus
from heartbeat.server.compose import wire
from heartbeat.server.notify.base import Notification
from heartbeat.server.notify.mattermost import MattermostChannel
from heartbeat.server.notify.pushover import PushoverChannel
from heartbeat.server.notify.routing import Router
from heartbeat.server.notify.service import NotifierService, NotifySettings
from heartbeat.server.notify.signal import SignalChannel
from heartbeat.server.retry import Backoff
from tests.peers import HttpEndpoint, within

NOTE = Notification("DOWN: web1", "web1 is DOWN: no heartbeat.", "critical", ("web1",),
                    HOST_DOWN, 1711234567.0, ("user-a", "user-b"))
SHUT_NOTE = Notification("SHUT: web1", "web1 is shutting down.", "warning", ("web1",),
                         HOST_DOWN, 1711234567.0, ("user-a", "user-b"))


def http_client() -> tuple[HTTPClient, HTTPConnectionPool]:
    from twisted.internet import reactor

    pool = HTTPConnectionPool(reactor, persistent=False)
    return HTTPClient(Agent(reactor, pool=pool)), pool


@pytest_twisted.ensureDeferred
async def test_pushover_form_post() -> None:
    """Pushover gets token, comma-joined user keys, title, message and priority 1 (critical)."""
    endpoint = HttpEndpoint().start()
    http, _ = http_client()
    try:
        channel = PushoverChannel(http, PushoverConfig(
            token="app-token", user="group", url=f"{endpoint.url}/1/messages.json"))
        await within(channel.send(NOTE))
        await within(channel.send(SHUT_NOTE))
        requests = [await within(endpoint.requests.get()) for _ in range(2)]
    finally:
        await endpoint.stop()
    assert [(r.method, r.path, r.content_type) for r in requests] == [
        ("POST", "/1/messages.json", "application/x-www-form-urlencoded")] * 2
    assert [parse_qs(r.body.decode()) for r in requests] == [
        {"token": ["app-token"], "user": ["user-a,user-b"], "title": ["DOWN: web1"],
         "message": ["web1 is DOWN: no heartbeat."], "priority": ["1"],
         "timestamp": ["1711234567"]},
        {"token": ["app-token"], "user": ["user-a,user-b"], "title": ["SHUT: web1"],
         "message": ["web1 is shutting down."], "priority": ["0"], "timestamp": ["1711234567"]},
    ]


@pytest_twisted.ensureDeferred
async def test_mattermost_webhook_json() -> None:
    """Mattermost gets text, username and the channel override as JSON."""
    endpoint = HttpEndpoint().start()
    http, _ = http_client()
    try:
        channel = MattermostChannel(http, MattermostConfig(
            url=f"{endpoint.url}/hooks/s3cr3tkey", channel="ignored-default", username="hb"))
        await within(channel.send(replace(NOTE, recipients=("@alice",))))
        await within(channel.send(Notification("BOOT: db1", "db1 booted.", "info", ("db1",),
                                               "host.boot", 1.0, ("",))))
        requests = [await within(endpoint.requests.get()) for _ in range(2)]
    finally:
        await endpoint.stop()
    assert [(r.path, r.content_type) for r in requests] == [
        ("/hooks/s3cr3tkey", "application/json; charset=UTF-8")] * 2
    assert [json.loads(r.body) for r in requests] == [
        {"text": "**DOWN: web1**\nweb1 is DOWN: no heartbeat.", "username": "hb",
         "channel": "@alice"},
        {"text": "**BOOT: db1**\ndb1 booted.", "username": "hb"},
    ]


@pytest_twisted.ensureDeferred
async def test_signal_cli_rest_send() -> None:
    """signal-cli REST gets POST /v2/send with message, number and recipients."""
    endpoint = HttpEndpoint(answers=[(201, b'{"timestamp":"1"}')]).start()
    http, _ = http_client()
    try:
        channel = SignalChannel(http, SignalConfig(url=endpoint.url + "/", number="+100"))
        await within(channel.send(NOTE))
        request = await within(endpoint.requests.get())
    finally:
        await endpoint.stop()
    assert (request.method, request.path, request.content_type) == (
        "POST", "/v2/send", "application/json; charset=UTF-8")
    assert json.loads(request.body) == {"message": "DOWN: web1\nweb1 is DOWN: no heartbeat.",
                                        "number": "+100", "recipients": ["user-a", "user-b"]}


class Wired:
    """A real NotifierService with a Pushover channel pointed at ``endpoint``."""

    def __init__(self, endpoint: HttpEndpoint, **settings: Any) -> None:
        from twisted.internet import reactor

        self.endpoint = endpoint
        config = ServerConfig(pushsrv="pushover", pushover=PushoverConfig(
            token="app-token-xyz", user="group", url=f"{endpoint.url}/1/messages.json"))
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        channel = PushoverChannel(HTTPClient(Agent(reactor, pool=self.pool)), config.pushover)
        self.bus = EventBus(on_error=lambda s, e, error: None)
        self.service = NotifierService([channel], Router(config, ["pushover"]), reactor,
                                       self.bus, settings=NotifySettings(**settings),
                                       pool=self.pool)
        self.outcomes: DeferredQueue[Event] = DeferredQueue()
        self.failures: list[Event] = []
        self.bus.subscribe(self._record, ["notify.sent", "notify.failed", "notify.dropped"])
        wire(self.bus, notifier=self.service)
        self.service.startService()

    def _record(self, event: Event) -> None:
        if event.kind == "notify.failed" and not event.data["final"]:
            self.failures.append(event)
        else:
            self.outcomes.put(event)

    def down(self, host: str) -> None:
        self.bus.publish(Event(HOST_DOWN, host, 0.0, {"reason": "timeout"}))

    async def outcome_of_down(self, host: str) -> Event:
        """The final outcome of a DOWN for ``host``; then service and endpoint are stopped."""
        try:
            self.down(host)
            return await within(self.outcomes.get())
        finally:
            await self.service.stopService()
            await self.endpoint.stop()

    def status(self) -> dict[str, Any]:
        return self.service.to_json()["channels"]["pushover"]


@pytest_twisted.ensureDeferred
async def test_http_500_is_retried_with_backoff() -> None:
    """A 500 is retried after the backoff; the second answer (200) delivers it."""
    from twisted.internet import reactor

    endpoint = HttpEndpoint(answers=[(500, b"upstream down")]).start()
    wired = Wired(endpoint, backoff=Backoff(0.2), retries=2)
    try:
        wired.down("web1")
        first = await within(endpoint.requests.get())
        t1 = reactor.seconds()
        second = await within(endpoint.requests.get())
        t2 = reactor.seconds()
        outcome = await within(wired.outcomes.get())
    finally:
        await wired.service.stopService()
        await endpoint.stop()
    assert first.body == second.body
    assert t2 - t1 >= 0.2
    assert [(e.data["reason"], e.data["retry_in"]) for e in wired.failures] == [
        ("HTTP 500: upstream down", 0.2)]
    assert (outcome.kind, outcome.data["attempts"]) == ("notify.sent", 2)
    status = wired.status()
    assert {k: status[k] for k in ("sent", "failed_attempts", "retries", "gave_up")} == {
        "sent": 1, "failed_attempts": 1, "retries": 1, "gave_up": 0}


@pytest_twisted.ensureDeferred
async def test_hung_endpoint_times_out_then_counted_drop() -> None:
    """A server that never answers: each try times out, and after the retries it is dropped."""
    endpoint = HttpEndpoint(answers=[(0, b""), (0, b"")]).start()
    wired = Wired(endpoint, timeout=0.3, backoff=Backoff(0.05), retries=1)
    outcome = await wired.outcome_of_down("web1")
    assert len(endpoint.hanging) == 2
    assert (outcome.kind, outcome.data["final"], outcome.data["reason"]) == (
        "notify.failed", True, "timed out after 0.3s")
    status = wired.status()
    assert {k: status[k] for k in ("sent", "failed_attempts", "retries", "gave_up")} == {
        "sent": 0, "failed_attempts": 2, "retries": 1, "gave_up": 1}


@pytest_twisted.ensureDeferred
async def test_body_that_never_ends_is_cut_off_at_the_timeout() -> None:
    """Headers then a stalled body: the send times out and the connection is closed."""
    from twisted.internet import reactor

    endpoint = HttpEndpoint(answers=[(-200, b"partial")]).start()
    wired = Wired(endpoint, timeout=0.3, retries=0)
    try:
        wired.down("web1")
        outcome = await within(wired.outcomes.get())
        for _ in range(50):
            if endpoint.aborted:
                break
            await within(deferLater(reactor, 0.01))
    finally:
        await wired.service.stopService()
        await endpoint.stop()
    assert (outcome.kind, outcome.data["reason"]) == ("notify.failed", "timed out after 0.3s")
    assert endpoint.aborted == [b"/1/messages.json"]


@pytest_twisted.ensureDeferred
async def test_http_4xx_is_not_retried() -> None:
    """A 400 (bad token, bad user key) gives up at once: retrying cannot help."""
    endpoint = HttpEndpoint(answers=[(400, b'{"user":"invalid"}')]).start()
    wired = Wired(endpoint, backoff=Backoff(0.05), retries=3)
    outcome = await wired.outcome_of_down("web1")
    assert (outcome.kind, outcome.data["reason"], outcome.data["attempt"]) == (
        "notify.failed", 'HTTP 400: {"user":"invalid"}', 1)
    assert len(endpoint.requests.pending) == 1
