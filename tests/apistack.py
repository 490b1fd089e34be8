"""An in-memory server for API tests: the server's parts as compose.build makes them.

Everything but the sockets and threads is the production code and wiring: the
Klein tree, the StoreService on a SQLite file (its worker runs inline), auth,
the registry, ingest, alerting, the journal and the subscription table. The
services are not started (no timers run; the journal is, when asked for).
Requests go through treq's StubTreq; time only moves when the test advances
the Clock.
"""

from __future__ import annotations

import json
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.python.failure import Failure

from heartbeat.config.server import (
    HostConfig,
    MetricsConfig,
    ServerConfig,
    StatusPageConfig,
    UserConfig,
)
from heartbeat.events import Event
from heartbeat.passwords import hash_password
from heartbeat.server.compose import STORE_FILE, Seams, build
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.sessions import LoginThrottle
from heartbeat.server.settings import ServerSettings
from heartbeat.server.web.app import HeartbeatSite
from heartbeat.server.web.auth import COOKIE

FAST = 1000
"""Iterations for test users: the cost rule is pinned in test_passwords, not here."""
START = 1_800_000_000.0


def _reraise(subscriber: Any, event: Event, error: BaseException) -> None:
    """A subscriber's failure fails the test that caused it."""
    raise error


def fired(d: Deferred[Any]) -> Any:
    """The result of a Deferred that must already have fired."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, f"{d!r} has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def user(password: str | None = None, **fields: Any) -> UserConfig:
    encoded = None if password is None else hash_password(password, iterations=FAST)
    return UserConfig(password=encoded, **fields)


class Response:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = body
        self.json: Any = None
        if body and (self.header("content-type") or "").startswith("application/json"):
            self.json = json.loads(body)

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8")

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return None if not values else values[0].decode() if isinstance(values[0], bytes) \
            else values[0]

    def cookies(self) -> SimpleCookie:
        jar: SimpleCookie = SimpleCookie()
        for value in self.headers.getRawHeaders("set-cookie") or []:
            jar.load(value.decode() if isinstance(value, bytes) else value)
        return jar

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.raw[:200]!r}>"


class Stack:
    """One server's worth of state behind a StubTreq."""

    def __init__(
        self,
        directory: Path,
        *,
        users: dict[str, UserConfig] | None = None,
        hosts: dict[str, HostConfig] | None = None,
        default_owner: str | None = None,
        idle_timeout: float = 3600.0,
        throttle: LoginThrottle | None = None,
        dns_trigger: Any = None,
        max_body: int = 4096,
        journal: bool = False,
        thresholds: dict[str, Any] | None = None,
        threshold_configs: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        status_pages: dict[str, Any] | None = None,
    ) -> None:
        self.path = directory / STORE_FILE
        self.users = users or {}
        self.hosts = hosts or {}
        self.default_owner = default_owner
        self.idle_timeout = idle_timeout
        self.thresholds = thresholds or {}
        self.threshold_configs = threshold_configs or {}
        self.status_pages = status_pages or {}
        self.config = ServerConfig(
            state_dir=str(directory), journal_enabled=journal,
            journal_dir=str(directory / "journal"), users=self.users, hosts=self.hosts,
            default_owner=default_owner, session_idle_timeout=idle_timeout,
            http_max_body=max_body, thresholds=self.thresholds,
            threshold_configs=self.threshold_configs, grace=10.0, interval=30.0,
            metrics=MetricsConfig(**(metrics or {})),
            status_pages={slug: StatusPageConfig(**page)
                          for slug, page in self.status_pages.items()},
            **{"http_hosts": ["heartbeat.test", "localhost"], **(config or {})})
        self.extra_config = config
        self.clock = Clock()
        self.clock.advance(START)
        self.server = build(ServerSettings.from_config(self.config, "test.yaml"), self.clock,
                            seams=Seams(
                                worker=lambda name: ImmediateWorker(),
                                password_iterations=FAST, on_error=_reraise,
                                run_in_thread=lambda fn, *args: succeed(fn(*args))))
        server = self.server
        self.bus = server.bus
        self.events: list[Event] = []
        self.bus.subscribe(self.events.append)
        self.registry = server.registry
        self.store = server.store
        self.auth = server.auth
        self.hasher = server.auth.hasher
        if throttle is not None:
            self.auth.throttle = throttle
        self.web_auth = server.web_auth
        self.journal = server.journal
        if self.journal is not None:
            self.journal.startService()
        self.ingest = server.ingest
        self.ingest.makeConnection(FakeDatagramTransport())
        self.hub = server.hub
        self.alerting = server.alerting
        self.alerts = server.alerting.engine
        self.api = server.api
        if dns_trigger is not None:
            self.api.dns_trigger = dns_trigger
        self.root = server.root
        self.pages = server.root.pages
        self.resource = self.root.app.resource()

    def close(self) -> None:
        if self.journal is not None:
            fired(self.journal.stopService())
        fired(self.store.flush())
        self.store.backend.close()

    def restarted(self) -> Stack:
        """The same state directory opened again, as after a server restart."""
        fired(self.store.flush())
        self.store.backend.close()
        again = Stack(self.path.parent, users=self.users, hosts=self.hosts,
                      default_owner=self.default_owner, idle_timeout=self.idle_timeout,
                      thresholds=self.thresholds, threshold_configs=self.threshold_configs,
                      config=self.extra_config, status_pages=self.status_pages)
        again.clock.advance(self.clock.seconds() - again.clock.seconds())
        return again

    # Hosts
    def send(self, message: dict[str, Any], addr: str = "192.0.2.1") -> None:
        """A datagram through the real ingest path (journal, registry, events)."""
        self.ingest.datagramReceived(json.dumps(message).encode(), (addr, 50003))

    def heartbeat(self, name: str, addr: str = "192.0.2.1") -> None:
        self.send({"ID": "HTB", "name": name}, addr)

    # HTTP
    def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = None,
        cookie: str | None = None, headers: dict[str, str] | None = None,
        raw: bytes | None = None, secure: bool = False, host: str = "heartbeat.test",
    ) -> Response:
        sent = {**(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        cookies = {COOKIE: cookie} if cookie is not None else None
        scheme = "https" if secure else "http"
        http = self.stub()  # a fresh cookie jar: only what the test sends
        d = http.request(method, f"{scheme}://{host}{path}", data=data,
                         headers={k: [v] for k, v in sent.items()}, cookies=cookies,
                         allow_redirects=False)
        http.flush()
        response = fired(d)
        content = fired(http.content(response))
        return Response(response.code, response.headers, content)

    def stub(self) -> StubTreq:
        """A StubTreq whose requests go through the server's own site (HeartbeatSite:
        body limit, Host allow-list, cross-site refusal), not treq's bare Site."""
        http = StubTreq(self.resource)
        agent = http._agent
        site = self.server.site
        agent._serverFactory = HeartbeatSite(
            self.resource, site.timeOut or 60.0, self.api.max_body,
            site.request_timeout, agent._memoryReactor, policy=site.policy)
        return http

    def login(self, name: str, password: str | None = None) -> Response:
        return self.call("POST", "/api/0/auth/login",
                         {"username": name, "password": password or f"{name}-password"})

    def token(self, name: str) -> str:
        response = self.login(name)
        assert response.status == 200, response
        token: str = response.json["token"]
        return token
