"""The composition root: the server's parts built from its settings and a reactor.

:func:`build` makes every part, subscribes them to the bus by the one table
:data:`SUBSCRIPTIONS` (no part subscribes itself) and puts the services in a
tree whose order is their dependency order: started first to last, stopped
last to first, each stop awaited before the next (:class:`ServerService`).
``twistd heartbeat`` (``tap.makeService``), the tests' API stack and the
in-process whole-server tests all build the server here; a test or a fuzzer
swaps only what :class:`Seams` names (the blocking workers, the password cost,
the bus's error report). docs/ARCHITECTURE.md draws the table and the order.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final, TypeVar

from OpenSSL.crypto import Error as CryptoError
from OpenSSL.SSL import Error as SSLError
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web.resource import IResource

import heartbeat
from heartbeat.config.server import ServerConfig
from heartbeat.events import (
    ALERT,
    HOST_ADDRESS,
    HOST_DOWN,
    HOST_NEW,
    HOST_PLUGINS,
    HOST_REMOVED,
    HOST_UNREACHABLE,
    HOST_UP,
    RECEIVED,
    Event,
    EventBus,
    Subscriber,
)
from heartbeat.garbage import collector_paused
from heartbeat.hangup import HangupService
from heartbeat.passwords import ITERATIONS
from heartbeat.protocol import Limits
from heartbeat.server.access import Directory
from heartbeat.server.acks import AckBook
from heartbeat.server.alerting import AlertingService, load_alert_states, reminder_period
from heartbeat.server.auth import AuthService, PasswordHasher, load_auth
from heartbeat.server.collector import CollectorService
from heartbeat.server.dependencies import DependencyGraph
from heartbeat.server.dns import DnsService, DnsSettings
from heartbeat.server.flapping import FlapDetector
from heartbeat.server.ingest import IngestProtocol, IngestStats, make_udp_service
from heartbeat.server.jobservice import JobService, load_jobs
from heartbeat.server.journal import JournalFile, JournalService
from heartbeat.server.leader import LeaderService, LockSession, node_name
from heartbeat.server.limits import SOURCE_TABLE_SIZE, HostAdmission, SourceRateLimit
from heartbeat.server.maintenance import MaintenanceCalendar
from heartbeat.server.metrics import MetricsExporter
from heartbeat.server.migrations import SchemaError
from heartbeat.server.monitor import MonitorService
from heartbeat.server.notices import NoticeLedger, prune_marks, read_marks, write_marks
from heartbeat.server.notify import Channel, NotifierService, NotifySettings, Router
from heartbeat.server.notify.routing import channels_in_use
from heartbeat.server.notify.service import NOTIFIED_KINDS
from heartbeat.server.operations import (
    MAINTENANCE_CREATED,
    MAINTENANCE_DELETED,
    MAINTENANCE_ENDED,
    MAINTENANCE_STARTED,
    MAINTENANCE_UPDATED,
    OperationsService,
    load_operations,
)
from heartbeat.server.registry import HostState, Registry
from heartbeat.server.serial import WORKER_NICE, SerialWorker, Worker, WorkerFactory
from heartbeat.server.sessions import LoginThrottle
from heartbeat.server.settings import ServerSettings
from heartbeat.server.signing import Signing
from heartbeat.server.silences import SilenceBook
from heartbeat.server.store import (
    HostRecorder,
    StoreService,
    check_integrity,
    load_commands,
    load_hosts,
    maintenance_period,
    open_sqlite,
    read_latest_all,
)
from heartbeat.server.suppression import Suppression
from heartbeat.server.tables import Backend, Read, SqliteBackend
from heartbeat.server.thresholds.engine import ThresholdEngine
from heartbeat.server.web.api import HeartbeatAPI
from heartbeat.server.web.app import ConnectionBudget, ConnectionLimit, HeartbeatSite, WebRoot
from heartbeat.server.web.auth import SessionReadThrough, WebAuth
from heartbeat.server.web.hostview import HostViews
from heartbeat.server.web.metrics import MetricsPage, parse_networks
from heartbeat.server.web.origin import RequestPolicy
from heartbeat.server.web.pages import Pages, Templates
from heartbeat.server.web.pings import PingPage
from heartbeat.server.web.status import StatusBoard, load_badges
from heartbeat.server.web.websocket import EventHub, FeedFactory

__all__ = [
    "STORE_FILE",
    "SUBSCRIPTIONS",
    "Seams",
    "Server",
    "ServerService",
    "Subscription",
    "build",
    "hostport",
    "store_path",
    "subscribe_all",
    "subscription_table",
    "wire",
]

T = TypeVar("T")
log = Logger()
STORE_FILE = "heartbeat.sqlite3"
COLLECT_AT_LEAST: Final = 2.0
"""Seconds: the longest the garbage collector waits for a store flush (server.collector)."""


@dataclass(frozen=True)
class Subscription:
    """``<part>.<handler>`` hears ``kinds`` (None: every kind but ``exclude``); of
    ``message`` events, those of the message ``ids`` when given."""

    part: str
    handler: str
    kinds: tuple[str, ...] | None
    exclude: tuple[str, ...] = ()
    ids: tuple[str, ...] | None = None

    def describe(self) -> str:
        if self.ids is not None:
            return f"`{RECEIVED}` of " + ", ".join(f"`{message_id}`" for message_id in self.ids)
        if self.kinds is not None:
            return ", ".join(f"`{kind}`" for kind in self.kinds)
        if not self.exclude:
            return "every kind"
        return "every kind but " + ", ".join(f"`{kind}`" for kind in self.exclude)


SUBSCRIPTIONS: Final = (
    # State first: what the event changed is kept before anyone acts on it.
    Subscription("views", "on_event", None),
    Subscription("recorder", "on_received", (RECEIVED,), ids=("PLG",)),
    Subscription("recorder", "on_removed", (HOST_REMOVED,)),
    Subscription("alerting", "on_heartbeat", (RECEIVED,), ids=("HTB",)),
    Subscription("alerting", "on_plugins", (HOST_PLUGINS,)),
    Subscription("alerting", "on_removed", (HOST_REMOVED,)),
    Subscription("signatures", "on_removed", (HOST_REMOVED,)),
    Subscription("jobs", "on_received", (RECEIVED,), ids=("JOB",)),
    Subscription("operations", "on_alert", (ALERT,)),
    Subscription("operations", "on_host_state", (HOST_DOWN, HOST_UNREACHABLE, HOST_UP)),
    Subscription("operations", "on_removed", (HOST_REMOVED,)),
    # Then the records: each event once, in causal order (message, host.*, alert, outcomes).
    Subscription("journal", "record", None, exclude=(HOST_PLUGINS,)),
    Subscription("hub", "publish", None),
    Subscription("status_board", "on_host",
                 (HOST_NEW, HOST_UP, HOST_DOWN, HOST_UNREACHABLE, HOST_REMOVED)),
    Subscription("status_board", "on_maintenance",
                 (MAINTENANCE_CREATED, MAINTENANCE_UPDATED, MAINTENANCE_DELETED,
                  MAINTENANCE_STARTED, MAINTENANCE_ENDED)),
    # Then the actions on the world outside, which report back as events.
    Subscription("notifier", "on_event", NOTIFIED_KINDS),
    Subscription("dns", "on_address", (HOST_ADDRESS,)),
    Subscription("dns", "on_removed", (HOST_REMOVED,)),
)
"""Who hears which event kind, in order: the only place the bus is subscribed to.

