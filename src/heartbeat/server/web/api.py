"""The REST API under ``/api/0``: a Klein app over the server's injected state."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

import heartbeat
from heartbeat.server.journal import JournalService
from heartbeat.server.registry import Host, Registry
from heartbeat.server.store import StoreService, read_history

__all__ = ["ApiError", "HeartbeatAPI", "json_response"]

StatusSource = Callable[[], Mapping[str, Any]]


class ApiError(Exception):
    """An error answered as ``{"error": code, "detail": ...}`` with an HTTP status."""

    def __init__(self, status: int, code: str, detail: str = "") -> None:
        super().__init__(detail or code)
        self.status = status
        self.code = code
        self.detail = detail


def json_response(request: IRequest, body: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def int_arg(request: IRequest, name: str, default: int, lo: int, hi: int) -> int:
    """An integer query argument within [lo, hi], or a 400."""
    raw = request.args.get(name.encode(), [None])[0]
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, "bad_request", f"{name} must be between {lo} and {hi}")
    return value


def str_arg(request: IRequest, name: str) -> str | None:
    raw = request.args.get(name.encode(), [None])[0]
    return None if raw is None else raw.decode("utf-8", "replace")


class HeartbeatAPI:
    """Read endpoints over the registry, the store and the journal."""

    app = Klein()

    def __init__(
        self,
        registry: Registry,
        store: StoreService,
        journal: JournalService | None,
        clock: IReactorTime,
        status_sources: Mapping[str, StatusSource],
    ) -> None:
        self.registry = registry
        self.store = store
        self.journal = journal
        self.clock = clock
        self.status_sources = status_sources
        self.started = clock.seconds()

    @app.handle_errors(ApiError)
    def _api_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, ApiError)
        return json_response(request, {"error": error.code, "detail": error.detail},
                             error.status)

    def host(self, name: str) -> Host:
        host = self.registry.get(name)
        if host is None:
            raise ApiError(404, "not_found", f"no host named {name!r}")
        return host

    @app.route("/api/0/hosts", methods=["GET"])
    def hosts(self, request: IRequest) -> bytes:
        hosts = sorted(self.registry, key=lambda h: h.name)
        return json_response(request, {"hosts": [self.registry.host_json(h) for h in hosts]})

    @app.route("/api/0/hosts/<name>", methods=["GET"])
    def host_detail(self, request: IRequest, name: str) -> bytes:
        host = self.host(name)
        body = self.registry.host_json(host)
        body["pending"] = [c.to_json() for c in host.pending.values()]
        body["results"] = list(reversed(host.results))
        return json_response(request, body)

    @app.route("/api/0/hosts/<name>/plugins", methods=["GET"])
    def plugins(self, request: IRequest, name: str) -> bytes:
        host = self.host(name)
        plugins = {p: {"ts": s.ts, "data": s.data} for p, s in sorted(host.plugins.items())}
        return json_response(request, {"host": name, "plugins": plugins})

    @app.route("/api/0/hosts/<name>/plugins/<plugin>", methods=["GET"])
    def plugin_history(self, request: IRequest, name: str, plugin: str) -> Deferred[bytes]:
        host = self.host(name)
        if plugin not in host.plugins:
            raise ApiError(404, "not_found", f"host {name!r} has sent no {plugin!r} data")
        limit = int_arg(request, "limit", 50, 1, 10000)
        return self.store.read(read_history(name, plugin, limit)).addCallback(
            lambda samples: json_response(
                request, {"host": name, "plugin": plugin, "samples": samples}))

    @app.route("/api/0/messages", methods=["GET"])
    def messages(self, request: IRequest) -> Deferred[bytes] | bytes:
        limit = int_arg(request, "limit", 100, 1, 5000)
        host = str_arg(request, "host")
        if self.journal is None:
            raise ApiError(503, "journal_disabled", "journal_enabled is false")
        return self.journal.recent(limit, host).addCallback(
            lambda entries: json_response(request, {"messages": entries}))

    @app.route("/api/0/status", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        now = self.clock.seconds()
        body: dict[str, Any] = {
            "version": heartbeat.__version__,
            "started": self.started,
            "uptime": now - self.started,
            "hosts": {"total": len(self.registry), **self.registry.counts()},
        }
        for section, source in self.status_sources.items():
            body[section] = dict(source())
        return json_response(request, body)

    @app.route("/api/0", methods=["GET"])
    def index(self, request: IRequest) -> bytes:
        return json_response(request, {"api": 0, "version": heartbeat.__version__, "endpoints": [
            "/api/0/hosts", "/api/0/hosts/<name>", "/api/0/hosts/<name>/plugins",
            "/api/0/hosts/<name>/plugins/<plugin>?limit=N", "/api/0/messages?host=&limit=N",
            "/api/0/status", "/ws"]})

    @app.route("/api/<path:rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def not_found(self, request: IRequest, rest: str) -> bytes:
        raise ApiError(404, "not_found", f"no endpoint /api/{rest}")
