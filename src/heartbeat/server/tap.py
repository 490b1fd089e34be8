"""``twistd heartbeat``: options, and the one place that wires the server together."""

from __future__ import annotations

import gc
import os
import re
import socket
import sqlite3
from pathlib import Path
from typing import Any, TextIO

from OpenSSL.crypto import Error as CryptoError
from OpenSSL.SSL import Error as SSLError
from treq.client import HTTPClient
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    globalLogPublisher,
    textFileLogObserver,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import implementer

import heartbeat
from heartbeat.config.loader import ConfigError, default_config_path
from heartbeat.config.server import ServerConfig
from heartbeat.events import HOST_REMOVED, Event, EventBus, Subscriber
from heartbeat.hangup import HangupService
from heartbeat.protocol import Limits
from heartbeat.server.access import Directory
from heartbeat.server.alerting import AlertingService, load_alert_states, reminder_period
from heartbeat.server.auth import AuthService, PasswordHasher, load_auth
from heartbeat.server.dns import DnsService, DnsSettings
from heartbeat.server.ingest import IngestProtocol, IngestStats, make_udp_service
from heartbeat.server.journal import JournalFile, JournalService
from heartbeat.server.limits import SOURCE_TABLE_SIZE, HostAdmission, SourceRateLimit
from heartbeat.server.migrations import SchemaError, inspect_store
from heartbeat.server.monitor import MonitorService
from heartbeat.server.notify import Channel, NotifierService, NotifySettings, Router
from heartbeat.server.notify.mattermost import MattermostChannel
from heartbeat.server.notify.pushover import PushoverChannel
from heartbeat.server.notify.routing import channels_in_use
from heartbeat.server.notify.signal import SignalChannel
from heartbeat.server.registry import Registry
from heartbeat.server.serial import SerialWorker
from heartbeat.server.sessions import LoginThrottle
from heartbeat.server.settings import ServerSettings, load_settings
from heartbeat.server.signing import Signing
from heartbeat.server.store import (
    HostRecorder,
    StoreService,
    load_hosts,
    maintenance_period,
    open_database,
)
from heartbeat.server.thresholds.engine import ThresholdEngine
from heartbeat.server.thresholds.rulebook import RuleBook
from heartbeat.server.web.api import HeartbeatAPI
from heartbeat.server.web.app import ConnectionBudget, ConnectionLimit, HeartbeatSite, WebRoot
from heartbeat.server.web.auth import WebAuth
from heartbeat.server.web.pages import Pages, Templates
from heartbeat.server.web.websocket import EventHub, FeedFactory

__all__ = ["Options", "makeService"]

log = Logger()
CONFIG_NAME = ".hb.yaml"
STORE_FILE = "heartbeat.sqlite3"


class Options(usage.Options):
    synopsis = "[-c FILE]"
    longdesc = ("Receive UDP heartbeats and plugin data, track hosts UP/DOWN, journal every "
                "message and serve the REST API and WebSocket feed. Without -c, reads "
                "~/.hb.yaml if present, else the built-in defaults.")
    optParameters = [
        ["config", "c", None, "YAML configuration file."],
    ]
    optFlags = [
        ["check", None, "Check the configuration, print a summary and exit."],
    ]

    def opt_version(self) -> None:
        """Print heartbeat's version (and Twisted's) and exit."""
        print(heartbeat.version_line())  # noqa: T201 - for the terminal
        raise SystemExit(0)

    def postOptions(self) -> None:
        path = self["config"] or default_config_path(CONFIG_NAME)
        try:
            settings = self["settings"] = load_settings(path)
        except ConfigError as e:
            # One line, not twistd's usage text: the key and the file are what matter.
            raise SystemExit(f"heartbeat: config error: {e}") from None
        if self["check"]:
            check_files(settings.config)
            raise SystemExit(_summary(settings.config, settings.path))


def store_path(config: ServerConfig) -> Path:
    return Path(config.state_dir) / STORE_FILE


def _hostport(host: str, port: int | None) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _summary(config: ServerConfig, path: str | None) -> int:
    try:
        store = inspect_store(store_path(config)).describe()
    except SchemaError as e:
        raise SystemExit(f"heartbeat: state_dir: {e}") from None
    print(  # noqa: T201 - the answer to --check is for the terminal
        f"heartbeat: {path or 'built-in defaults'}: OK; "
        f"UDP {_hostport(config.hb_host, config.hb_port)}, "
        f"HTTP {_hostport(config.hbd_host, config.hbd_port)}, "
        f"{len(config.hosts)} configured hosts\n"
        f"heartbeat: store {store_path(config)}: {store}")
    return 0