Subscribers of one kind hear it in this order; an event they publish waits
until all of them had the one that caused it (``heartbeat.events``). Parts a
config leaves out (no journal, no channels, no dyndomains, no keys) are skipped.
"""


def subscribe_all(bus: EventBus, parts: object,
                  table: Iterable[Subscription] = SUBSCRIPTIONS) -> list[tuple[str, Subscriber]]:
    """Subscribe the attributes of ``parts`` by ``table``, skipping the parts that are None
    or absent; returns what was subscribed as (``part.handler``, subscriber)."""
    done: list[tuple[str, Subscriber]] = []
    for row in table:
        part = getattr(parts, row.part, None)
        if part is None:
            continue
        handler: Subscriber = getattr(part, row.handler)
        bus.subscribe(handler, row.kinds, exclude=row.exclude, ids=row.ids)
        done.append((f"{row.part}.{row.handler}", handler))
    return done


def wire(bus: EventBus, **parts: object) -> list[tuple[str, Subscriber]]:
    """:func:`subscribe_all` for the ``parts`` given by name (tests of a few parts)."""
    return subscribe_all(bus, SimpleNamespace(**parts))


def subscription_table(table: Iterable[Subscription] = SUBSCRIPTIONS) -> str:
    """The table as docs/ARCHITECTURE.md shows it (a test keeps the two equal)."""
    lines = ["| # | subscriber | hears |", "|---|---|---|"]
    for n, row in enumerate(table, 1):
        lines.append(f"| {n} | `{row.part}.{row.handler}` | {row.describe()} |")
    return "\n".join(lines)


def _report_subscriber_error(subscriber: Subscriber, event: Event, error: BaseException) -> None:
    log.error("event bus: {subscriber} failed on {kind} for {host}: {error!r}",
              subscriber=getattr(subscriber, "__qualname__", subscriber), kind=event.kind,
              host=event.host, error=error)


@dataclass(frozen=True)
class Seams:
    """What a test or a fuzzer may swap; everything else is the production code.

    ``worker(name)`` makes each blocking worker (store, journal, password hashing):
    by default a :class:`SerialWorker` thread each, an ``ImmediateWorker`` for an
    in-process run with no threads. ``password_iterations``: the cost of hashes
    the server makes. ``on_error``: how the bus reports a failing subscriber.
    ``max_sources``: the size of the per-source rate table. ``run_in_thread(fn,
    *args)``: where a ``/metrics`` scrape is rendered (default: the reactor's
    thread pool).
    """

    worker: Callable[[str], Worker] | None = None
    run_in_thread: Callable[..., Deferred[Any]] | None = None
    password_iterations: int = ITERATIONS
    on_error: Callable[[Subscriber, Event, BaseException], None] = _report_subscriber_error
    max_sources: int = SOURCE_TABLE_SIZE


@dataclass(eq=False)
class Server:
    """Every part of one server, as :func:`build` made and wired them."""

    settings: ServerSettings
    config: ServerConfig
    reactor: Any
    bus: EventBus
    registry: Registry
    store: StoreService
    recorder: HostRecorder
    auth: AuthService
    web_auth: WebAuth
    journal: JournalService | None
    notifier: NotifierService | None
    dns: DnsService | None
    alerting: AlertingService
    operations: OperationsService
    ingest: IngestProtocol
    signatures: Any
    """The signed-datagram policy (a ``SignaturePolicy``), or None without ``keys``."""
    monitor: MonitorService
    views: HostViews
    """Host objects for the API and the feed, their JSON kept between the host's events."""
    hub: EventHub
    api: HeartbeatAPI
    root: WebRoot
    site: HeartbeatSite
    budget: ConnectionBudget
    status: dict[str, Callable[[], Any]]
    service: ServerService
    leader: LeaderService | None = None
    changes: IService | None = None
    """With a shared store: the listener for other servers' changes (postgres.ChangeListener)."""
    ledger: NoticeLedger | None = None
    """What was notified, with a shared store (None: SQLite, the only server)."""
    subscribed: list[tuple[str, Subscriber]] = field(default_factory=list)
    metrics: MetricsPage | None = None
    status_board: StatusBoard | None = None
    jobs: JobService | None = None
    collector: CollectorService | None = None


