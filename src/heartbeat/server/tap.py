"""``twistd heartbeat``: options, the config check, the log file and ``makeService``.

The server's parts are built and wired in :mod:`heartbeat.server.compose`.
"""

from __future__ import annotations

import gc
import os
import socket
import sys
from pathlib import Path
from typing import Any, TextIO

from twisted.application.service import MultiService
from twisted.internet.task import cooperate
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    globalLogPublisher,
    textFileLogObserver,
)
from twisted.python import usage
from zope.interface import implementer

import heartbeat
from heartbeat.config.loader import ConfigError, default_config_path
from heartbeat.config.server import ServerConfig
from heartbeat.garbage import collector_paused
from heartbeat.server.compose import (
    Seams,
    build,
    ca_file_error,
    check_dns_tools,
    hostport,
    store_path,
    templates,
    tls_options,
    wss_files,
)
from heartbeat.server.migrations import SchemaError, inspect_store
from heartbeat.server.notify.routing import channels_in_use
from heartbeat.server.settings import ServerSettings, load_settings
from heartbeat.server.steady import SteadyClock

__all__ = ["Options", "makeService"]

log = Logger()
CONFIG_NAME = ".hb.yaml"
SWITCH_INTERVAL = 0.001
"""Seconds a thread holding the GIL keeps it once another asks (CPython's default: 0.005).

The reactor thread lets go of the GIL at every system call (a datagram read, an ACK, a
feed frame written); when the store's writer (encoding a batch's rows) or the journal's
thread (rendering lines) took it meanwhile, the reactor waited up to this long, again at
the next call: the feed's flushes, due every 4 ms, came 33 ms apart at p99 with 100
subscribers at 5,000 events/s. At 1 ms the fan-out's p99 came out lower in five paired
runs of five, by 1.4-10 ms (docs/PERFORMANCE.md, "WebSocket fan-out"): small, at no cost
in CPU; the threads' work is the same, in shorter turns."""


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


def _summary(config: ServerConfig, path: str | None) -> int:
    where: object = store_path(config)
    try:
        if config.store_url is not None:
            from heartbeat.server.postgres import inspect_postgres  # noqa: PLC0415

            where = config.store_url
            store = inspect_postgres(config).describe()
        else:
            store = inspect_store(store_path(config)).describe()
    except SchemaError as e:
        key = "state_dir" if config.store_url is None else "store_url"
        raise SystemExit(f"heartbeat: {key}: {e}") from None
    print(  # noqa: T201 - the answer to --check is for the terminal
        f"heartbeat: {path or 'built-in defaults'}: OK; "
        f"UDP {hostport(config.hb_host, config.hb_port)}, "
        f"HTTP {hostport(config.hbd_host, config.hbd_port)}, "
        f"{len(config.hosts)} configured hosts\n"
        f"heartbeat: store {where}: {store}")
    return 0


def web_url(host: str, port: int) -> str:
    """Where to point a browser at the web UI (a wildcard bind: this host's name)."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname() or "localhost"
    return f"http://{hostport(host, port)}/"


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
        check_dns_tools(config)
    if config.logfile:
        _open_logfile(config.logfile).close()
    templates(config)
    wss = wss_files(config)
    if wss is not None:
        tls_options(*wss)
    if config.email.ca_file is not None and "email" in channels_in_use(config):
        # Imported only when used: twisted.mail.smtp resolves the host's FQDN at import.
        from heartbeat.server.notify.email import client_tls_options  # noqa: PLC0415

        try:
            client_tls_options(config.email.smtp_host, config.email.ca_file)
        except (OSError, ValueError) as e:
            raise ca_file_error(config, e) from None


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


def share_the_gil() -> None:
    """The server's process hands the GIL back to the reactor within SWITCH_INTERVAL."""
    sys.setswitchinterval(SWITCH_INTERVAL)


def makeService(options: Options | dict[str, Any], reactor: Any = None,
                seams: Seams | None = None) -> MultiService:
    """The service tree of docs/ARCHITECTURE.md for the checked config (compose.build).

    ``seams``: for in-process runs (tests, the whole-server fuzzer) on a memory reactor.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor  # noqa: PLC0415 - twistd's

        reactor = global_reactor
        # Timers, deadlines and rate windows on a clock a wall-clock step cannot jump
        # (heartbeat.server.steady), before anything of the server is scheduled.
        reactor.seconds = SteadyClock().seconds
        share_the_gil()
    settings: ServerSettings = options["settings"]
    config = settings.config
    if config.logfile:
        add_logfile(config.logfile, reactor)
    with collector_paused():  # what the build makes lives as long as the process
        server = build(settings, reactor, seams=seams)
    # What exists once running (modules, config, restored hosts) lives as long as the
    # process: moved out of the collector's sight, full collections stay short.
    reactor.callWhenRunning(gc.freeze)
    # The host list's text index (q=) built in slices once running, not by the first search.
    reactor.callWhenRunning(cooperate, server.api.text_index.warming(server.registry))
    log.info("heartbeat {version}: config {config}; UDP {udp}, web UI {url}, WebSocket {ws}; "
             "{hosts} hosts restored from {state}",
             version=heartbeat.__version__, config=settings.path or "defaults",
             udp=hostport(config.hb_host, config.hb_port),
             url=web_url(config.hbd_host, config.hbd_port),
             ws=hostport(config.hbd_host, config.ws_port) if config.ws_port else "off",
             hosts=len(server.registry), state=config.state_dir)
    return server.service