def web_url(host: str, port: int) -> str:
    """Where to point a browser at the web UI (a wildcard bind: this host's name)."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname() or "localhost"
    return f"http://{_hostport(host, port)}/"


def _report_subscriber_error(subscriber: Subscriber, event: Event, error: BaseException) -> None:
    log.error("event bus: {subscriber} failed on {kind} for {host}: {error!r}",
              subscriber=getattr(subscriber, "__qualname__", subscriber), kind=event.kind,
              host=event.host, error=error)


def _endpoint(host: str, port: int) -> str:
    interface = host.replace(":", r"\:")
    return f"tcp:port={port}:interface={interface}"


def make_registry(config: ServerConfig) -> Registry:
    """The hosts' state machine with the config's timing and resource bounds."""
    return Registry(grace=config.grace, default_interval=config.interval,
                    host_config=config.hosts, command_attempts=config.command_attempts,
                    admission=HostAdmission(config.max_hosts,
                                            config.max_unconfigured_hosts + len(config.hosts)),
                    max_plugins=config.max_plugins, max_plugin_bytes=config.max_plugin_bytes)


def make_store(config: ServerConfig, registry: Registry, bus: EventBus,
               reactor: Any) -> StoreService:
    path = store_path(config)
    try:
        conn = open_database(path)
        hosts = load_hosts(conn)
    except SchemaError as e:
        raise SystemExit(f"heartbeat: state_dir: {e}") from None
    except (OSError, sqlite3.Error) as e:
        raise SystemExit(f"heartbeat: state_dir: cannot open the store {path}: {e}") from None
    registry.restore(hosts, reactor.seconds())
    store = StoreService(conn, SerialWorker(reactor, "heartbeat-store"), reactor,
                         config.store_flush_interval,
                         maintenance_period(config.history_retention))
    HostRecorder(registry, store, config.history_retention,
                 config.history_max_samples).attach(bus)
    return store


def make_auth(config: ServerConfig, store: StoreService, reactor: Any) -> AuthService:
    """Users and access from the config with the API's stored changes; sessions restored."""
    directory = Directory(config.users, config.hosts, config.default_owner)
    throttle = LoginThrottle(free_attempts=config.login_free_attempts,
                             max_delay=config.login_max_delay)
    service = AuthService(directory, store,
                          PasswordHasher(SerialWorker(reactor, "heartbeat-passwords")),
                          reactor, idle_timeout=config.session_idle_timeout, throttle=throttle)
    try:
        service.restore(load_auth(store.conn))
    except sqlite3.Error as e:
        raise SystemExit(f"heartbeat: state_dir: cannot read users from the store: {e}") from None
    if service.enabled:
        log.info("auth: {users} users, {sessions} live sessions; default owner {owner}",
                 users=len(directory.users), sessions=len(service.sessions),
                 owner=directory.default_owner)
    else:
        log.info("auth: no users configured: every request is allowed (unauthenticated mode)")
    return service


def make_alerting(config: ServerConfig, rules: RuleBook, registry: Registry, *,
                  store: StoreService, bus: EventBus, reactor: Any) -> AlertingService:
    engine = ThresholdEngine(rules)
    try:
        engine.restore(load_alert_states(store.conn))
    except (sqlite3.Error, ValueError) as e:
        raise SystemExit(f"heartbeat: state_dir: cannot read the alert states: {e}") from None
    service = AlertingService(engine, bus, store, reactor,
                              watched=lambda host: registry.config_for(host).watch,
                              period=reminder_period(config.threshold_renotify_interval))
    service.attach()
    return service


def make_ingest(config: ServerConfig, registry: Registry, bus: EventBus, reactor: Any,
                max_sources: int = SOURCE_TABLE_SIZE) -> IngestProtocol:
    """The datagram handler with the protocol limits, resource bounds and keys of the config."""
    signing = Signing.from_config(config) if config.keys else None  # no keys: no cost
    if signing is not None:
        policy = signing.policy
        bus.subscribe(lambda event: policy.forget(event.host), [HOST_REMOVED])
    return IngestProtocol(
        registry, bus, reactor, Limits(config.max_inflated, config.max_depth), IngestStats(),
        rate=SourceRateLimit(config.source_rate, max_sources), signing=signing)


def make_journal(config: ServerConfig, bus: EventBus, reactor: Any) -> JournalService | None:
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
    service = JournalService(journal, SerialWorker(reactor, "heartbeat-journal"), reactor,
                             config.journal_flush_interval)
    service.attach(bus)
    return service


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
            raise _ca_file_error(config, e) from None
    web = [name for name in names if name != "email"]
    if not web:
        return channels, None
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


def make_notifier(config: ServerConfig, bus: EventBus, reactor: Any) -> NotifierService | None:
    channels, pool = make_channels(config, reactor)
    if not channels:
        return None
    notifier = NotifierService(channels, Router(config, [c.name for c in channels]), reactor,
                               NotifySettings.from_config(config), pool)
    notifier.attach(bus)
    log.info("notify: channels {channels}", channels=", ".join(c.name for c in channels))
    return notifier


