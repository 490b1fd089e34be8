"""``twistd heartbeat-agent SERVER...``: options, and the one place that wires the agent."""

from __future__ import annotations

import socket
import threading
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

import heartbeat
from heartbeat.agent.commands import CommandRunner
from heartbeat.agent.keys import SigningKey, signing_key
from heartbeat.agent.plugin import (
    Plugin,
    PluginContext,
    PluginScheduler,
    build_plugins,
    discover_plugins,
)
from heartbeat.agent.sender import (
    HeartbeatSender,
    host_boot_time,
    resolve_addresses,
    thread_resolver,
)
from heartbeat.config.agent import AgentConfig, load_agent_config
from heartbeat.config.loader import ConfigError, default_config_path
from heartbeat.hangup import HangupService
from heartbeat.protocol import valid_host_name

__all__ = ["Options", "makeService"]

log = Logger()
CONFIG_NAME = ".hbc.yaml"


class Options(usage.Options):
    synopsis = "[-c FILE] [-b] [-v] SERVER [SERVER...]"
    longdesc = ("Send heartbeats and plugin data to the heartbeat server(s) named on the "
                "command line, and answer their allow-listed commands. Without -c, reads "
                "~/.hbc.yaml if present, else the built-in defaults.")
    optParameters = [
        ["config", "c", None, "YAML configuration file."],
    ]
    optFlags = [
        ["check", None, "Check the configuration and the SERVER names, print a summary "
                        "and exit (SERVER optional)."],
        ["boot", "b", "Send BOOT on start and SHUT on stop."],
        ["verbose", "v", "Log every datagram sent and received."],
        ["syslog", None, "Also log to syslog (facility LOG_DAEMON)."],
    ]

    def opt_version(self) -> None:
        """Print heartbeat's version (and Twisted's) and exit."""
        print(heartbeat.version_line("heartbeat-agent"))  # noqa: T201 - for the terminal
        raise SystemExit(0)

    def parseArgs(self, *servers: str) -> None:
        self["servers"] = list(servers)

    def postOptions(self) -> None:
        path = self["config"] or default_config_path(CONFIG_NAME)
        source = str(path or "<defaults>")
        try:
            config = load_agent_config(path)
            self["plugin_classes"] = discover_plugins(config.plugin_dirs, source)
            # Options are checked now so a bad key stops start-up, not the first tick.
            checked = build_plugins(config, self["plugin_classes"], source,
                                    PluginContext(reactor=None, run_in_thread=_not_running))
            self["key"] = signing_key(config, source)
        except ConfigError as e:
            raise SystemExit(f"heartbeat-agent: config error: {e}") from None
        if not valid_host_name(host_name(config)):
            raise SystemExit(f"heartbeat-agent: config error: {source}: name: this host's name "
                             f"{host_name(config)!r} is not a valid host name; set one")
        self["settings"] = config
        self["config_path"] = str(path) if path else None
        if self["check"]:
            raise SystemExit(check_summary(config, self["config_path"], checked,
                                           self["servers"], self["key"]))
        if not self["servers"]:
            raise usage.UsageError("name at least one SERVER to send heartbeats to")


def check_summary(config: AgentConfig, path: str | None, plugins: list[Plugin],
                  servers: list[str], key: SigningKey | None) -> int:
    """For --check: print what would run and where it would go; 1 if a SERVER is unknown."""
    lines = [f"heartbeat-agent: {path or 'built-in defaults'}: OK; host {host_name(config)}, "
             f"heartbeat every {config.interval:g} s to UDP port {config.hb_port}, "
             + (f"signed with key {key.key_id!r}" if key is not None else "unsigned"),
             "  plugins: " + (", ".join(f"{p.name} ({p.interval:g} s)" for p in plugins)
                              or "none")]
    failed = 0
    for server in servers:
        try:
            addresses = ", ".join(ip for _, ip in resolve_addresses(server, config.hb_port))
            lines.append(f"  server {server}: {addresses}")
        except OSError as e:
            failed += 1
            lines.append(f"  server {server}: cannot resolve: "
                         f"{getattr(e, 'strerror', None) or e}")
    print("\n".join(lines))  # noqa: T201 - the answer to --check is for the terminal
    return 1 if failed else 0