class ServerService(MultiService):
    """The top of the tree, its children in dependency order.

    Started first to last; stopped last to first, one at a time, each stop
    awaited before the next begins: listeners, then the monitor and alerting,
    then notifications and DNS with their outcomes, then the journal's last
    flush, then the store's last commit (docs/ARCHITECTURE.md). A port that
    cannot be bound stops start-up with one line.
    """

    def __init__(self, ports: dict[int, str]) -> None:
        super().__init__()
        self.setName("heartbeat")
        self._ports = ports
        self.parts: Server | None = None
        """Every part of the server (set by :func:`build`), for in-process runs."""
        self.stopped: list[str] = []
        """The names of the children in the order they finished stopping."""

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            key = self._ports.get(e.port, "port")
            reason = getattr(e.socketError, "strerror", None) or e.socketError
            raise SystemExit(f"heartbeat: {key}: cannot listen on "
                             f"{hostport(e.interface or '*', e.port)}: {reason}") from None

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        children = [child for child in reversed(list(self)) if child.running]
        done: Deferred[None] = Deferred()

        def next_child(_: object = None) -> None:
            if not children:
                done.callback(None)
                return
            child = children.pop(0)

            def stopped(result: object) -> None:
                if isinstance(result, Failure):
                    log.failure("stopping {service} failed", result, service=child.name)
                self.stopped.append(child.name)
                next_child()

            maybeDeferred(child.stopService).addBoth(stopped)

        next_child()
        return done


def hostport(host: str, port: int | None) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _endpoint(host: str, port: int) -> str:
    interface = host.replace(":", r"\:")
    return f"tcp:port={port}:interface={interface}"


def make_registry(config: ServerConfig, dependencies: DependencyGraph | None = None,
                  flaps: FlapDetector | None = None) -> Registry:
    """The hosts' state machine with the config's timing and resource bounds, the hosts'
    ``parents:`` and the flap detector of their states (None: no flap detection)."""
    return Registry(grace=config.grace, default_interval=config.interval,
                    host_config=config.hosts, command_attempts=config.command_attempts,
                    admission=HostAdmission(config.max_hosts,
                                            config.max_unconfigured_hosts + len(config.hosts)),
                    max_plugins=config.max_plugins, max_plugin_bytes=config.max_plugin_bytes,
                    dependencies=dependencies, flaps=flaps)


def make_flaps(config: ServerConfig) -> FlapDetector | None:
    """One flap detector for host states and metric levels (None: ``flap_detection`` off)."""
    if not config.flap_detection:
        return None
    return FlapDetector(config.flap_low_threshold, config.flap_high_threshold)


def store_path(config: ServerConfig) -> Path:
    return Path(config.state_dir) / STORE_FILE


def open_backend(config: ServerConfig) -> Backend:
    """The store of the config opened and upgraded: PostgreSQL at ``store_url``, else the
    SQLite file in ``state_dir``; one line naming the key if it cannot be."""
    if config.store_url is not None:
        from heartbeat.server import postgres  # noqa: PLC0415 - psycopg only when used

        return postgres.open_store(config)
    path = store_path(config)
    try:
        return open_sqlite(path)
    except SchemaError as e:
        raise SystemExit(f"heartbeat: state_dir: {e}") from None
    except (OSError, sqlite3.Error) as e:
        raise SystemExit(f"heartbeat: state_dir: cannot open the store {path}: {e}") from None


