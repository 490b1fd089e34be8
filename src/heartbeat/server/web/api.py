"""The REST API under ``/api/0``: a Klein app over the server's injected state.

Every route but the login, the index and the OpenAPI document starts by asking
who is calling: :meth:`HeartbeatAPI.viewer` for lists (then filtered with
``viewer.sees``), :meth:`HeartbeatAPI.host` for one host with the role the
route needs, :meth:`HeartbeatAPI.admin` for user management. A host the viewer
holds no role on answers 404 exactly like a host that does not exist.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from typing import Any, TypeVar

from klein import Klein
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

import heartbeat
from heartbeat.config.loader import ConfigError, parse_section
from heartbeat.config.masking import settings_view
from heartbeat.config.server import ServerConfig, UserConfig
from heartbeat.events import EventBus
from heartbeat.protocol import CLIENT_IDS
from heartbeat.server.access import HostAccess, Role, Viewer, roles_json, user_json
from heartbeat.server.acks import HOST as ACK_HOST
from heartbeat.server.apikeys import KeyLimitReached
from heartbeat.server.auth import (
    HasherBusy,
    LoginRefused,
    LoginThrottled,
    SecondFactorNeeded,
    SecondFactorRefused,
)
from heartbeat.server.hostlist import HostFilter, TextIndex, iter_hosts, page
from heartbeat.server.jobs import Job
from heartbeat.server.jobservice import HISTORY_LIMIT, JobService
from heartbeat.server.journal import JournalService
from heartbeat.server.maintenance import MaintenanceWindow, is_glob
from heartbeat.server.operations import OperationsService
from heartbeat.server.problems import (
    HOST,
    KINDS,
    METRIC,
    QUIET_STATES,
    Rank,
    alert_ranks,
    first,
    host_ranks,
    problem,
    state_level,
)
from heartbeat.server.problems import summary as problem_summary
from heartbeat.server.registry import Host, HostState, QueueFull, Registry
from heartbeat.server.silences import Silence
from heartbeat.server.status_pages import Badge
from heartbeat.server.store import StoreService, StoreUnavailable, read_history, read_latest
from heartbeat.server.tables import COMMANDS, Rows
from heartbeat.server.thresholds.engine import ThresholdEngine
from heartbeat.server.thresholds.rules import ALERT_LEVELS
from heartbeat.server.user_policy import (
    Action,
    Code,
    CreateUser,
    DeleteUser,
    Refused,
    UpdateUser,
    UserChange,
    permit,
)
from heartbeat.server.web import openapi
from heartbeat.server.web.auth import COOKIE, WebAuth
from heartbeat.server.web.errors import ApiError, json_headers, json_response, routing_error
from heartbeat.server.web.hostview import HostViews
from heartbeat.server.web.schema import (
    ACCESS_BODY,
    ACK_BODY,
    COMMAND_BODY,
    KEY_CREATE_BODY,
    LOGIN_BODY,
    OWNER_BODY,
    POLICY_BODY,
    SILENCE_BODY,
    TOTP_CODE_BODY,
    UPGRADE_BODY,
    USER_CREATE_BODY,
    USER_UPDATE_BODY,
    WINDOW_BODY,
    read_json,
)
from heartbeat.server.web.status import StatusBoard
from heartbeat.server.web.stream import StreamedBody
from heartbeat.text import json_bytes

__all__ = ["ApiError", "DnsTrigger", "HeartbeatAPI", "json_response"]

N = TypeVar("N", int, float)
T = TypeVar("T")
MAX_PAGE = 5000
"""Hosts in one page of ``GET /api/0/hosts?limit=N``."""
STREAM_CHUNK = 64 * 1024
"""Bytes of host objects written per reactor turn when the whole list is streamed."""
StatusSource = Callable[[], Mapping[str, Any]]
DnsTrigger = Callable[[str], object]
"""Starts a DNS update for a host now (may return a Deferred; ValueError: refused)."""

log = Logger()


def _parsed_arg(request: IRequest, name: str, parse: Callable[[str], N], what: str) -> N | None:
    raw = str_arg(request, name)
    if raw is None:
        return None
    try:
        return parse(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be {what}") from None


def int_arg(request: IRequest, name: str, default: int, lo: int, hi: int) -> int:
    """An integer query argument within [lo, hi], or a 400."""
    value = _parsed_arg(request, name, int, "an integer")
    if value is None:
        return default
    if not lo <= value <= hi:
        raise ApiError(400, "bad_request", f"{name} must be between {lo} and {hi}")
    return value


def float_arg(request: IRequest, name: str) -> float | None:
    """A finite number query argument, or None when absent, or a 400."""
    value = _parsed_arg(request, name, float, "a number")
    if value is not None and not math.isfinite(value):
        raise ApiError(400, "bad_request", f"{name} must be a finite number")
    return value


def str_arg(request: IRequest, name: str) -> str | None:
    raw = request.args.get(name.encode(), [None])[0]
    return None if raw is None else raw.decode("utf-8", "replace")


def _checked(change: Callable[[], T]) -> T:
    """A change checked by the books' parsers: what they refuse is a 400 naming the field."""
    try:
        return change()
    except ConfigError as e:
        raise ApiError(400, "invalid_body", str(e)) from None
    except (OverflowError, ValueError) as e:
        raise ApiError(400, "invalid_body", f"body: {e}") from None


def choice_arg(request: IRequest, name: str, known: Iterable[str]) -> frozenset[str] | None:
    """A comma-separated (or repeated) choice among ``known``, upper-cased; None when absent.

    Matching is case-insensitive; an empty or unknown value is a 400 naming the choices.
    """
    given = request.args.get(name.encode())
    if given is None:
        return None
    words = ",".join(v.decode("utf-8", "replace") for v in given).split(",")
    chosen = frozenset(w.strip().upper() for w in words if w.strip())
    allowed = {k.upper() for k in known}
    if not chosen or not chosen <= allowed:
        choices = ", ".join(sorted(known))
        raise ApiError(400, "bad_request", f"{name} must be one or more of {choices}")
    return chosen