def _ca_file_error(config: ServerConfig, error: Exception) -> SystemExit:
    return SystemExit(f"heartbeat: email.ca_file: cannot load {config.email.ca_file}: {error}")


def _check_dns_tools(config: ServerConfig) -> None:
    if not (os.path.isfile(config.nsupdate_bin) and os.access(config.nsupdate_bin, os.X_OK)):
        raise SystemExit(f"heartbeat: nsupdate_bin: {config.nsupdate_bin} is not an "
                         f"executable file (Debian: apt install bind9-dnsutils)")
    key = config.nsupdate_key
    if key is not None and not (os.path.isfile(key) and os.access(key, os.R_OK)):
        raise SystemExit(f"heartbeat: nsupdate_key: cannot read {key}")


def _check_directory(key: str, directory: str) -> None:
    """``directory`` is, or can be made, a writable directory (without making it)."""
    path = Path(directory).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = ("is not a directory" if not existing.is_dir()
               else "is not writable" if not os.access(existing, os.W_OK | os.X_OK) else None)
    if problem is not None:
        raise SystemExit(f"heartbeat: {key}: cannot use {path}: {existing} {problem}")


def check_files(config: ServerConfig) -> None:
    """For --check: the files the log, notifications, DNS, pages and WSS need, refused alike.

    A config that --check passes must not then stop the server at start-up.
    """
    _check_directory("state_dir", config.state_dir)
    if config.journal_enabled:
        _check_directory("journal_dir", config.journal_dir)
    if config.dyndomains:
        _check_dns_tools(config)
    if config.logfile:
        _open_logfile(config.logfile).close()
    _templates(config)
    wss_files = _wss_files(config)
    if wss_files is not None:
        tls_options(*wss_files)
    if config.email.ca_file is not None and "email" in channels_in_use(config):
        # Imported only when used: twisted.mail.smtp resolves the host's FQDN at import.
        from heartbeat.server.notify.email import client_tls_options  # noqa: PLC0415

        try:
            client_tls_options(config.email.smtp_host, config.email.ca_file)
        except (OSError, ValueError) as e:
            raise _ca_file_error(config, e) from None


def make_dns(config: ServerConfig, registry: Registry, bus: EventBus,
             reactor: Any) -> DnsService | None:
    if not config.dyndomains:
        return None
    _check_dns_tools(config)
    dns = DnsService(reactor, registry, DnsSettings.from_config(config))
    dns.attach(bus)
    return dns


def make_websocket_services(config: ServerConfig, hub: EventHub, auth: WebAuth,
                            budget: ConnectionBudget, reactor: Any) -> list[IService]:
    services: list[IService] = []
    if config.ws_port is not None:
        services.append(_listener(reactor, _endpoint(config.hbd_host, config.ws_port),
                                  ConnectionLimit(FeedFactory(hub, auth=auth), budget)))
    if config.wss_port is not None:
        files = _wss_files(config)
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


def _wss_files(config: ServerConfig) -> tuple[Path, Path] | None:
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


class ServerService(MultiService):
    """The top of the tree: a port that cannot be bound stops start-up with one line."""

    def __init__(self, ports: dict[int, str]) -> None:
        super().__init__()
        self.setName("heartbeat")
        self._ports = ports

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            key = self._ports.get(e.port, "port")
            reason = getattr(e.socketError, "strerror", None) or e.socketError
            raise SystemExit(f"heartbeat: {key}: cannot listen on "
                             f"{_hostport(e.interface or '*', e.port)}: {reason}") from None


def _templates(config: ServerConfig) -> Templates:
    """The packaged templates with ``templates_dir`` laid over them; unreadable: one line."""
    override = Path(config.templates_dir) if config.templates_dir else None
    try:
        return Templates(override)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SystemExit(f"heartbeat: templates_dir: cannot read the templates: {e}") from None


def make_pages(config: ServerConfig, web_auth: WebAuth, registry: Registry) -> Pages:
    """The web UI, with ``templates_dir`` laid over the packaged templates."""
    return Pages(web_auth, registry, _templates(config), heartbeat.__version__)


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


@implementer(ILogObserver)
class _OncePerEvent:
    """Passes each event to ``observer`` once.

    The observer is added before twistd begins logging, and twistd then replays
    the events logged so far (the start-up lines) to every observer: those
    already seen are skipped until the reactor runs.
    """

    def __init__(self, observer: ILogObserver) -> None:
        self.observer = observer
        self.early: list[LogEvent] | None = []

    def __call__(self, event: LogEvent) -> None:
        if self.early is not None:
            if any(seen is event for seen in self.early):
                return
            self.early.append(event)
        self.observer(event)

    def running(self) -> None:
        self.early = None