def _store_key(store: StoreService) -> str:
    return "store_url" if store.backend.kind == "postgresql" else "state_dir"


def load_stored(store: StoreService, fn: Read[T], what: str) -> T:
    """``fn`` over the store at start-up; one line naming the store's key if it fails."""
    try:
        return store.load(fn)
    except Exception as e:
        raise SystemExit(f"heartbeat: {_store_key(store)}: cannot read {what} from the store "
                         f"{store.backend.where}: {e}") from None


def make_store(config: ServerConfig, registry: Registry, worker: WorkerFactory,
               reactor: Any) -> StoreService:
    """The store opened and upgraded (one line if it cannot be), its hosts in ``registry``."""
    backend = open_backend(config)
    store = StoreService(backend, worker("heartbeat-store", nice=WORKER_NICE), reactor,
                         config.store_flush_interval,
                         maintenance_period(config.history_retention),
                         reader=worker("heartbeat-store-read"),
                         retry_cap=config.store_retry_cap)
    with collector_paused():  # 600,000 objects at 100,000 hosts: 20 % of the load's CPU
        hosts = load_stored(store, load_hosts, "the hosts")
    registry.restore(hosts, reactor.seconds())
    return store


def restore_history_bytes(store: StoreService, recorder: HostRecorder) -> Deferred[None]:
    """The history's bytes per host (its byte caps) read once the server runs: a pass over
    the whole history (0.2-0.3 s at 100,000 hosts) the API need not wait for. Queued before
    any datagram is taken, so what comes meanwhile is added to it, never counted in it."""
    d = store.read(lambda tables: tables.history_bytes()).addCallback(recorder.restore_bytes)
    d.addErrback(lambda f: log.failure(
        "store: cannot read the history's size; its byte caps count what comes from now", f))
    return d


def make_auth(config: ServerConfig, store: StoreService, hasher: PasswordHasher,
              reactor: Any) -> AuthService:
    """Users and access from the config with the API's stored changes; sessions restored."""
    directory = Directory(config.users, config.hosts, config.default_owner)
    throttle = LoginThrottle(free_attempts=config.login_free_attempts,
                             max_delay=config.login_max_delay)
    service = AuthService(directory, store, hasher, reactor,
                          idle_timeout=config.session_idle_timeout, throttle=throttle,
                          totp_required=config.totp_required)
    service.restore(load_stored(store, load_auth, "users"))
    if service.enabled:
        log.info("auth: {users} users, {sessions} live sessions; default owner {owner}",
                 users=len(directory.users), sessions=len(service.sessions),
                 owner=directory.default_owner)
    else:
        log.info("auth: no users configured: every request is allowed (unauthenticated mode)")
    return service


AUTH_TABLES: Final = frozenset({"users", "host_access", "api_keys", "totp", "auth_settings",
                                "sessions", "*"})
"""What another server changed that this one reloads its auth state for ("*": anything,
after the listener reconnected)."""


def share_auth(auth: AuthService, store: StoreService, worker: WorkerFactory,
               reactor: Any) -> IService | None:
    """With a shared store: sessions read from it on a miss, and a listener reloading
    users, access lists, keys, second factors and sessions when another server changes
    them (docs/HA.md); None with SQLite."""
    if store.backend.kind != "postgresql":
        return None
    from heartbeat.server.postgres import ChangeListener  # noqa: PLC0415 - psycopg when used

    auth.shared = True
    connect: Callable[[str], Any] = getattr(store.backend, "connect")  # noqa: B009
    listener = ChangeListener(lambda: connect("listener"), reactor, worker("heartbeat-listen"))

    def changed(tables: set[str]) -> None:
        if tables & AUTH_TABLES:
            d = store.read(load_auth).addCallback(auth.reload)
            d.addErrback(lambda f: log.failure("auth: reloading what another server changed "
                                               "failed", f))

    listener.on_change(changed)
    return listener


def make_operations(settings: ServerSettings, registry: Registry, engine: ThresholdEngine,
                    flaps: FlapDetector | None, *, store: StoreService, bus: EventBus,
                    reactor: Any, jobs: JobService) -> OperationsService:
    """The books of maintenance windows (the config's and the stored ones), silences and
    acknowledgements, the flap histories and held problems the store kept (a held job
    problem is still there while ``jobs`` says so)."""
    calendar = MaintenanceCalendar(
        tags_of=lambda host: frozenset(registry.config_for(host).tags))
    calendar.restore(settings.maintenance)
    suppression = Suppression(calendar, SilenceBook(), AckBook())
    operations = OperationsService(suppression, bus.publish, store, reactor, registry=registry,
                                   engine=engine, flaps=flaps, default_zone=settings.zone,
                                   jobs=jobs.book)
    operations.restore(load_stored(
        store, load_operations, "the maintenance windows, silences and acknowledgements"))
    operations.attach()
    return operations


