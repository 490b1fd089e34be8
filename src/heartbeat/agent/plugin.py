"""The plugin framework: base classes, discovery, and one schedule per plugin.

A plugin is a class with a ``name``, an ``interval`` and a ``collect()`` that
returns a JSON-able mapping (directly, as a coroutine, or as a Deferred).
:class:`InfoPlugin` data is collected once and resent; :class:`MonitorPlugin`
data is collected every interval. :class:`PluginScheduler` gives each plugin
its own ``LoopingCall``; a collection that raises or times out is reported as
``{"error": ...}`` for that plugin and never stops the others.
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
import inspect
import sys
import types
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from heartbeat.config.agent import AgentConfig
from heartbeat.config.checks import not_negative, positive
from heartbeat.config.loader import ConfigError, option, parse_section

__all__ = [
    "BUILTIN_PLUGINS",
    "InfoPlugin",
    "MonitorPlugin",
    "Plugin",
    "PluginContext",
    "PluginOptions",
    "PluginScheduler",
    "PluginUnavailable",
    "build_plugins",
    "discover_plugins",
    "option",  # the loader's, re-exported: custom plugins declare Options with it (AGENT.md)
]

log = Logger()

BUILTIN_PLUGINS = (
    "os_info", "cpu_monitor", "memory_monitor", "disk_monitor", "network_monitor",
    "filesystem_info", "ping_monitor", "nagios_runner", "zfs_monitor",
)
DEFAULT_INTERVAL = 300.0
DEFAULT_TIMEOUT = 60.0

ThreadRunner = Callable[..., "Deferred[Any]"]
Deliver = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class PluginOptions:
    """Options every plugin accepts under ``plugins.NAME``; subclass to add your own."""

    interval: float | None = option(None, positive, doc="seconds between collections")
    enabled: bool = option(True, doc="false turns the plugin off")
    timeout: float | None = option(None, positive, doc="seconds a collection may take")
    delay: float = option(0.0, not_negative, doc="seconds after start-up before the first run")


@dataclass(frozen=True)
class PluginContext:
    """What a plugin may use: the reactor, a thread runner and the agent's settings."""

    reactor: Any
    run_in_thread: ThreadRunner
    host_name: str = "localhost"


class PluginUnavailable(Exception):
    """Raised by ``collect`` when the plugin cannot work on this host (e.g. no zpool).

    The scheduler sends ``{"available": false, "reason": ...}`` once and stops
    that plugin: no error every interval for a host that simply has no ZFS.
    """