def _open_logfile(path: str) -> TextIO:
    try:
        return open(path, "a", encoding="utf-8")
    except OSError as e:
        raise SystemExit(f"heartbeat: logfile: cannot open {path}: {e.strerror}") from None


def add_logfile(path: str, reactor: Any) -> None:
    """Also write the log to ``path`` (the ``logfile`` key); one line if it cannot open."""
    stream = _open_logfile(path)
    observer = _OncePerEvent(textFileLogObserver(stream))
    globalLogPublisher.addObserver(observer)
    reactor.callWhenRunning(observer.running)


def makeService(options: Options | dict[str, Any], reactor: Any = None) -> MultiService:
    """Compose the service tree of docs/ARCHITECTURE.md from the checked config."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor  # noqa: PLC0415 - twistd's

        reactor = global_reactor
    settings: ServerSettings = options["settings"]
    config = settings.config
    if config.logfile:
        add_logfile(config.logfile, reactor)

    ports = {config.hb_port: "hb_port", config.hbd_port: "hbd_port"}
    ports.update({p: k for k, p in (("ws_port", config.ws_port), ("wss_port", config.wss_port))
                  if p is not None})
    top = ServerService(ports)
    bus = EventBus(on_error=_report_subscriber_error)
    registry = make_registry(config)

    store = make_store(config, registry, bus, reactor)
    store.setServiceParent(top)
    auth = make_auth(config, store, reactor)
    auth.setServiceParent(top)
    web_auth = WebAuth(auth)
    journal = make_journal(config, bus, reactor)
    if journal is not None:
        journal.setServiceParent(top)
    notifier = make_notifier(config, bus, reactor)
    if notifier is not None:
        notifier.setServiceParent(top)
    dns = make_dns(config, registry, bus, reactor)
    if dns is not None:
        dns.setServiceParent(top)
    alerting = make_alerting(config, settings.rules, registry, store=store, bus=bus,
                             reactor=reactor)
    alerting.setServiceParent(top)

    ingest = make_ingest(config, registry, bus, reactor)
    make_udp_service(ingest, config.hb_host, config.hb_port, config.udp_rcvbuf,
                     reactor).setServiceParent(top)
    MonitorService(registry, bus, reactor, config.monitor_interval).setServiceParent(top)

    hub = EventHub(registry, alerts=alerting.engine, clock=reactor)
    hub.attach(bus)
    auth.add_revoke_listener(hub.session_ended)
    status_sources = {
        "ingest": ingest.status,
        "websocket": hub.to_json,
        "store": store.to_json,
        "auth": auth.to_json,
        "alerting": alerting.to_json,
    }
    if notifier is not None:
        status_sources["notify"] = notifier.to_json
    if dns is not None:
        status_sources["dns"] = dns.to_json
    if journal is not None:
        status_sources["journal"] = lambda: {
            "lines": journal.journal.lines_written, "rotations": journal.journal.rotations,
            "write_failures": journal.write_failures, "dropped": journal.dropped}
    api = HeartbeatAPI(registry, store, journal, reactor, status_sources, auth=web_auth, bus=bus,
                       dns_trigger=dns.trigger if dns is not None else None,
                       max_body=config.http_max_body, alerts=alerting.engine, config=config,
                       config_path=settings.path)
    root = WebRoot(api, FeedFactory(hub, auth=web_auth), make_pages(config, web_auth, registry))
    site = HeartbeatSite(root.app.resource(), config.http_idle_timeout, config.http_max_body,
                         config.http_request_timeout, reactor)
    budget = ConnectionBudget(config.http_max_connections, config.http_max_connections_per_ip)
    status_sources["http"] = lambda: {**budget.to_json(), "slow_requests": site.slow_requests}
    web = _listener(reactor, _endpoint(config.hbd_host, config.hbd_port),
                    ConnectionLimit(site, budget))
    web.setName("web")
    web.setServiceParent(top)
    for service in make_websocket_services(config, hub, web_auth, budget, reactor):
        service.setServiceParent(top)
    HangupService(reactor).setServiceParent(top)
    # What exists once running (modules, config, restored hosts) lives as long as the
    # process: moved out of the collector's sight, full collections stay short.
    reactor.callWhenRunning(gc.freeze)
    log.info("heartbeat {version}: config {config}; UDP {udp}, web UI {url}, WebSocket {ws}; "
             "{hosts} hosts restored from {state}",
             version=heartbeat.__version__, config=settings.path or "defaults",
             udp=_hostport(config.hb_host, config.hb_port),
             url=web_url(config.hbd_host, config.hbd_port),
             ws=_hostport(config.hbd_host, config.ws_port) if config.ws_port else "off",
             hosts=len(registry), state=config.state_dir)
    return top