def make_alerting(config: ServerConfig, engine: ThresholdEngine, registry: Registry, *,
                  store: StoreService, bus: EventBus, reactor: Any) -> AlertingService:
    """Alerting over ``engine``, with the alert states the store kept (after the flap
    histories: a restored state knows whether it flaps)."""
    engine.restore(load_stored(store, load_alert_states, "the alert states"))
    return AlertingService(engine, bus, store, reactor,
                           watched=lambda host: registry.config_for(host).watch,
                           period=reminder_period(config.threshold_renotify_interval))


def make_ingest(config: ServerConfig, registry: Registry, bus: EventBus, reactor: Any,
                max_sources: int = SOURCE_TABLE_SIZE) -> IngestProtocol:
    """The datagram handler with the protocol limits, source rate and keys of the config."""
    signing = Signing.from_config(config) if config.keys else None  # no keys: no cost
    return IngestProtocol(
        registry, bus, reactor, Limits(config.max_inflated, config.max_depth), IngestStats(),
        rate=SourceRateLimit(config.source_rate, max_sources), signing=signing)


def make_journal(config: ServerConfig, worker: WorkerFactory,
                 reactor: Any) -> JournalService | None:
    if not config.journal_enabled:
        return None
    journal = JournalFile(Path(config.journal_dir), config.journal_file,
                          config.journal_max_size, config.journal_max_backups)
    try:  # before the reactor runs, as the store: a journal that cannot open is a config error
        journal.open()
        journal.close()
    except OSError as e:
        raise SystemExit(
            f"heartbeat: journal_dir: cannot open the journal {journal.path}: {e}") from None
    return JournalService(journal, worker("heartbeat-journal", nice=WORKER_NICE), reactor,
                          config.journal_flush_interval, reader=worker("heartbeat-journal-read"))


def make_channels(config: ServerConfig, reactor: Any) -> tuple[list[Channel], Any]:
    """The notification channels in use, and the HTTP pool the web ones share (or None)."""
    names = channels_in_use(config)
    channels: list[Channel] = []
    if "email" in names:
        # Imported only when used: twisted.mail.smtp resolves the host's FQDN at import.
        from heartbeat.server.notify.email import EmailChannel  # noqa: PLC0415

        try:
            channels.append(EmailChannel(reactor, config.email, config.notify_timeout))
        except (OSError, ValueError) as e:
            raise ca_file_error(config, e) from None
    web = [name for name in names if name != "email"]
    if not web:
        return channels, None
    # Imported only when used: treq and Twisted's HTTP client cost 0.2 s of every start.
    from treq.client import HTTPClient  # noqa: PLC0415
    from twisted.web.client import Agent, HTTPConnectionPool  # noqa: PLC0415

    from heartbeat.server.notify.mattermost import MattermostChannel  # noqa: PLC0415
    from heartbeat.server.notify.pushover import PushoverChannel  # noqa: PLC0415
    from heartbeat.server.notify.signal import SignalChannel  # noqa: PLC0415

    pool = HTTPConnectionPool(reactor, persistent=True)
    http = HTTPClient(Agent(reactor, pool=pool, connectTimeout=config.notify_timeout))
    for name in web:
        if name == "pushover":
            channels.append(PushoverChannel(http, config.pushover))
        elif name == "mattermost":
            channels.append(MattermostChannel(http, config.mattermost))
        elif name == "signal":
            channels.append(SignalChannel(http, config.signal))
    return channels, pool


def make_notifier(config: ServerConfig, bus: EventBus, reactor: Any,
                  suppression: Suppression | None = None, *,
                  store: StoreService | None = None, leader: LeaderService | None = None,
                  ledger: NoticeLedger | None = None,
                  directory: Directory | None = None) -> NotifierService | None:
    """The channels in use (None: none); with a shared store, only the leader sends.
    Recipients come from ``directory``, the users and access lists the API changes."""
    channels, pool = make_channels(config, reactor)
    if not channels:
        return None
    log.info("notify: channels {channels}", channels=", ".join(c.name for c in channels))
    shared = store is not None and leader is not None and ledger is not None
    return NotifierService(
        channels, Router(config, [c.name for c in channels], directory), reactor, bus,
        settings=NotifySettings.from_config(config), pool=pool, suppression=suppression,
        leader=leader if shared else None, ledger=ledger if shared else None,
        marks=(lambda: store.read(read_marks)) if store is not None and shared else None)


def make_leader(config: ServerConfig, store: StoreService, worker: WorkerFactory,
                reactor: Any) -> tuple[LeaderService, NoticeLedger | None]:
    """Who leads: with a shared (PostgreSQL) store, whoever holds the advisory lock, and the
    ledger of what was notified (its marks written with the store's batches); with SQLite,
    this server, and no ledger."""
    node = node_name(config)
    backend = store.backend
    if backend.kind != "postgresql":
        return LeaderService(node, reactor), None
    connect: Callable[[str], Any] = getattr(backend, "connect")  # noqa: B009 - PostgresBackend
    leader = LeaderService(node, reactor, session=LockSession(lambda: connect("leader")),
                           worker=worker("heartbeat-leader"), interval=config.leader_interval,
                           before_release=store.flush)
    ledger = NoticeLedger()
    store.add_source(lambda: write_marks(ledger, node))
    store.add_maintenance(prune_marks(ledger.keep))
    return leader, ledger