class Plugin(abc.ABC):
    """Base of every plugin; subclass :class:`InfoPlugin` or :class:`MonitorPlugin`."""

    name: ClassVar[str] = ""
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    Options: ClassVar[type[PluginOptions]] = PluginOptions
    collect_once: ClassVar[bool] = False

    def __init__(self, options: PluginOptions, context: PluginContext) -> None:
        self.options = options
        self.context = context
        self.reactor = context.reactor
        self.interval = options.interval or type(self).interval
        self.timeout = options.timeout or type(self).timeout
        self.threads_busy = 0

    @classmethod
    def wants_to_run(cls, options: PluginOptions) -> bool:
        """Whether this plugin runs with these options (some need targets to do anything)."""
        return options.enabled

    def check(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Start-up checks that only warn (e.g. a configured program is missing)."""

    @abc.abstractmethod
    def collect(self) -> Any:
        """Return (or resolve to) this plugin's data: a JSON-able mapping."""

    def run_in_thread(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Run blocking ``function(*args)`` off the reactor thread, counting it as busy.

        The count lets the scheduler skip a tick while an earlier collection is still
        stuck in a thread (a hung NFS mount, say) instead of piling threads up.
        """
        self.threads_busy += 1
        outer: Deferred[Any] = Deferred()

        def finished(result: Any) -> None:
            # The thread ends in its own time; a timeout has cancelled ``outer`` already.
            self.threads_busy -= 1
            if not outer.called:
                if isinstance(result, Failure):
                    outer.errback(result)
                else:
                    outer.callback(result)

        self.context.run_in_thread(function, *args).addBoth(finished)
        return outer


class InfoPlugin(Plugin):
    """Static facts, collected once and resent every interval and on request (BOOT)."""

    collect_once = True


class MonitorPlugin(Plugin):
    """Measurements collected every interval."""


def _plugin_classes(module: types.ModuleType) -> list[type[Plugin]]:
    return [obj for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, Plugin) and obj.name
            and obj.__module__ == module.__name__]


def _load_file(path: Path, source: str) -> types.ModuleType:
    module_name = f"heartbeat_custom_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(source, "plugin_dirs", f"{path}: cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise ConfigError(source, "plugin_dirs",
                          f"{path}: {type(e).__name__}: {e}".splitlines()[0]) from None
    return module


def discover_plugins(plugin_dirs: Sequence[str], source: str) -> dict[str, type[Plugin]]:
    """Every plugin class: the built-ins, then each ``*.py`` in ``plugin_dirs``."""
    found: dict[str, type[Plugin]] = {}
    modules = [importlib.import_module(f"heartbeat.agent.plugins.{name}")
               for name in BUILTIN_PLUGINS]
    for directory in plugin_dirs:
        folder = Path(directory).expanduser()
        if not folder.is_dir():
            raise ConfigError(source, "plugin_dirs", f"{folder}: not a directory")
        modules.extend(_load_file(path, source) for path in sorted(folder.glob("*.py")))
    for module in modules:
        for cls in _plugin_classes(module):
            if inspect.isabstract(cls):
                raise ConfigError(source, "plugin_dirs",
                                  f"plugin {cls.name!r} ({cls.__module__}) does not define "
                                  f"{', '.join(sorted(cls.__abstractmethods__))}()")
            if cls.name in found and found[cls.name] is not cls:
                raise ConfigError(source, "plugin_dirs",
                                  f"two plugins are named {cls.name!r}: "
                                  f"{found[cls.name].__module__} and {cls.__module__}")
            found[cls.name] = cls
    return found


def build_plugins(config: AgentConfig, classes: Mapping[str, type[Plugin]], source: str,
                  context: PluginContext) -> list[Plugin]:
    """The plugins that run with ``config``, their options checked (one-line errors)."""
    import difflib  # noqa: PLC0415 - only for the error message

    for name in config.plugins:
        if name not in classes:
            close = difflib.get_close_matches(name, classes, n=1, cutoff=0.6)
            hint = f" (did you mean 'plugins.{close[0]}'?)" if close else ""
            raise ConfigError(source, f"plugins.{name}", f"no such plugin{hint}")
    plugins = []
    for name, cls in classes.items():
        options = parse_section(cls.Options, config.plugins.get(name, {}), source,
                                f"plugins.{name}.")
        if cls.wants_to_run(options):
            plugins.append(cls(options, context))
    return plugins


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class PluginScheduler(Service):
    """One ``LoopingCall`` per plugin; results (or ``{"error": ...}``) go to ``deliver``."""

    def __init__(self, plugins: Iterable[Plugin], deliver: Deliver, clock: IReactorTime) -> None:
        self.plugins = list(plugins)
        self.deliver = deliver
        self.clock = clock
        self.loops: dict[str, LoopingCall] = {}
        self.info: dict[str, dict[str, Any]] = {}
        self._starts: list[Any] = []

    def startService(self) -> None:
        super().startService()
        for plugin in self.plugins:
            try:
                plugin.check()
            except Exception:
                log.failure("plugin {plugin}: start-up check failed", plugin=plugin.name)
            if plugin.options.delay:
                self._starts.append(self.clock.callLater(plugin.options.delay,
                                                         self._start_loop, plugin))
            else:
                self._start_loop(plugin)

    def _start_loop(self, plugin: Plugin) -> None:
        loop = LoopingCall(self._tick, plugin)
        loop.clock = self.clock
        self.loops[plugin.name] = loop
        loop.start(plugin.interval, now=True).addErrback(
            lambda failure: log.failure("plugin {plugin}: its schedule stopped", failure,
                                        plugin=plugin.name))

    def stopService(self) -> Deferred[None]:
        for call in self._starts:
            if call.active():
                call.cancel()
        self._starts.clear()
        for loop in self.loops.values():
            if loop.running:
                loop.stop()
        super().stopService()
        return defer.succeed(None)

    def resend_info(self) -> None:
        """Send the cached data of every InfoPlugin again (after a BOOT, say)."""
        for name, data in self.info.items():
            self._deliver(name, data)

    def _deliver(self, name: str, data: dict[str, Any]) -> None:
        try:
            self.deliver(name, data)
        except Exception:
            log.failure("plugin {plugin}: delivering its data failed", plugin=name)

    def _tick(self, plugin: Plugin) -> Deferred[None] | None:
        name = plugin.name
        if plugin.collect_once and name in self.info:
            self._deliver(name, self.info[name])
            return None
        if plugin.threads_busy:
            self._deliver(name, {"error": "the previous collection is still running"})
            return None
        try:
            started = plugin.collect()
            if isinstance(started, Deferred):
                result: Deferred[Any] = started
            elif inspect.isawaitable(started):
                result = Deferred.fromCoroutine(_awaited(started))
            else:
                result = defer.succeed(started)
        except Exception:
            result = defer.fail()
        result.addTimeout(plugin.timeout, self.clock)
        return result.addCallbacks(self._collected, self._failed, callbackArgs=(plugin,),
                                   errbackArgs=(plugin,))

    def _collected(self, data: Any, plugin: Plugin) -> None:
        if not isinstance(data, Mapping):
            self._deliver(plugin.name, {
                "error": f"collect() returned {type(data).__name__}, not a mapping"})
            return
        data = dict(data)
        if plugin.collect_once:
            self.info[plugin.name] = data
        self._deliver(plugin.name, data)

    def _failed(self, failure: Failure, plugin: Plugin) -> None:
        name = plugin.name
        if failure.check(PluginUnavailable):
            reason = str(failure.value) or "not available on this host"
            log.info("plugin {plugin}: not available here, stopped: {reason}", plugin=name,
                     reason=reason)
            self._deliver(name, {"available": False, "reason": reason})
            loop = self.loops.get(name)
            if loop is not None and loop.running:
                loop.stop()  # safe mid-call: LoopingCall ends once this tick's Deferred fires
            return
        if failure.check(defer.TimeoutError, defer.CancelledError):
            problem = f"timed out after {plugin.timeout:g} s"
            log.warn("plugin {plugin}: {problem}", plugin=name, problem=problem)
        else:
            problem = f"{type(failure.value).__name__}: {failure.value}".splitlines()[0][:500]
            log.failure("plugin {plugin}: collect failed", failure, plugin=name)
        self._deliver(name, {"error": problem})