def _not_running(*args: Any) -> Any:
    raise RuntimeError("only for checking options")


def host_name(config: AgentConfig) -> str:
    """The configured name, else this host's name up to the first dot."""
    return config.name or socket.gethostname().split(".")[0] or "localhost"


class PluginThreads(Service):
    """The threads plugins' blocking work runs in, which stopping never waits for.

    The reactor joins its own pool's threads at shutdown, so one collection stuck
    in a read (a hung NFS mount) kept SIGTERM from ever ending the agent. These
    are daemon threads, and the pool is told to stop without waiting for them.
    """

    def __init__(self, size: int = 10) -> None:
        self.pool = ThreadPool(0, size, "heartbeat-plugins")
        self.pool.threadFactory = _daemon_thread  # type: ignore[assignment]

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        threading.Thread(target=self.pool.stop, name="heartbeat-plugins-stop",
                         daemon=True).start()


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)


def make_plugins(config: AgentConfig, classes: dict[str, type[Plugin]], source: str,
                 reactor: Any, threads: PluginThreads) -> list[Plugin]:
    def run_in_thread(function: Any, *args: Any) -> Any:
        return deferToThreadPool(reactor, threads.pool, function, *args)

    context = PluginContext(reactor, run_in_thread, host_name(config))
    return build_plugins(config, classes, source, context)


def make_sender(config: AgentConfig, servers: list[str], reactor: Any, boot: bool,
                verbose: bool, *, key: SigningKey | None = None) -> HeartbeatSender:
    commands = CommandRunner(reactor, config.allowed_commands, config.update_command,
                             config.command_timeout, config.update_timeout)
    sender = HeartbeatSender(
        servers, config.hb_port, host_name(config), config.interval, reactor,
        resolve=thread_resolver(reactor), on_request=commands.handle,
        max_datagram=config.max_datagram,
        batch_delay=config.batch_delay, resolve_interval=config.resolve_interval, boot=boot,
        verbose=verbose, key=key, boot_time=host_boot_time() if boot else None)
    sender.setName("sender")
    return sender


def start_syslog() -> None:
    """Route the log to syslog's LOG_DAEMON facility (twistd's own --syslog uses LOG_USER)."""
    import syslog  # noqa: PLC0415 - POSIX only, and only when asked for

    from twisted.python import log as legacy_log  # noqa: PLC0415
    from twisted.python.syslog import SyslogObserver  # noqa: PLC0415

    legacy_log.addObserver(SyslogObserver("heartbeat-agent", facility=syslog.LOG_DAEMON).emit)


def makeService(options: Options | dict[str, Any], reactor: Any = None) -> MultiService:
    """The agent: a sender and a plugin scheduler that hands it every result."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor  # noqa: PLC0415 - twistd's

        reactor = global_reactor
    config: AgentConfig = options["settings"]
    if options.get("syslog"):
        start_syslog()
    top = MultiService()
    top.setName("heartbeat-agent")
    sender = make_sender(config, options["servers"], reactor, bool(options["boot"]),
                         bool(options["verbose"]), key=options.get("key"))
    sender.setServiceParent(top)
    threads = PluginThreads()
    threads.setName("plugin-threads")
    threads.setServiceParent(top)
    plugins = make_plugins(config, options["plugin_classes"],
                           options["config_path"] or "<defaults>", reactor, threads)
    scheduler = PluginScheduler(plugins, sender.queue_plugin, reactor)
    scheduler.setName("plugins")
    sender.on_boot = scheduler.resend_info
    scheduler.setServiceParent(top)
    HangupService(reactor).setServiceParent(top)
    log.info("heartbeat-agent {name}: to {servers} every {interval:g} s{signed}; plugins: "
             "{plugins}", name=sender.host_name, servers=", ".join(options["servers"]),
             interval=config.interval,
             signed=f", signed with key {sender.key.key_id}" if sender.key else "",
             plugins=", ".join(f"{p.name} ({p.interval:g} s)" for p in plugins) or "none")
    return top