def follow_leader(server: Server) -> None:
    """With a shared store: the notifier, DNS, the commands and the changes of maintenance
    windows, silences and acknowledgements act only while leading; taking over, each
    catches up on what the last leader left (docs/HA.md)."""
    leader, registry, store = server.leader, server.registry, server.store
    if leader is None or leader.session is None:
        return
    registry.dispatching = False

    def commands(leading: bool) -> Deferred[None] | None:
        registry.dispatching = False
        if not leading:
            return None

        def take(pending: dict[str, Any]) -> None:
            if leader.leading:
                count = registry.take_over_commands(pending)
                log.info("leader: dispatching {count} queued command(s)", count=count)

        return store.read(load_commands).addCallback(take)

    leader.on_change(commands)
    server.operations.leading = False
    leader.on_change(server.operations.lead)
    if server.notifier is not None:
        leader.on_change(server.notifier.lead)
    if server.dns is not None:
        server.dns.leader = leader
        leader.on_change(server.dns.lead)


def ca_file_error(config: ServerConfig, error: Exception) -> SystemExit:
    return SystemExit(f"heartbeat: email.ca_file: cannot load {config.email.ca_file}: {error}")


def check_dns_tools(config: ServerConfig) -> None:
    if not (os.path.isfile(config.nsupdate_bin) and os.access(config.nsupdate_bin, os.X_OK)):
        raise SystemExit(f"heartbeat: nsupdate_bin: {config.nsupdate_bin} is not an "
                         f"executable file (Debian: apt install bind9-dnsutils)")
    key = config.nsupdate_key
    if key is not None and not (os.path.isfile(key) and os.access(key, os.R_OK)):
        raise SystemExit(f"heartbeat: nsupdate_key: cannot read {key}")


def make_dns(config: ServerConfig, registry: Registry, bus: EventBus,
             reactor: Any) -> DnsService | None:
    if not config.dyndomains:
        return None
    check_dns_tools(config)
    return DnsService(reactor, registry, bus, DnsSettings.from_config(config))


def make_websocket_services(config: ServerConfig, hub: EventHub, auth: WebAuth,
                            budget: ConnectionBudget, reactor: Any) -> list[IService]:
    services: list[IService] = []
    if config.ws_port is not None:
        services.append(_listener(reactor, _endpoint(config.hbd_host, config.ws_port),
                                  ConnectionLimit(FeedFactory(hub, auth=auth), budget)))
    if config.wss_port is not None:
        files = wss_files(config)
        if files is None:
            missing = [str(p) for p in _wss_paths(config) if not p.is_file()]
            log.warn("websocket: WSS on port {port} not started: missing {files}",
                     port=config.wss_port, files=", ".join(missing))
        else:
            # TLS inside the connection limit, so the feed sees the TLS transport itself.
            tls = TLSMemoryBIOFactory(tls_options(*files), False, FeedFactory(hub, auth=auth))
            services.append(_listener(reactor, _endpoint(config.hbd_host, config.wss_port),
                                      ConnectionLimit(tls, budget)))
    return services


def _wss_paths(config: ServerConfig) -> tuple[Path, Path]:
    return Path(config.cert_path) / config.wss_pem, Path(config.cert_path) / config.wss_key


def wss_files(config: ServerConfig) -> tuple[Path, Path] | None:
    """The WSS certificate and key when WSS is on and both exist (else it does not start)."""
    cert, key = _wss_paths(config)
    if config.wss_port is None or not (cert.is_file() and key.is_file()):
        return None
    return cert, key


def _listener(reactor: Any, description: str, factory: Any) -> StreamServerEndpointService:
    """A stream listener whose failure to listen aborts start-up instead of being logged."""
    service = StreamServerEndpointService(serverFromString(reactor, description), factory)
    service._raiseSynchronously = True  # as twisted.application.strports.service does
    return service


def templates(config: ServerConfig) -> Templates:
    """The packaged templates with ``templates_dir`` laid over them; unreadable: one line."""
    override = Path(config.templates_dir) if config.templates_dir else None
    try:
        return Templates(override)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SystemExit(f"heartbeat: templates_dir: cannot read the templates: {e}") from None


def make_pages(config: ServerConfig, web_auth: WebAuth, registry: Registry) -> Pages:
    """The web UI, with ``templates_dir`` laid over the packaged templates."""
    return Pages(web_auth, registry, templates(config), heartbeat.__version__)


def tls_options(cert: Path, key: Path) -> CertificateOptions:
    """Server TLS from a PEM certificate chain (leaf first) and a PEM private key."""
    try:
        chain = [Certificate.loadPEM(pem) for pem in
                 re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
                            cert.read_bytes(), re.S)]
        if not chain:
            raise ValueError("no PEM certificate in it")
    except (OSError, ValueError, SSLError, CryptoError) as e:
        raise SystemExit(f"heartbeat: wss_pem: cannot load {cert}: {e}") from None
    try:
        private = PrivateCertificate.loadPEM(key.read_bytes() + chain[0].dumpPEM())
    except (OSError, ValueError, SSLError, CryptoError) as e:
        raise SystemExit(f"heartbeat: wss_key: cannot load {key} for {cert}: {e}") from None
    return CertificateOptions(privateKey=private.privateKey.original,
                              certificate=private.original,
                              extraCertChain=[c.original for c in chain[1:]])