class HeartbeatAPI:
    """Read and action endpoints over the registry, the store, the journal and the users."""

    app = Klein()

    def __init__(
        self,
        registry: Registry,
        store: StoreService,
        journal: JournalService | None,
        clock: IReactorTime,
        status_sources: Mapping[str, StatusSource],
        *,
        auth: WebAuth,
        bus: EventBus,
        dns_trigger: DnsTrigger | None = None,
        max_body: int = 1024 * 1024,
        stream_over: int = 1000,
        alerts: ThresholdEngine | None = None,
        config: ServerConfig | None = None,
        config_path: str | None = None,
        status_board: StatusBoard | None = None,
        operations: OperationsService | None = None,
        views: HostViews | None = None,
        jobs: JobService | None = None,
    ) -> None:
        self.registry = registry
        self.text_index = TextIndex()
        """What ``q=`` of the host list searches (built from the registry when it changed)."""
        self.store = store
        self.journal = journal
        self.clock = clock
        self.status_sources = status_sources
        self.auth = auth
        self.users = auth.service
        self.bus = bus
        self.dns_trigger = dns_trigger
        self.max_body = max_body
        self.stream_over = stream_over
        """Fleets larger than this get the whole host list streamed, not built at once."""
        self.alerts = alerts
        self.config = config
        self.config_path = config_path
        self.status_board = status_board
        self.operations = operations
        """Maintenance windows, silences, acknowledgements (None: the routes answer 503)."""
        self.views = views or HostViews(registry, alerts)
        self.jobs = jobs
        self.started = clock.seconds()

    # Errors
    @app.handle_errors(ApiError)
    def _api_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, ApiError)
        return error.respond(request)

    @app.handle_errors(NotFound, MethodNotAllowed)
    def _no_route(self, request: IRequest, failure: Failure) -> bytes:
        return routing_error(request, failure)

    @app.handle_errors(HasherBusy)
    def _hasher_busy(self, request: IRequest, failure: Failure) -> bytes:
        return ApiError(429, "hashing_busy", str(failure.value), {"Retry-After": "1"}
                        ).respond(request)

    @app.handle_errors(StoreUnavailable)
    def _store_unavailable(self, request: IRequest, failure: Failure) -> bytes:
        log.error("api: {method} {path} refused: {error}", method=request.method.decode(),
                  path=request.path.decode("utf-8", "replace"), error=failure.value)
        return ApiError(503, "store_unavailable", f"nothing changed: {failure.value}",
                        {"Retry-After": "5"}).respond(request)

    # Who is asking: the one check every route makes
    def viewer(self, request: IRequest) -> Viewer:
        """The caller, or 401 (not logged in) / 403 (cookie change without CSRF proof)."""
        return self.auth.viewer(request)

    def admin(self, request: IRequest) -> Viewer:
        viewer = self.viewer(request)
        if not viewer.admin:
            raise ApiError(403, "forbidden", "only an admin may do this")
        return viewer

    def person(self, request: IRequest) -> Viewer:
        """The caller in person (a session, or no users at all): never an API key.

        Users and API keys are managed by people who logged in: a key that
        leaks must not be able to make more keys or users, or change a password.
        """
        viewer = self.viewer(request)
        if viewer.via == "key":
            raise ApiError(403, "key_not_allowed",
                           "API keys cannot manage users or API keys: log in instead")
        return viewer

    def user_admin(self, request: IRequest) -> Viewer:
        viewer = self.person(request)
        if not viewer.admin:
            raise ApiError(403, "forbidden", "only an admin may do this")
        return viewer

    def allowed(self, request: IRequest, name: str, role: Role) -> Viewer:
        """The caller if they hold ``role`` on host ``name``; 404 if they cannot see it."""
        viewer = self.viewer(request)
        held = viewer.role(name)
        if held is None:
            raise ApiError(404, "not_found", f"no host named {name!r}")
        if held < role:
            raise ApiError(403, "forbidden",
                           f"this needs the {role.label} role on {name!r}; you are "
                           f"{held.label}")
        return viewer

    def host(self, request: IRequest, name: str, role: Role = Role.MONITOR) -> Host:
        """Host ``name`` if the caller holds ``role`` on it: 404 unknown or invisible, 403."""
        host = self.registry.get(name)
        if host is None:
            self.viewer(request)  # 401 before 404: do not tell strangers what exists
            raise ApiError(404, "not_found", f"no host named {name!r}")
        self.allowed(request, name, role)
        return host

    def _known_host(self, request: IRequest, name: str, role: Role) -> Viewer:
        """For access lists: a host seen or configured (it may not have reported yet)."""
        if not self._known(name):
            self.viewer(request)
            raise ApiError(404, "not_found", f"no host named {name!r}")
        return self.allowed(request, name, role)

    def _body(self, request: IRequest, schema: dict[str, Any], empty: Any = None) -> Any:
        return read_json(request, schema, self.max_body, empty)

    def _host_json(self, viewer: Viewer, host: Host) -> dict[str, Any]:
        body = self.views.json(host)
        body["role"] = self._role(viewer, host.name)
        return body

    def _host_bytes(self, viewer: Viewer, host: Host) -> bytes:
        """The JSON of :meth:`_host_json`, from the JSON the views keep of the host."""
        role = json_bytes(self._role(viewer, host.name))
        return self.views.json_bytes(host)[:-1] + b',"role":' + role + b"}"

    @staticmethod
    def _role(viewer: Viewer, name: str) -> str | None:
        role = viewer.role(name)
        return role.label if role is not None else None

    # Public
    @app.route("/api/0", methods=["GET"])
    def index(self, request: IRequest) -> bytes:
        return json_response(request, {
            "api": 0, "version": heartbeat.__version__,
            "authentication": self.users.enabled, "openapi": "/api/0/openapi.json",
            "endpoints": openapi.endpoints(), "websocket": "/ws"})

    @app.route("/api/0/openapi.json", methods=["GET"])
    def openapi_document(self, request: IRequest) -> bytes:
        return json_response(request, openapi.document(heartbeat.__version__))

    # Sessions
    @app.route("/api/0/auth/login", methods=["POST"])
    def login(self, request: IRequest) -> Deferred[bytes]:
        body = self._body(request, LOGIN_BODY)
        if not self.users.enabled:
            raise ApiError(409, "auth_disabled",
                           "no users are configured: every request is allowed without a login")
        d = self.users.login(body["username"], body["password"],
                             self.auth.client_address(request), body.get("totp"))

        def logged_in(result: Any) -> bytes:
            token, session = result
            self.auth.start_session(request, token)
            user = self.users.directory.user(session.user)
            return json_response(request, {
                "token": token, "csrf_token": session.csrf,
                "user": user_json(session.user, user) if user else None,
                "idle_timeout": self.users.sessions.idle_timeout,
                "totp_enrolment_required": session.restricted})

        def refused(failure: Failure) -> bytes:
            _throttled(failure, "failed logins")
            if failure.check(SecondFactorNeeded):
                raise ApiError(401, "totp_required",
                               "this user has a second factor: send its current code (or a "
                               "recovery code) as totp")
            if failure.check(SecondFactorRefused):
                raise ApiError(401, "invalid_totp",
                               "the second-factor code is wrong, used or expired")
            failure.trap(LoginRefused)
            raise ApiError(401, "invalid_credentials", "wrong user name or password")

        return d.addCallbacks(logged_in, refused)

    @app.route("/api/0/auth/logout", methods=["POST"])
    def logout(self, request: IRequest) -> Deferred[bytes]:
        viewer = self.viewer(request)
        d = succeed(False) if viewer.session is None else self.users.logout(viewer.session)

        def ended(done: bool) -> bytes:
            self.auth.end_session(request)
            return json_response(request, {"logged_out": done})

        return d.addCallback(ended)

    @app.route("/api/0/me", methods=["GET"])
    def me(self, request: IRequest) -> bytes:
        viewer = self.viewer(request)
        body: dict[str, Any] = {"name": None, "admin": True, "auth": viewer.via,
                                "authentication": self.users.enabled}
        if viewer.name is not None:
            user = self.users.directory.user(viewer.name)
            assert user is not None
            body.update(user_json(viewer.name, user))
            session = self.users.sessions.sessions.get(viewer.session or "")
            if session is not None:
                body["csrf_token"] = session.csrf
                body["session"] = {"created": session.created, "last_used": session.last_used,
                                   "idle_timeout": self.users.sessions.idle_timeout}
            key = self.users.keys.get(viewer.key_id or "")
            if key is not None:
                body["api_key"] = key.to_json(self.clock.seconds())
            body["totp"] = self.users.second.status(viewer.name)
            body["totp_enrolment_required"] = viewer.restricted
        body.update(roles_json(viewer.roles(self.registry.hosts.__contains__)))
        directory = self.users.directory
        body["admins"] = [{"name": name, "full_name": user.full_name, "email": user.email}
                          for name in directory.admins()
                          if (user := directory.user(name)) is not None]
        return json_response(request, body)

    # Hosts
    @app.route("/api/0/hosts", methods=["GET"])
    def hosts(self, request: IRequest) -> bytes | Deferred[bytes]:
        viewer = self.viewer(request)
        flt = HostFilter(
            states=choice_arg(request, "state", [state.value for state in HostState]),
            levels=choice_arg(request, "alerting", [level.value for level in ALERT_LEVELS]),
            text=str_arg(request, "q"))
        after = str_arg(request, "after")
        levels = (self.alerts.worst_levels()
                  if flt.levels is not None and self.alerts is not None else {})
        sees, within = self._listing(viewer)
        if str_arg(request, "limit") is not None:
            found = page(self.registry, flt, levels, sees,
                         int_arg(request, "limit", 100, 1, MAX_PAGE), after=after,
                         index=self.text_index, within=within)
            json_headers(request)
            return (b'{"hosts":[' + b",".join(self._host_bytes(viewer, h) for h in found.hosts)
                    + b'],"next":' + json_bytes(found.next)
                    + b',"total":' + json_bytes(found.total) + b"}")
        if len(self.registry) <= self.stream_over:
            hosts = iter_hosts(self.registry, flt, levels, sees, after, index=self.text_index,
                               within=within)
            json_headers(request)
            return b'{"hosts":[' + b",".join(self._host_bytes(viewer, h) for h in hosts) + b"]}"
        json_headers(request)
        return StreamedBody(IConsumer(request),
                            self._host_chunks(viewer, flt, sees, after, within),
                            self.clock).start()

    def _listing(self, viewer: Viewer) -> tuple[Callable[[str], bool] | None,
                                                 list[str] | None]:
        """Whom a host listing asks whether ``viewer`` sees a host (None: an admin sees
        all), and the only hosts it need look at (sorted; None: the fleet): a user who
        sees a few hosts costs a walk of those, not of 100,000."""
        if viewer.admin:
            return None, None
        all_but, names = viewer.seen(self.registry.hosts.__contains__)
        return viewer.sees, None if all_but else sorted(names)

    def _host_chunks(self, viewer: Viewer, flt: HostFilter, sees: Callable[[str], bool] | None,
                     after: str | None, within: list[str] | None = None) -> Iterator[bytes]:
        """``{"hosts": [...]}`` in pieces of about STREAM_CHUNK bytes, each picking up after
        the last host written, so hosts added or removed meanwhile shift nothing."""
        yield b'{"hosts":['
        separator = b""
        while True:
            levels = (self.alerts.worst_levels()
                      if flt.levels is not None and self.alerts is not None else {})
            parts: list[bytes] = []
            size = 0
            finished = True
            for host in iter_hosts(self.registry, flt, levels, sees, after, index=self.text_index,
                                   within=within):
                part = self._host_bytes(viewer, host)
                parts.append(part)
                size += len(part) + 1
                after = host.name
                if size >= STREAM_CHUNK:
                    finished = False
                    break
            if parts:
                yield separator + b",".join(parts)
                separator = b","
            if finished:
                yield b"]}"
                return

    @app.route("/api/0/hosts/<name>", methods=["GET"])
    def host_detail(self, request: IRequest, name: str) -> bytes:
        host = self.host(request, name)
        body = self._host_json(self.viewer(request), host)
        body["pending"] = [c.to_json() for c in host.pending.values()]
        body["results"] = list(reversed(host.results or ()))
        return json_response(request, body)

    @app.route("/api/0/hosts/<name>", methods=["DELETE"])
    def host_remove(self, request: IRequest, name: str) -> bytes:
        self.host(request, name, Role.OWNER)
        event = self.registry.remove(name, self.clock.seconds(), self.viewer(request).name)
        if event is not None:
            self.bus.publish(event)
            log.info("api: host {host} removed by {user}", host=name, user=event.data["by"])
        return json_response(request, {"removed": name})

    @app.route("/api/0/hosts/<name>/plugins", methods=["GET"])
    def plugins(self, request: IRequest, name: str) -> Deferred[bytes]:
        self.host(request, name)
        return self.store.read(read_latest(name)).addCallback(
            lambda plugins: json_response(request, {"host": name, "plugins": plugins}))

    @app.route("/api/0/hosts/<name>/plugins/<plugin>", methods=["GET"])
    def plugin_history(self, request: IRequest, name: str, plugin: str) -> Deferred[bytes]:
        host = self.host(request, name)
        if plugin not in host.plugins:
            raise ApiError(404, "not_found", f"host {name!r} has sent no {plugin!r} data")
        limit = int_arg(request, "limit", 50, 1, 10000)
        since = float_arg(request, "since")
        return self.store.read(read_history(name, plugin, limit, since)).addCallback(
            lambda samples: json_response(
                request, {"host": name, "plugin": plugin, "samples": samples}))

    # Alerts
    def engine(self) -> ThresholdEngine:
        if self.alerts is None:
            raise ApiError(503, "alerting_disabled", "threshold alerting is not running")
        return self.alerts

    def _problem_hosts(self, viewer: Viewer) -> dict[str, Set[str]]:
        """Per problem state, the hosts in it ``viewer`` sees: the registry's names per
        state and the viewer's roles, not a walk (every page's navigation count asks
        for these; at 100,000 hosts DOWN a walk and an object each took seconds)."""
        all_but, found = viewer.seen(self.registry.hosts.__contains__)
        by_state: dict[str, Set[str]] = {}
        for state in HostState:
            if state.value not in QUIET_STATES:
                names = self.registry.in_state(state.value)
                by_state[state.value] = ((names - found if found else names) if all_but
                                         else names & found)
        return by_state

    def _state_of(self, name: str) -> str | None:
        host = self.registry.get(name)
        return None if host is None else host.state.value

    def _host_ranks(self, name: str) -> list[Rank]:
        """The problems of host ``name``, unordered."""
        host = self.registry.get(name)
        return [*(() if host is None else host_ranks(host.state.value, (name,))),
                *alert_ranks(self.engine().states(name), self._state_of)]

    def _problem_objects(self, found: Iterable[Rank]) -> list[dict[str, Any]]:
        """The API objects of ``found``, in its order, with what covers each now."""
        hosts: dict[str, dict[str, Any] | None] = {}
        objects = []
        for rank in found:
            if rank.host not in hosts:
                host = self.registry.get(rank.host)
                hosts[rank.host] = None if host is None else self.views.json(host)
            item = problem(rank, hosts[rank.host])
            if item["kind"] == METRIC:  # its own silence, acknowledgement, flapping
                item.update(self.views.annotate(item["host"], item["metric_path"]))
                if item.get("flapping"):
                    item["markers"] = [*item["markers"], {"kind": "flapping"}]
            else:
                item.update({k: v for k, v in self.views.annotate(item["host"]).items()
                             if k != "markers"})
            objects.append(item)
        return objects

    @app.route("/api/0/alerts", methods=["GET"])
    def all_alerts(self, request: IRequest) -> bytes:
        viewer = self.viewer(request)
        engine = self.engine()
        levels = choice_arg(request, "level", [level.value for level in ALERT_LEVELS])
        kinds = choice_arg(request, "kind", KINDS)
        limit = (None if str_arg(request, "limit") is None
                 else int_arg(request, "limit", 0, 0, MAX_PAGE))
        by_state = self._problem_hosts(viewer)
        alerts = [s for s in engine.states() if viewer.sees(s.host)]
        summary = problem_summary({state: len(names) for state, names in by_state.items()},
                                  alerts, self._state_of)
        found: list[Rank] = []
        total = 0
        if kinds is None or HOST.upper() in kinds:
            for state, names in by_state.items():
                level = state_level(state)
                if level is None or (levels is not None and level.value not in levels):
                    continue
                total += len(names)
                # Hosts of one state differ only by name: the first ``limit`` of the list
                # are among each state's first ``limit`` names.
                chosen = names if limit is None else heapq.nsmallest(limit, names)
                found.extend(host_ranks(state, chosen))
        if kinds is None or METRIC.upper() in kinds:
            metric = [r for r in alert_ranks(alerts, self._state_of)
                      if levels is None or r.level in levels]
            total += len(metric)
            found.extend(metric)
        shown = [] if limit == 0 else first(found, limit)
        return json_response(request, {"alerts": self._problem_objects(shown),
                                       "total": total, "summary": summary})

    @app.route("/api/0/hosts/<name>/alerts", methods=["GET"])
    def host_alerts(self, request: IRequest, name: str) -> bytes:
        self.host(request, name)
        found = first(self._host_ranks(name))
        return json_response(request, {"host": name, "alerts": self._problem_objects(found)})

    @app.route("/api/0/hosts/<name>/thresholds", methods=["GET"])
    def host_thresholds(self, request: IRequest, name: str) -> bytes:
        self._known_host(request, name, Role.MONITOR)
        return json_response(request, self.engine().rules.effective(name))

    @app.route("/api/0/thresholds", methods=["GET"])
    def thresholds(self, request: IRequest) -> bytes:
        viewer = self.viewer(request)
        rules = self.engine().rules
        return json_response(request, rules.to_json(None if viewer.admin else viewer.sees))

    @app.route("/api/0/messages", methods=["GET"])
    def messages(self, request: IRequest) -> Deferred[bytes] | bytes:
        viewer = self.viewer(request)
        limit = int_arg(request, "limit", 100, 1, 5000)
        host = str_arg(request, "host")
        types = choice_arg(request, "types", CLIENT_IDS)
        if host is not None and not viewer.sees(host):
            raise ApiError(404, "not_found", f"no host named {host!r}")
        visible = None
        if not viewer.admin:
            all_but, names = viewer.seen(self.registry.hosts.__contains__)
            visible = frozenset(self.registry.hosts.keys() - names if all_but else names)
        if self.journal is None:
            raise ApiError(503, "journal_disabled", "journal_enabled is false")
        return self.journal.recent(limit, host, visible, types).addCallback(
            lambda found: json_response(request, {"messages": found[0], "complete": found[1]}))

    @app.route("/api/0/status", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        viewer = self.viewer(request)
        now = self.clock.seconds()
        if viewer.admin:
            hosts = {"total": len(self.registry), **self.registry.counts()}
        else:
            all_but, names = viewer.seen(self.registry.hosts.__contains__)
            counts = self.registry.counts()
            states = dict.fromkeys(counts, 0)
            for name in names:
                states[self.registry.hosts[name].state.value] += 1
            if all_but:
                states = {state: count - states[state] for state, count in counts.items()}
            hosts = {"total": sum(states.values()), **states}
        body: dict[str, Any] = {
            "version": heartbeat.__version__,
            "started": self.started,
            "uptime": now - self.started,
            "hosts": hosts,
        }
        if viewer.admin:
            for section, source in self.status_sources.items():
                body[section] = dict(source())
        elif self.alerts is not None:
            # The server's own counters (datagrams, users, sessions, logins, channels)
            # say nothing about the caller's hosts and much about everyone else's.
            body["alerting"] = {"active": self.alerts.summary(
                s for s in self.alerts.states() if viewer.sees(s.host))}
        return json_response(request, body)

    @app.route("/api/0/config", methods=["GET"])
    def server_config(self, request: IRequest) -> bytes:
        self.admin(request)
        if self.config is None:
            raise ApiError(503, "config_unavailable", "this server was started without one")
        return json_response(request, {"path": self.config_path,
                                       "keys": settings_view(self.config)})

    # Manager actions
    @app.route("/api/0/hosts/<name>/commands", methods=["POST"])
    def queue_command(self, request: IRequest, name: str) -> Deferred[bytes]:
        self.host(request, name, Role.MANAGER)
        body = self._body(request, COMMAND_BODY)
        payload = {"cmd": body["cmd"], "args": list(body.get("args", []))}
        return self._queue(request, name, "CMD", payload)

    @app.route("/api/0/hosts/<name>/upgrade", methods=["POST"])
    def queue_upgrade(self, request: IRequest, name: str) -> Deferred[bytes]:
        self.host(request, name, Role.MANAGER)
        body = self._body(request, UPGRADE_BODY, empty={})
        return self._queue(request, name, "UPD", dict(body))

    def _queue(self, request: IRequest, name: str, kind: str,
               payload: dict[str, Any]) -> Deferred[bytes]:
        """Queue a command once its row is committed (503 and not queued if it cannot be)."""
        by = self.viewer(request).name
        if not self.registry.dispatching:
            raise ApiError(409, "not_leader", "this server does not lead the servers sharing "
                           "its store: queue commands on the leader (/api/0/status, leader)")
        try:
            command = self.registry.new_command(name, kind, payload, self.clock.seconds(), by)
        except QueueFull as e:
            raise ApiError(409, "queue_full", f"{e}: wait for its results") from None
        row = (name, command.cmd_id, command.kind, json_bytes(command.payload).decode(),
               command.queued, command.by, command.attempts)

        def queued(_: None) -> bytes:
            if name not in self.registry.hosts:
                raise ApiError(404, "not_found", f"{name!r} was removed meanwhile")
            self.bus.publish(self.registry.add_command(name, command))
            log.info("api: {kind} {cmd_id} queued for {host} by {user}", kind=kind,
                     cmd_id=command.cmd_id, host=name, user=by)
            return json_response(request, {"host": name, "command": command.to_json()}, 202)

        return self.store.commit(Rows("add", COMMANDS, [row])).addCallback(queued)

    @app.route("/api/0/hosts/<name>/dns", methods=["POST"])
    def trigger_dns(self, request: IRequest, name: str) -> Deferred[bytes]:
        self.host(request, name, Role.MANAGER)
        trigger = self.dns_trigger
        if trigger is None:
            raise ApiError(503, "dns_disabled", "dynamic DNS is not configured (dyndomains)")

        def refused(failure: Failure) -> bytes:
            failure.trap(ValueError)
            raise ApiError(409, "dns_refused", str(failure.value))

        return maybeDeferred(trigger, name).addCallbacks(
            lambda _: json_response(request, {"host": name, "dns": "queued"}, 202), refused)

    # Owner actions
    @app.route("/api/0/hosts/<name>/access", methods=["GET"])
    def access(self, request: IRequest, name: str) -> bytes:
        self._known_host(request, name, Role.OWNER)
        return self._access_json(request, name, self.users.directory.access(name))

    @app.route("/api/0/hosts/<name>/access", methods=["PUT"])
    def access_update(self, request: IRequest, name: str) -> Deferred[bytes]:
        viewer = self._known_host(request, name, Role.OWNER)
        body = self._body(request, ACCESS_BODY)
        access = HostAccess(body["owner"], tuple(dict.fromkeys(body["managers"])),
                            tuple(dict.fromkeys(body["monitors"])))
        return self._save_access(request, viewer, name, access)

    @app.route("/api/0/hosts/<name>/access", methods=["DELETE"])
    def access_reset(self, request: IRequest, name: str) -> Deferred[bytes]:
        viewer = self._known_host(request, name, Role.OWNER)

        def reset(access: HostAccess) -> bytes:
            log.info("api: access of {host} reset to the config by {user}", host=name,
                     user=viewer.name)
            return self._access_json(request, name, access)

        return self.users.reset_access(name).addCallback(reset)

    @app.route("/api/0/hosts/<name>/owner", methods=["POST"])
    def transfer(self, request: IRequest, name: str) -> Deferred[bytes]:
        viewer = self._known_host(request, name, Role.OWNER)
        body = self._body(request, OWNER_BODY)
        current = self.users.directory.access(name)
        return self._save_access(request, viewer, name,
                                 dataclasses.replace(current, owner=body["owner"]))

    def _save_access(self, request: IRequest, viewer: Viewer, name: str,
                     access: HostAccess) -> Deferred[bytes]:
        unknown = self.users.directory.unknown_users(access.names())
        if unknown:
            raise ApiError(400, "unknown_user", f"no such user: {', '.join(unknown)}")

        def saved(access: HostAccess) -> bytes:
            log.info("api: access of {host} set by {user}: {access}", host=name,
                     user=viewer.name, access=access.to_json())
            return self._access_json(request, name, access)

        return self.users.set_access(name, access).addCallback(saved)

    @staticmethod
    def _access_json(request: IRequest, name: str, access: HostAccess) -> bytes:
        return json_response(request, {"host": name, **access.to_json()})

    # Users (admin)
    def _user_json(self, name: str, user: UserConfig) -> dict[str, Any]:
        return {**user_json(name, user), "source": self.users.directory.user_source(name),
                **roles_json(self.users.directory.roles(name, self._known))}

    def _known(self, host: str) -> bool:
        """A host seen or configured: those a user's roles are listed on."""
        return host in self.registry.hosts or host in self.registry.host_config

    @app.route("/api/0/users", methods=["GET"])
    def user_list(self, request: IRequest) -> bytes:
        self.user_admin(request)
        users = self.users.directory.users
        return json_response(request, {"users": [self._user_json(n, u)
                                                 for n, u in sorted(users.items())]})

    @app.route("/api/0/users", methods=["POST"])
    def user_create(self, request: IRequest) -> Deferred[bytes]:
        viewer = self._may_change_users(request, Action.CREATE, None)
        if not self.users.enabled and not self.auth.local(request):
            # The first user turns logins on and is an admin: not for whoever reaches the
            # port first (or a page rebinding a name to it), but for the server's own people.
            raise ApiError(403, "first_user_not_local",
                           "the first user turns logins on: create it from the server itself "
                           "(http://localhost:<hbd_port>/), or under users: in the config "
                           "with a password hash from 'heartbeat passwd NAME'")
        body = self._body(request, USER_CREATE_BODY)
        name = body.pop("name")
        password = body.pop("password", None)
        change = CreateUser(name, self._user_fields(body), password)
        return self._change_user(viewer, change, "created").addCallback(
            lambda user: json_response(request, self._user_json(name, user), 201))

    @app.route("/api/0/users/<user>", methods=["GET"])
    def user_detail(self, request: IRequest, user: str) -> bytes:
        self.user_admin(request)
        return json_response(request, self._user_json(user, self._user(user)))

    @app.route("/api/0/users/<user>", methods=["PUT"])
    def user_update(self, request: IRequest, user: str) -> Deferred[bytes]:
        viewer = self._may_change_users(request, Action.UPDATE, user)
        self._user(user)
        body = self._body(request, USER_UPDATE_BODY)
        password = body.pop("password", None)
        current = body.pop("current_password", None)
        change = UpdateUser(user, self._user_fields(body), password)
        own = password is not None and viewer.name == user
        if not own:
            return self._change_user(viewer, change, "changed").addCallback(
                lambda changed: json_response(request, self._user_json(user, changed)))
        # One's own password: a stolen session must not lock its owner out, so the
        # current password is asked for; the session making the change is replaced.
        if current is None:
            raise ApiError(403, "current_password_required",
                           "changing your own password needs current_password")
        checked = self.users.check_password(user, current, self.auth.client_address(request))

        def wrong(failure: Failure) -> None:
            _throttled(failure, "wrong passwords")
            failure.trap(LoginRefused)
            raise ApiError(403, "wrong_password", "current_password is not your password")

        changed: list[UserConfig] = []
        d: Deferred[Any] = checked.addCallbacks(
            lambda _: self._change_user(viewer, change, "changed"), wrong)
        d.addCallback(changed.append)
        if viewer.session is not None:
            session = viewer.session
            d.addCallback(lambda _: self.users.rotate_session(session))

        def answer(rotated: tuple[str, Any] | None) -> bytes:
            body = self._user_json(user, changed[0])
            if rotated is not None:
                token, new = rotated
                if request.getCookie(COOKIE.encode()) is not None:
                    self.auth.start_session(request, token)
                body["session"] = {"token": token, "csrf_token": new.csrf}
            return json_response(request, body)

        return d.addCallback(answer)

    @app.route("/api/0/users/<user>", methods=["DELETE"])
    def user_delete(self, request: IRequest, user: str) -> Deferred[bytes]:
        viewer = self._may_change_users(request, Action.DELETE, user)
        return self._change_user(viewer, DeleteUser(user), "deleted").addCallback(
            lambda _: json_response(request, {"deleted": user}))

    def _may_change_users(self, request: IRequest, action: Action, name: str | None) -> Viewer:
        """The caller in person, if the user policy lets them ``action`` users at all
        (else 403)."""
        viewer = self.person(request)
        try:
            permit(self.users.directory.users, viewer.name, action, name)
        except Refused as e:
            raise _refusal(e) from None
        return viewer

    def _change_user(self, viewer: Viewer, change: UserChange, done: str) -> Deferred[Any]:
        """The user after ``change`` (None: deleted), logged; a refusal as its ApiError."""

        def changed(user: UserConfig | None) -> UserConfig | None:
            log.info("api: user {name} {done} by {by}", name=change.name, done=done,
                     by=viewer.name)
            return user

        def refused(failure: Failure) -> None:
            failure.trap(Refused)
            error = failure.value
            assert isinstance(error, Refused)
            raise _refusal(error)

        return self.users.change_user(viewer.name, change, keep=viewer.session).addCallbacks(
            changed, refused)

    # API keys (a user's own; admins may list and revoke anyone's)
    def _key_owner(self, request: IRequest, user: str) -> Viewer:
        viewer = self.person(request)
        if not self.users.enabled:
            raise ApiError(409, "auth_disabled",
                           "no users are configured: API keys belong to users")
        if not viewer.admin and viewer.name != user:
            self._user(user)
            raise ApiError(403, "forbidden", "only an admin may see another user's API keys")
        self._user(user)
        return viewer

    @app.route("/api/0/users/<user>/keys", methods=["GET"])
    def key_list(self, request: IRequest, user: str) -> bytes:
        self._key_owner(request, user)
        now = self.clock.seconds()
        return json_response(request, {"user": user, "keys": [
            k.to_json(now) for k in self.users.keys.of_user(user)]})

    @app.route("/api/0/users/<user>/keys", methods=["POST"])
    def key_create(self, request: IRequest, user: str) -> Deferred[bytes]:
        viewer = self._key_owner(request, user)
        if viewer.name != user:
            raise ApiError(403, "forbidden", "an API key is made by the user it belongs to")
        body = self._body(request, KEY_CREATE_BODY)
        expires = body.get("expires")
        now = self.clock.seconds()
        if expires is not None and not (math.isfinite(expires) and expires > now):
            raise ApiError(400, "invalid_body", "body.expires: must be a Unix time in the future")
        try:
            made = self.users.create_key(user, body["name"], body["scope"], expires)
        except KeyLimitReached as e:
            raise ApiError(409, "too_many_keys", f"{e}: revoke one first") from None
        return made.addCallback(lambda result: json_response(
            request, {"token": result[0], "key": result[1].to_json(now)}, 201))

    @app.route("/api/0/users/<user>/keys/<key_id>", methods=["DELETE"])
    def key_revoke(self, request: IRequest, user: str, key_id: str) -> Deferred[bytes]:
        viewer = self._key_owner(request, user)
        key = self.users.keys.get(key_id)
        if key is None or key.user != user:
            raise ApiError(404, "not_found", f"{user!r} has no API key {key_id!r}")
        def revoked(_: object) -> bytes:
            log.info("api: API key {key_id} of {user} revoked by {by}", key_id=key_id,
                     user=user, by=viewer.name)
            return json_response(request, {"revoked": key_id})

        return self.users.revoke_key(key_id).addCallback(revoked)

    # Cron jobs: a job is seen as its host is (a job without host: as a host with no entry)
    def _jobs(self) -> JobService:
        if self.jobs is None:
            raise ApiError(503, "jobs_disabled", "this server keeps no cron jobs")
        return self.jobs

    def _job_json(self, viewer: Viewer, job: Job) -> dict[str, Any]:
        body = job.to_json(self.clock.seconds())
        body.pop("recent_runs")
        last = job.runs[-1] if job.runs else None
        body["last_run"] = None if last is None else {
            k: v for k, v in last.to_json().items() if k != "log"}
        body["last_duration"] = None if last is None else last.duration
        # The UUID lets anyone ping: those who may change the host see it, monitors do not.
        host = job.spec.host or ""
        uuid = job.spec.uuid if viewer.may(Role.MANAGER, host) else None
        body["uuid"] = uuid
        body["ping_url"] = None if uuid is None else f"/ping/{uuid}"
        return body

    @app.route("/api/0/jobs", methods=["GET"])
    def job_list(self, request: IRequest) -> bytes:
        viewer = self.viewer(request)
        jobs = [self._job_json(viewer, job) for job in sorted(
            self._jobs().book, key=lambda j: j.name) if viewer.sees(job.spec.host or "")]
        levels = {level: sum(1 for j in jobs if j["level"] == level)
                  for level in ("OK", "WARNING", "CRITICAL")}
        return json_response(request, {"jobs": jobs, "levels": levels})

    @app.route("/api/0/jobs/<name>", methods=["GET"])
    def job_detail(self, request: IRequest, name: str) -> Deferred[bytes]:
        viewer = self.viewer(request)
        job = self._jobs().book.jobs.get(name)
        if job is None or not viewer.sees(job.spec.host or ""):
            raise ApiError(404, "not_found", f"no job named {name!r}")
        limit = int_arg(request, "limit", 50, 1, HISTORY_LIMIT)
        body = self._job_json(viewer, job)

        def answer(runs: list[dict[str, Any]]) -> bytes:
            body["runs"] = runs
            return json_response(request, body)
        return self._jobs().runs(name, limit).addCallback(answer)

    # Public status pages and badges
    def _board(self) -> StatusBoard:
        if self.status_board is None:
            raise ApiError(503, "status_pages_disabled", "this server has no status board")
        return self.status_board

    @app.route("/api/0/status-pages", methods=["GET"])
    def status_pages(self, request: IRequest) -> bytes:
        self.viewer(request)
        board = self._board()
        pages = []
        for slug, status_page in sorted(board.pages.items()):
            badge = board.badges.of("page", slug)
            snapshot = board.snapshot(slug)
            pages.append({"slug": slug, "title": status_page.title,
                          "description": status_page.description,
                          "hosts": list(status_page.patterns), "url": f"/status/{slug}",
                          "badge": None if badge is None else badge.to_json()["url"],
                          "summary": snapshot["summary"]})
        return json_response(request, {"pages": pages})

    @app.route("/api/0/status-pages/<slug>/badge", methods=["POST"])
    def status_page_badge(self, request: IRequest, slug: str) -> Deferred[bytes]:
        viewer = self.admin(request)
        board = self._board()
        board.page(slug)

        def made(badge: Badge) -> bytes:
            log.info("api: the badge of status page {slug} renewed by {by}", slug=slug,
                     by=viewer.name)
            return json_response(request, badge.to_json(), 201)

        return board.make_badge("page", slug).addCallback(made)

    @app.route("/api/0/hosts/<name>/badge", methods=["GET"])
    def host_badge(self, request: IRequest, name: str) -> bytes:
        self._known_host(request, name, Role.OWNER)
        badge = self._board().badges.of("host", name)
        if badge is None:
            raise ApiError(404, "not_found", f"{name!r} has no badge: POST makes one")
        return json_response(request, badge.to_json())

    @app.route("/api/0/hosts/<name>/badge", methods=["POST"])
    def host_badge_make(self, request: IRequest, name: str) -> Deferred[bytes]:
        viewer = self._known_host(request, name, Role.OWNER)

        def made(badge: Badge) -> bytes:
            log.info("api: a badge for {host} made by {by}", host=name, by=viewer.name)
            return json_response(request, badge.to_json(), 201)

        return self._board().make_badge("host", name).addCallback(made)

    @app.route("/api/0/hosts/<name>/badge", methods=["DELETE"])
    def host_badge_revoke(self, request: IRequest, name: str) -> Deferred[bytes]:
        self._known_host(request, name, Role.OWNER)

        def revoked(badge: Badge | None) -> bytes:
            if badge is None:
                raise ApiError(404, "not_found", f"{name!r} has no badge")
            return json_response(request, {"revoked": badge.token})

        return self._board().revoke_badge("host", name).addCallback(revoked)

    # Operations: maintenance windows, silences, acknowledgements (docs/OPERATIONS.md)
    def _operations(self) -> OperationsService:
        if self.operations is None:
            raise ApiError(503, "operations_disabled",
                           "maintenance windows, silences and acknowledgements are not running")
        return self.operations

    def _changing(self) -> OperationsService:
        """The operations, to change: only on the leader of servers sharing a store."""
        operations = self._operations()
        if not operations.leading:
            raise ApiError(409, "not_leader", "this server does not lead the servers sharing "
                           "its store: change windows, silences and acknowledgements on the "
                           "leader (/api/0/status, leader)")
        return operations

    @staticmethod
    def _manages(viewer: Viewer, hosts: Iterable[str], tags: Iterable[str], what: str) -> None:
        """Admins name any hosts; others only hosts by name on which they are managers."""
        if viewer.admin:
            return
        if list(tags) or any(is_glob(host) for host in hosts):
            raise ApiError(403, "forbidden", f"only an admin may make a {what} by glob or tag; "
                                             f"name the hosts you manage")
        for host in hosts:
            if not viewer.may(Role.MANAGER, host):
                raise ApiError(403, "forbidden",
                               f"a {what} of {host!r} needs the manager role on it")

    def _visible_hosts(self, viewer: Viewer) -> Sequence[str]:
        return viewer.visible(self.registry.names(), self.registry.hosts.__contains__)

    def _window(self, request: IRequest, window_id: str) -> tuple[Viewer, MaintenanceWindow]:
        """Window ``window_id`` if the caller sees a host it covers (else 404)."""
        viewer = self.viewer(request)
        calendar = self._operations().calendar
        window = calendar.get(window_id)
        if window is None or not (viewer.admin or any(viewer.sees(n) for n in window.selector.names)
                                  or calendar.covers(window, self._visible_hosts(viewer))):
            raise ApiError(404, "not_found", f"no maintenance window {window_id!r}")
        return viewer, window

    def _changeable(self, viewer: Viewer, window: MaintenanceWindow) -> None:
        if window.source == "config":
            raise ApiError(409, "config_window", f"window {window.id!r} is in the config "
                                                 f"(maintenance:): change it there")
        self._manages(viewer, window.selector.names, window.selector.tags, "maintenance window")

    def _on_disk(self, request: IRequest, body: dict[str, Any],
                 code: int = 200) -> Deferred[bytes]:
        """Answer once the change is committed (with what the store had queued before it);
        503 store_unavailable if it cannot be now: the change stands and the store writes
        it when it can again (docs/STORE.md)."""
        return self.store.commit().addCallback(lambda _: json_response(request, body, code))

    def _window_json(self, window: MaintenanceWindow) -> dict[str, Any]:
        return window.to_json(self.clock.seconds())

    @app.route("/api/0/maintenance", methods=["GET"])
    def maintenance_list(self, request: IRequest) -> bytes:
        viewer = self.viewer(request)
        calendar = self._operations().calendar
        seen = None if viewer.admin else self._visible_hosts(viewer)
        windows = [self._window_json(w) for w in calendar
                   if seen is None or any(viewer.sees(n) for n in w.selector.names)
                   or calendar.covers(w, seen)]
        return json_response(request, {"windows": windows})

    @app.route("/api/0/maintenance", methods=["POST"])
    def maintenance_create(self, request: IRequest) -> Deferred[bytes]:
        viewer = self.viewer(request)
        operations = self._changing()
        body = self._body(request, WINDOW_BODY)
        self._manages(viewer, body.get("hosts", []), body.get("tags", []), "maintenance window")
        window = _checked(lambda: operations.add_window(body, viewer.name))
        return self._on_disk(request, self._window_json(window), 201)

    @app.route("/api/0/maintenance/<window_id>", methods=["GET"])
    def maintenance_get(self, request: IRequest, window_id: str) -> bytes:
        return json_response(request, self._window_json(self._window(request, window_id)[1]))

    @app.route("/api/0/maintenance/<window_id>", methods=["PUT"])
    def maintenance_replace(self, request: IRequest, window_id: str) -> Deferred[bytes]:
        viewer, window = self._window(request, window_id)
        self._changeable(viewer, window)
        body = self._body(request, WINDOW_BODY)
        self._manages(viewer, body.get("hosts", []), body.get("tags", []), "maintenance window")
        operations = self._changing()
        new = _checked(lambda: operations.replace_window(window_id, body, viewer.name))
        return self._on_disk(request, self._window_json(new))

    @app.route("/api/0/maintenance/<window_id>", methods=["DELETE"])
    def maintenance_delete(self, request: IRequest, window_id: str) -> Deferred[bytes]:
        viewer, window = self._window(request, window_id)
        self._changeable(viewer, window)
        self._changing().delete_window(window_id, viewer.name)
        return self._on_disk(request, {"deleted": window_id})

    def _silence_seen(self, viewer: Viewer, silence: Silence, seen: Sequence[str] | None) -> bool:
        if viewer.admin or viewer.sees(silence.host):
            return True
        return is_glob(silence.host) and any(silence.matches_host(h) for h in seen or [])

    @app.route("/api/0/silences", methods=["GET"])
    def silence_list(self, request: IRequest) -> bytes:
        viewer = self.viewer(request)
        book = self._operations().silences
        seen = None if viewer.admin else self._visible_hosts(viewer)
        now = self.clock.seconds()
        return json_response(request, {"silences": [
            s.to_json(now) for s in book if self._silence_seen(viewer, s, seen)]})

    @app.route("/api/0/silences", methods=["POST"])
    def silence_create(self, request: IRequest) -> Deferred[bytes]:
        viewer = self.viewer(request)
        operations = self._changing()
        body = self._body(request, SILENCE_BODY)
        self._manages(viewer, [body["host"]], [], "silence")
        silence = _checked(lambda: operations.add_silence(body, viewer.name))
        return self._on_disk(request, silence.to_json(self.clock.seconds()), 201)

    @app.route("/api/0/silences/<silence_id>", methods=["DELETE"])
    def silence_end(self, request: IRequest, silence_id: str) -> Deferred[bytes]:
        viewer = self.viewer(request)
        operations = self._changing()
        silence = operations.silences.get(silence_id)
        if silence is None or not self._silence_seen(
                viewer, silence, None if viewer.admin else self._visible_hosts(viewer)):
            raise ApiError(404, "not_found", f"no silence {silence_id!r}")
        self._manages(viewer, [silence.host], [], "silence")
        ended = operations.end_silence(silence_id, viewer.name)
        assert ended is not None
        return self._on_disk(request, ended.to_json(self.clock.seconds()))

    def _ack(self, request: IRequest, name: str, target: str, level: str) -> Deferred[bytes]:
        viewer = self.viewer(request)
        body = self._body(request, ACK_BODY)
        ack = self._changing().acknowledge(name, target, level, viewer.name,
                                             body["comment"].strip() or body["comment"])
        return self._on_disk(request, {"host": name, "target": target or None,
                                       **ack.to_json()}, 201)

    def _unack(self, request: IRequest, name: str, target: str) -> Deferred[bytes]:
        viewer = self.viewer(request)
        ack = self._changing().unacknowledge(name, target, viewer.name)
        if ack is None:
            raise ApiError(404, "not_found", f"{name!r} {target or 'DOWN'} is not acknowledged")
        return self._on_disk(request, {"host": name, "target": target or None,
                                       "removed": True, **ack.to_json()})

    @app.route("/api/0/hosts/<name>/alerts/<path:metric>/ack", methods=["POST"])
    def alert_ack(self, request: IRequest, name: str, metric: str) -> Deferred[bytes]:
        self.host(request, name, Role.MANAGER)
        self._changing()
        state = next((a for a in self.engine().states(name) if a.metric_path == metric), None)
        if state is None:
            raise ApiError(404, "not_found", f"{name!r} has no active alert on {metric!r}")
        return self._ack(request, name, metric, state.level.value)

    @app.route("/api/0/hosts/<name>/alerts/<path:metric>/ack", methods=["DELETE"])
    def alert_unack(self, request: IRequest, name: str, metric: str) -> Deferred[bytes]:
        self.host(request, name, Role.MANAGER)
        return self._unack(request, name, metric)

    @app.route("/api/0/hosts/<name>/ack", methods=["POST"])
    def host_ack(self, request: IRequest, name: str) -> Deferred[bytes]:
        host = self.host(request, name, Role.MANAGER)
        self._changing()
        if host.state not in (HostState.DOWN, HostState.UNREACHABLE):
            raise ApiError(409, "not_down", f"{name!r} is {host.state.value}: only a DOWN or "
                                            f"UNREACHABLE host is acknowledged")
        return self._ack(request, name, ACK_HOST, host.state.value)

    @app.route("/api/0/hosts/<name>/ack", methods=["DELETE"])
    def host_unack(self, request: IRequest, name: str) -> Deferred[bytes]:
        self.host(request, name, Role.MANAGER)
        return self._unack(request, name, ACK_HOST)

    # Second factor (TOTP): the user themself; admins see it and remove it
    def _totp_owner(self, request: IRequest, user: str, self_only: bool) -> Viewer:
        viewer = self._key_owner(request, user)
        if self_only and viewer.name != user:
            raise ApiError(403, "forbidden", "a second factor is enrolled by its user")
        return viewer

    @app.route("/api/0/users/<user>/totp", methods=["GET"])
    def totp_status(self, request: IRequest, user: str) -> bytes:
        self._totp_owner(request, user, self_only=False)
        return json_response(request, {"user": user, **self.users.second.status(user)})

    @app.route("/api/0/users/<user>/totp", methods=["POST"])
    def totp_start(self, request: IRequest, user: str) -> bytes:
        self._totp_owner(request, user, self_only=True)
        if self.users.second.enrolled(user):
            raise ApiError(409, "totp_enrolled",
                           "a second factor is enrolled already: remove it first")
        issuer = f"heartbeat {request.getRequestHostname().decode('ascii', 'replace')}"
        return json_response(request, {"user": user, **self.users.second.start(user, issuer)},
                             201)

    @app.route("/api/0/users/<user>/totp/confirm", methods=["POST"])
    def totp_confirm(self, request: IRequest, user: str) -> Deferred[bytes]:
        self._totp_owner(request, user, self_only=True)
        code = self._body(request, TOTP_CODE_BODY)["code"]

        def confirmed(codes: list[str] | None) -> bytes:
            if codes is None:
                raise ApiError(400, "invalid_totp", "the code does not match the secret "
                               "being enrolled (or the enrolment expired: start again)")
            return json_response(request, {"user": user, "recovery_codes": codes,
                                           **self.users.second.status(user)})

        return self.users.confirm_second_factor(user, code).addCallback(confirmed)

    @app.route("/api/0/users/<user>/totp/recovery", methods=["POST"])
    def totp_recovery(self, request: IRequest, user: str) -> Deferred[bytes]:
        self._totp_owner(request, user, self_only=True)
        code = self._body(request, TOTP_CODE_BODY)["code"]

        def checked(enrolment: Any) -> Deferred[bytes]:
            match = None if enrolment is None else self.users.second.check(user, enrolment, code)
            if match is None or match.kind != "totp":
                raise ApiError(400, "invalid_totp", "send a current code from your app")
            return self.users.second.new_recovery_codes(user).addCallback(
                lambda codes: json_response(request, {"user": user, "recovery_codes": codes}))

        return self.users.second.read(user).addCallback(checked)

    @app.route("/api/0/users/<user>/totp", methods=["DELETE"])
    def totp_remove(self, request: IRequest, user: str) -> Deferred[bytes]:
        viewer = self._totp_owner(request, user, self_only=False)
        second = self.users.second

        def answer(done: bool) -> bytes:
            if not done:
                raise ApiError(404, "not_found", f"{user!r} has no second factor")
            log.info("api: the second factor of {user} removed by {by}", user=user,
                     by=viewer.name)
            return json_response(request, {"user": user, **second.status(user)})

        def removed(_: object = None) -> Deferred[bytes]:
            return second.disable(user).addCallback(answer)

        if viewer.name != user:
            return removed()  # an admin, for someone who lost their device
        code = self._body(request, TOTP_CODE_BODY)["code"]

        def checked(enrolment: Any) -> Deferred[bytes]:
            if enrolment is None or second.check(user, enrolment, code) is None:
                raise ApiError(400, "invalid_totp",
                               "send a current code from your app, or a recovery code")
            return removed()

        return second.read(user).addCallback(checked)

    @app.route("/api/0/auth/policy", methods=["GET"])
    def auth_policy(self, request: IRequest) -> bytes:
        self.viewer(request)
        return self._policy_json(request)

    @app.route("/api/0/auth/policy", methods=["PUT"])
    def auth_policy_update(self, request: IRequest) -> Deferred[bytes]:
        viewer = self.user_admin(request)
        body = self._body(request, POLICY_BODY)

        def made(_: None) -> bytes:
            log.info("api: totp_required set to {policy} by {by}",
                     policy=body["totp_required"], by=viewer.name)
            return self._policy_json(request)

        return self.users.second.set_policy(body["totp_required"]).addCallback(made)

    @app.route("/api/0/auth/policy", methods=["DELETE"])
    def auth_policy_reset(self, request: IRequest) -> Deferred[bytes]:
        self.user_admin(request)
        return self.users.second.reset_policy().addCallback(
            lambda _: self._policy_json(request))

    def _policy_json(self, request: IRequest) -> bytes:
        second = self.users.second
        return json_response(request, {"totp_required": second.policy,
                                       "source": second.policy_source})

    def _user(self, name: str) -> UserConfig:
        user = self.users.directory.user(name)
        if user is None:
            raise ApiError(404, "not_found", f"no user named {name!r}")
        return user

    @staticmethod
    def _user_fields(fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` checked by the config's own rules."""
        try:
            checked = parse_section(UserConfig, fields, "body")
        except ConfigError as e:
            raise ApiError(400, "invalid_body", str(e)) from None
        return {key: getattr(checked, key) for key in fields}


_REFUSAL_STATUS: dict[Code, int] = {
    Code.FORBIDDEN: 403, Code.NOT_FOUND: 404, Code.EXISTS: 409, Code.LAST_ADMIN: 409,
    Code.FIRST_USER_MUST_BE_ADMIN: 409, Code.INVALID: 400,
}


def _throttled(failure: Failure, what: str) -> None:
    """A LoginThrottled failure as 429 ``too_many_attempts`` with its Retry-After."""
    if failure.check(LoginThrottled):
        error = failure.value
        assert isinstance(error, LoginThrottled)
        raise ApiError(429, "too_many_attempts", f"too many {what}: retry in "
                       f"{error.retry_after}s", {"Retry-After": str(error.retry_after)})


def _refusal(refused: Refused) -> ApiError:
    return ApiError(_REFUSAL_STATUS[refused.code], refused.code, refused.message)