def _status(server: Server) -> dict[str, Callable[[], Any]]:
    """The sections of ``/api/0/status``, one per part that has something to say."""
    journal, budget, site = server.journal, server.budget, server.site
    sources: dict[str, Callable[[], Any]] = {
        "ingest": server.ingest.status,
        "websocket": server.hub.to_json,
        "store": server.store.to_json,
        "auth": server.auth.to_json,
        "alerting": server.alerting.to_json,
        "operations": server.operations.to_json,
        "http": lambda: {**budget.to_json(), "slow_requests": site.slow_requests},
    }
    if server.notifier is not None:
        sources["notify"] = server.notifier.to_json
    if server.dns is not None:
        sources["dns"] = server.dns.to_json
    if journal is not None:
        sources["journal"] = journal.to_json
    if server.metrics is not None:
        sources["metrics"] = server.metrics.to_json
    if server.status_board is not None:
        sources["status_pages"] = server.status_board.to_json
    if server.collector is not None:
        sources["collector"] = server.collector.to_json
    if server.jobs is not None:
        jobs, pings = server.jobs, server.root.pings
        sources["jobs"] = lambda: {**jobs.to_json(), "http": None if pings is None
                                   else pings.to_json()}
    leader, store, changes = server.leader, server.store, server.changes
    if changes is not None:
        sources["store_changes"] = getattr(changes, "to_json")  # noqa: B009 - ChangeListener
    if leader is not None:
        sources["leader"] = lambda: {**leader.to_json(),
                                     "behind_seconds": round(store.behind(), 3)}
    return sources


def make_jobs(settings: ServerSettings, store: StoreService, bus: EventBus,
              reactor: Any) -> JobService:
    """The cron jobs of ``jobs:`` with their stored UUIDs, states and recent runs."""
    return JobService(settings.jobs, store, bus, reactor,
                      retention=settings.config.history_retention,
                      stored=load_stored(store, load_jobs, "the cron jobs"))


def make_status_board(config: ServerConfig, registry: Registry, store: StoreService,
                      reactor: Any, operations: OperationsService) -> StatusBoard:
    """The public status pages of ``status_pages`` and the badges kept in the store; which
    host is in maintenance they ask ``operations``, as the API does."""
    board = StatusBoard(registry, config.status_pages, store, reactor, templates(config),
                        version=heartbeat.__version__,
                        in_maintenance=operations.in_maintenance,
                        in_maintenance_of=operations.in_maintenance_of)
    board.restore(load_stored(store, load_badges, "the badges"))
    return board


def make_metrics(config: ServerConfig, registry: Registry, engine: ThresholdEngine, *,
                 status: Mapping[str, Callable[[], Any]], web_auth: WebAuth, started: float,
                 run_in_thread: Callable[..., Deferred[Any]],
                 store: StoreService, jobs: JobService | None = None) -> MetricsPage | None:
    """``/metrics`` over the same objects ``/api/0/status`` reads (None: metrics.enabled off)."""
    if not config.metrics.enabled:
        return None
    exporter = MetricsExporter(
        registry, engine, status, version=heartbeat.__version__, started=started,
        states=[state.value for state in HostState], named_metrics=engine.named_values,
        run_in_thread=run_in_thread,
        plugin_data=lambda: store.read(partial(read_latest_all, plugins=engine.rules.plugins)),
        max_series=config.metrics.max_series,
        jobs=None if jobs is None else jobs.metric_rows)
    return MetricsPage(exporter, web_auth, parse_networks(config.metrics.allow))


def build(settings: ServerSettings, reactor: Any, *, seams: Seams | None = None) -> Server:
    """Every part of the server for ``settings``, wired, in its service tree (not started).

    Raises ``SystemExit`` with one line for what the config names but cannot be
    used (the store, the journal, nsupdate, templates, the WSS files).
    """
    config = settings.config
    seams = seams or Seams()

    def make_worker(name: str, nice: int = 0) -> Worker:
        """A serial thread (serial.WorkerFactory): only the writers run niced."""
        return seams.worker(name) if seams.worker else SerialWorker(reactor, name, nice)

    bus = EventBus(on_error=seams.on_error)
    flaps = make_flaps(config)
    registry = make_registry(config, settings.dependencies, flaps)
    store = make_store(config, registry, make_worker, reactor)
    run_in_thread = seams.run_in_thread or (
        lambda fn, *args: deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args))
    backend = store.backend
    if isinstance(backend, SqliteBackend) and backend.integrity == "pending":
        store.on_start(lambda: check_integrity(backend, run_in_thread))
    engine = ThresholdEngine(settings.rules, flaps=flaps)
    jobs = make_jobs(settings, store, bus, reactor)
    operations = make_operations(settings, registry, engine, flaps, store=store, bus=bus,
                                 reactor=reactor, jobs=jobs)
    recorder = HostRecorder(registry, store, config.history_retention,
                            config.history_max_samples,
                            max_host_bytes=config.history_max_host_bytes,
                            max_bytes=config.history_max_bytes)
    store.on_start(lambda: restore_history_bytes(store, recorder))
    hasher = PasswordHasher(make_worker("heartbeat-passwords"), seams.password_iterations)
    auth = make_auth(config, store, hasher, reactor)
    listener = share_auth(auth, store, make_worker, reactor)
    if listener is not None:  # a follower lists and applies the leader's windows at once
        getattr(listener, "on_change")(operations.follow)  # noqa: B009 - ChangeListener
    policy = RequestPolicy(config.http_hosts, config.trusted_proxies)
    web_auth = WebAuth(auth, policy)
    journal = make_journal(config, make_worker, reactor)
    leader, ledger = make_leader(config, store, make_worker, reactor)
    notifier = make_notifier(config, bus, reactor, operations.suppression, store=store,
                             leader=leader, ledger=ledger, directory=auth.directory)
    dns = make_dns(config, registry, bus, reactor)
    alerting = make_alerting(config, engine, registry, store=store, bus=bus, reactor=reactor)
    ingest = make_ingest(config, registry, bus, reactor, seams.max_sources)
    monitor = MonitorService(registry, bus, reactor, config.monitor_interval)
    views = HostViews(registry, alerting.engine, operations.annotations, kept=True)
    hub = EventHub(registry, alerts=alerting.engine, clock=reactor, views=views)
    auth.add_revoke_listener(hub.session_ended)
    status: dict[str, Callable[[], Any]] = {}
    status_board = make_status_board(config, registry, store, reactor, operations)
    collector = CollectorService(reactor, max(COLLECT_AT_LEAST, 4 * config.store_flush_interval))
    store.add_after_flush(collector.after_flush)
    api = HeartbeatAPI(registry, store, journal, reactor, status, auth=web_auth, bus=bus,
                       dns_trigger=dns.trigger if dns is not None else None,
                       max_body=config.http_max_body, alerts=alerting.engine, config=config,
                       config_path=settings.path, status_board=status_board,
                       operations=operations, views=views, jobs=jobs)
    metrics = make_metrics(
        config, registry, alerting.engine, status=status, web_auth=web_auth, started=api.started,
        run_in_thread=run_in_thread, store=store, jobs=jobs)
    pings = PingPage(jobs, web_auth, reactor, config.ping_rate)
    root = WebRoot(api, FeedFactory(hub, auth=web_auth), make_pages(config, web_auth, registry),
                   metrics=metrics, status=status_board, pings=pings)
    site_root: IResource = root.app.resource()
    if auth.shared:
        site_root = SessionReadThrough(site_root, auth)
    site = HeartbeatSite(site_root, config.http_idle_timeout, config.http_max_body,
                         config.http_request_timeout, reactor, policy=policy)
    budget = ConnectionBudget(config.http_max_connections, config.http_max_connections_per_ip)

    ports = {config.hb_port: "hb_port", config.hbd_port: "hbd_port"}
    ports.update({p: k for k, p in (("ws_port", config.ws_port), ("wss_port", config.wss_port))
                  if p is not None})
    top = ServerService(ports)
    server = Server(
        settings=settings, config=config, reactor=reactor, bus=bus, registry=registry, store=store,
        recorder=recorder, auth=auth, web_auth=web_auth, journal=journal, notifier=notifier,
        dns=dns, alerting=alerting, operations=operations, ingest=ingest,
        signatures=ingest.signing.policy if ingest.signing is not None else None,
        monitor=monitor, views=views, hub=hub, api=api, root=root, site=site, budget=budget,
        status=status, service=top, metrics=metrics, status_board=status_board, jobs=jobs,
        leader=leader, ledger=ledger, changes=listener, collector=collector)
    top.parts = server
    status.update(_status(server))
    server.subscribed = subscribe_all(bus, server)
    follow_leader(server)

    # Dependency order: each child needs only those before it (stopped in reverse).
    shared = leader if leader.session is not None else None  # SQLite: always the leader
    for service in (collector, store, shared, auth, listener, journal, notifier, dns, alerting,
                    operations, monitor, jobs, status_board):
        if service is not None:
            service.setServiceParent(top)
    make_udp_service(ingest, config.hb_host, config.hb_port, config.udp_rcvbuf,
                     reactor).setServiceParent(top)
    web = _listener(reactor, _endpoint(config.hbd_host, config.hbd_port),
                    ConnectionLimit(site, budget))
    web.setName("web")
    web.setServiceParent(top)
    feeds = make_websocket_services(config, hub, web_auth, budget, reactor)
    for n, feed in enumerate(feeds):
        feed.setName(f"websocket-{n}")
        feed.setServiceParent(top)
    HangupService(reactor).setServiceParent(top)
    return server
