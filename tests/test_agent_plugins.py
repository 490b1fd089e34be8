"""The plugin framework: scheduling with a Clock, failures, discovery, options, built-ins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from heartbeat.agent.plugin import (
    BUILTIN_PLUGINS,
    InfoPlugin,
    MonitorPlugin,
    PluginContext,
    PluginOptions,
    PluginScheduler,
    PluginUnavailable,
    build_plugins,
    discover_plugins,
)
from heartbeat.agent.plugins.memory_monitor import memory_fields
from heartbeat.agent.zfs import parse_arcstats
from heartbeat.config.agent import AgentConfig
from heartbeat.config.loader import ConfigError, parse_config
from tests.agent_fakes import AgentReactor, sync_threads

FIXTURES = Path(__file__).parent / "fixtures" / "zfs"


def context(reactor: Any) -> PluginContext:
    return PluginContext(reactor, sync_threads, "web1")


class Counting(MonitorPlugin):
    name = "counting"
    interval = 10.0

    def __init__(self, options: PluginOptions, ctx: PluginContext) -> None:
        super().__init__(options, ctx)
        self.calls = 0

    async def collect(self) -> dict[str, Any]:
        self.calls += 1
        return {"n": self.calls}


class Failing(MonitorPlugin):
    name = "failing"
    interval = 10.0

    def collect(self) -> Any:
        raise ValueError("sensor gone")


class Hanging(MonitorPlugin):
    name = "hanging"
    interval = 10.0
    timeout = 3.0

    def collect(self) -> Any:
        return defer.Deferred()


class Facts(InfoPlugin):
    name = "facts"
    interval = 10.0

    def __init__(self, options: PluginOptions, ctx: PluginContext) -> None:
        super().__init__(options, ctx)
        self.calls = 0

    def collect(self) -> Any:
        self.calls += 1
        return {"kernel": "6.1"}


class Missing(MonitorPlugin):
    name = "missing"
    interval = 10.0

    async def collect(self) -> Any:
        raise PluginUnavailable("zpool: not found")


def scheduler(reactor: AgentReactor, *classes: type, **options: Any) -> tuple[
        PluginScheduler, list[tuple[float, str, dict]]]:
    received: list[tuple[float, str, dict]] = []
    plugins = [cls(PluginOptions(**options), context(reactor)) for cls in classes]
    service = PluginScheduler(plugins, lambda n, d: received.append((reactor.seconds(), n, d)),
                              reactor)
    return service, received


def test_each_plugin_runs_on_its_own_interval() -> None:
    """Each plugin's LoopingCall runs at start and every interval of its own."""
    reactor = AgentReactor()
    received: list[tuple[float, str, dict]] = []
    fast = Counting(PluginOptions(interval=5.0), context(reactor))
    slow = type("Slow", (Counting,), {"name": "slow"})(PluginOptions(), context(reactor))
    service = PluginScheduler([fast, slow],
                              lambda n, d: received.append((reactor.seconds(), n, d)), reactor)
    service.startService()
    for _ in range(4):
        reactor.advance(5)
    assert [(t, d) for t, n, d in received if n == "counting"] == [
        (0.0, {"n": 1}), (5.0, {"n": 2}), (10.0, {"n": 3}), (15.0, {"n": 4}), (20.0, {"n": 5})]
    assert [(t, d) for t, n, d in received if n == "slow"] == [
        (0.0, {"n": 1}), (10.0, {"n": 2}), (20.0, {"n": 3})]
    service.stopService()


def test_failure_reported_as_error_and_others_continue() -> None:
    """A collect that raises is sent as {"error": ...}; it and the others keep running."""
    reactor = AgentReactor()
    service, received = scheduler(reactor, Failing, Counting)
    service.startService()
    reactor.advance(10)
    assert received == [(0.0, "failing", {"error": "ValueError: sensor gone"}),
                        (0.0, "counting", {"n": 1}),
                        (10.0, "failing", {"error": "ValueError: sensor gone"}),
                        (10.0, "counting", {"n": 2})]
    service.stopService()


def test_timeout_reported_as_error() -> None:
    """A collect that does not finish within its timeout is reported and retried next time."""
    reactor = AgentReactor()
    service, received = scheduler(reactor, Hanging)
    service.startService()
    reactor.advance(3)
    reactor.advance(7)
    reactor.advance(3)
    assert received == [(3.0, "hanging", {"error": "timed out after 3 s"}),
                        (13.0, "hanging", {"error": "timed out after 3 s"})]
    service.stopService()


def test_busy_thread_skips_the_tick() -> None:
    """While an earlier collection is still stuck in a thread, the next tick says so."""
    reactor = AgentReactor()
    stuck: defer.Deferred[Any] = defer.Deferred()

    class Stuck(MonitorPlugin):
        name = "stuck"
        interval = 10.0
        timeout = 2.0

        def collect(self) -> Any:
            return self.run_in_thread(lambda: None)

    plugin = Stuck(PluginOptions(), PluginContext(reactor, lambda f, *a: stuck))
    received: list[tuple[str, dict]] = []
    service = PluginScheduler([plugin], lambda n, d: received.append((n, d)), reactor)
    service.startService()
    reactor.advance(2)
    reactor.advance(8)
    assert received == [("stuck", {"error": "timed out after 2 s"}),
                        ("stuck", {"error": "the previous collection is still running"})]
    stuck.callback(None)
    assert plugin.threads_busy == 0
    service.stopService()


def test_info_plugin_collected_once_and_resent() -> None:
    """An InfoPlugin is collected once; its data is resent every interval and on request."""
    reactor = AgentReactor()
    service, received = scheduler(reactor, Facts)
    service.startService()
    reactor.advance(10)
    service.resend_info()
    assert received == [(0.0, "facts", {"kernel": "6.1"}), (10.0, "facts", {"kernel": "6.1"}),
                        (10.0, "facts", {"kernel": "6.1"})]
    assert service.plugins[0].calls == 1  # type: ignore[attr-defined]
    service.stopService()


def test_unavailable_reported_once_then_stopped() -> None:
    """A plugin that cannot work here says so once and is not run again."""
    reactor = AgentReactor()
    service, received = scheduler(reactor, Missing)
    service.startService()
    for _ in range(5):
        reactor.advance(10)
    assert received == [(0.0, "missing", {"available": False, "reason": "zpool: not found"})]
    assert not service.loops["missing"].running
    service.stopService()


def test_non_mapping_result_is_an_error() -> None:
    """collect() returning something other than a mapping is reported, not sent as data."""
    reactor = AgentReactor()

    class Wrong(MonitorPlugin):
        name = "wrong"

        def collect(self) -> Any:
            return [1, 2]

    service, received = scheduler(reactor, Wrong)
    service.startService()
    assert received == [(0.0, "wrong", {"error": "collect() returned list, not a mapping"})]
    service.stopService()


def test_delay_postpones_first_run() -> None:
    """The delay option moves the first collection later; stop cancels a pending start."""
    reactor = AgentReactor()
    service, received = scheduler(reactor, Counting, delay=4.0)
    service.startService()
    reactor.advance(4)
    assert received == [(4.0, "counting", {"n": 1})]
    service.stopService()
    other, _ = scheduler(reactor, Counting, delay=4.0)
    other.startService()
    other.stopService()
    assert reactor.getDelayedCalls() == []


def test_builtins_all_discovered() -> None:
    """The loader finds all nine built-in plugins by name."""
    assert sorted(discover_plugins([], "cfg")) == sorted(BUILTIN_PLUGINS)
    assert len(BUILTIN_PLUGINS) == 9


def test_custom_plugin_loaded_from_plugin_dirs(tmp_path: Path) -> None:
    """A *.py in plugin_dirs is loaded; its options come from plugins.NAME and run it."""
    (tmp_path / "queue.py").write_text(
        "import os\n"
        "from dataclasses import dataclass\n"
        "from heartbeat.agent.plugin import MonitorPlugin, PluginOptions, option\n"
        "@dataclass(frozen=True)\n"
        "class QueueOptions(PluginOptions):\n"
        "    spool: str = option('/nonexistent', doc='directory to count')\n"
        "class Queue(MonitorPlugin):\n"
        "    name = 'queue_depth'\n"
        "    interval = 60\n"
        "    Options = QueueOptions\n"
        "    async def collect(self):\n"
        "        depth = await self.run_in_thread(lambda: len(os.listdir(self.options.spool)))\n"
        "        return {'depth': depth}\n")
    spool = tmp_path / "spool"
    for n in range(3):
        (spool / f"item{n}").mkdir(parents=True)
    classes = discover_plugins([str(tmp_path)], "cfg")
    config = parse_config(AgentConfig, "plugins:\n  queue_depth: {interval: 7, spool: "
                          f"{spool}}}\n", "cfg")
    reactor = AgentReactor()
    plugins = {p.name: p for p in build_plugins(config, classes, "cfg", context(reactor))}
    assert plugins["queue_depth"].interval == 7.0
    assert plugins["cpu_monitor"].interval == 300.0
    received: list[tuple[str, dict]] = []
    PluginScheduler([plugins["queue_depth"]], lambda n, d: received.append((n, d)),
                    reactor).startService()
    assert received == [("queue_depth", {"depth": 3})]
    reactor.advance(7)
    assert received[-1] == ("queue_depth", {"depth": 3}) and len(received) == 2
    for call in reactor.getDelayedCalls():
        call.cancel()


def test_broken_custom_plugin_is_a_config_error(tmp_path: Path) -> None:
    """A plugin file that fails to import stops start-up with one line naming it."""
    (tmp_path / "bad.py").write_text("import no_such_module_here\n")
    with pytest.raises(ConfigError) as e:
        discover_plugins([str(tmp_path)], "/etc/hbc.yaml")
    assert str(e.value) == (f"/etc/hbc.yaml: plugin_dirs: {tmp_path / 'bad.py'}: "
                            "ModuleNotFoundError: No module named 'no_such_module_here'")


def test_custom_plugin_without_collect_is_a_config_error(tmp_path: Path) -> None:
    """A plugin class that forgets collect() is refused when loaded, not at its first run."""
    (tmp_path / "lazy.py").write_text(
        "from heartbeat.agent.plugin import MonitorPlugin\n\n"
        "class Lazy(MonitorPlugin):\n    name = 'lazy'\n")
    with pytest.raises(ConfigError) as e:
        discover_plugins([str(tmp_path)], "/etc/hbc.yaml")
    assert str(e.value) == ("/etc/hbc.yaml: plugin_dirs: plugin 'lazy' "
                            "(heartbeat_custom_plugins.lazy) does not define collect()")


@pytest.mark.parametrize(("text", "message"), [
    ("plugins:\n  cpu_monitr: {}\n",
     "f.yaml: plugins.cpu_monitr: no such plugin (did you mean 'plugins.cpu_monitor'?)"),
    ("plugins:\n  cpu_monitor: {per_cor: true}\n",
     "f.yaml: plugins.cpu_monitor.per_cor: unknown key (did you mean "
     "'plugins.cpu_monitor.per_core'?)"),
    ("plugins:\n  disk_monitor: {interval: 0}\n",
     "f.yaml: plugins.disk_monitor.interval: must be greater than 0, got 0.0"),
    ("plugins:\n  nagios_runner: {commands: [{name: x}]}\n",
     "f.yaml: plugins.nagios_runner.commands: entry 0 needs both a name and a command"),
])
def test_bad_plugin_options_name_the_key(text: str, message: str) -> None:
    """Bad plugin options are a ConfigError naming the file and the full key."""
    config = parse_config(AgentConfig, text, "f.yaml")
    with pytest.raises(ConfigError) as e:
        build_plugins(config, discover_plugins([], "f.yaml"), "f.yaml", context(None))
    assert str(e.value) == message


def test_default_plugin_set() -> None:
    """By default every plugin runs but ping and nagios, which need targets; all at 300 s."""
    plugins = build_plugins(AgentConfig(), discover_plugins([], "x"), "x", context(None))
    assert {p.name: p.interval for p in plugins} == {
        "os_info": 300.0, "cpu_monitor": 300.0, "memory_monitor": 300.0,
        "disk_monitor": 300.0, "network_monitor": 300.0, "filesystem_info": 300.0,
        "zfs_monitor": 300.0}
    config = parse_config(AgentConfig, "plugins:\n  cpu_monitor: {enabled: false}\n"
                          "  ping_monitor: {hosts: [127.0.0.1]}\n", "x")
    names = {p.name for p in build_plugins(config, discover_plugins([], "x"), "x",
                                           context(None))}
    assert "cpu_monitor" not in names and "ping_monitor" in names


GIB = 1024 ** 3


def test_memory_counts_reclaimable_arc_as_available() -> None:
    """With arcstats, ARC above c_min is added to available and percent drops accordingly."""
    arc = parse_arcstats((FIXTURES / "arcstats.txt").read_text())
    memory = {"total": 64 * GIB, "available": 10 * GIB, "used": 50 * GIB, "free": 8 * GIB,
              "buffers": 0, "cached": 2 * GIB}
    swap = {"total": 0, "used": 0, "free": 0, "percent": 0.0}
    data = memory_fields(memory, swap, arc)
    reclaimable = 14960038920 - 1047890560
    assert data["available_mb"] == round((10 * GIB + reclaimable) / 2**20, 1)
    assert data["percent"] == round((64 * GIB - 10 * GIB - reclaimable) / (64 * GIB) * 100, 1)
    assert (data["zfs_arc_mb"], data["zfs_arc_min_mb"], data["zfs_arc_max_mb"]) == (
        round(14960038920 / 2**20, 1), round(1047890560 / 2**20, 1),
        round(32458756096 / 2**20, 1))
    plain = memory_fields(memory, swap, None)
    assert (plain["available_mb"], plain["percent"]) == (10240.0, 84.4)
    assert "zfs_arc_mb" not in plain


def test_memory_old_arcstats_layout() -> None:
    """The ZoL 0.6 arcstats layout (different rows) is read by name."""
    arc = parse_arcstats((FIXTURES / "arcstats-zfs-0.6-node-exporter.txt").read_text())
    assert arc["size"] == 1603939792
    memory = {"total": 8 * GIB, "available": 1 * GIB, "used": 6 * GIB, "free": GIB // 2}
    data = memory_fields(memory, {"total": 0, "used": 0, "free": 0, "percent": 0.0}, arc)
    assert data["zfs_arc_reclaimable_mb"] == round((1603939792 - arc["c_min"]) / 2**20, 1)


def collect_now(name: str, **options: Any) -> dict[str, Any]:
    cls = discover_plugins([], "x")[name]
    reactor = AgentReactor()
    plugin = cls(cls.Options(**options), context(reactor))
    collected = defer.ensureDeferred(_await(plugin.collect()))
    reactor.advance(1.0)  # cpu_monitor's first collection samples over 0.5 s
    return collected.result  # type: ignore[attr-defined]


async def _await(value: Any) -> Any:
    return await value


def test_builtin_system_plugins_report_their_fields() -> None:
    """cpu, memory, disk, network, filesystem and os_info return the documented fields."""
    cpu = collect_now("cpu_monitor")
    assert {"cpu_percent", "per_core", "cpu_count", "load_1min", "load_5min", "load_15min",
            "frequency_mhz", "frequency_min_mhz", "frequency_max_mhz", "process_count",
            "process_running", "process_sleeping", "process_zombie", "thread_count",
            "uptime_seconds", "boot_time"} == set(cpu)
    assert len(cpu["per_core"]) == cpu["cpu_count"]
    memory = collect_now("memory_monitor", arcstats_path="/nonexistent")
    assert {"total_mb", "available_mb", "used_mb", "free_mb", "percent", "buffers_mb",
            "cached_mb", "swap_total_mb", "swap_used_mb", "swap_free_mb",
            "swap_percent"} == set(memory)
    disk = collect_now("disk_monitor", per_disk=True)
    assert set(disk) == {"partitions", "io", "disks"}
    assert {"device", "fstype", "total_gb", "used_gb", "free_gb", "free_mb", "percent",
            "inodes_percent"} == set(disk["partitions"]["/"])
    network = collect_now("network_monitor")
    assert {"interfaces", "bytes_sent", "bytes_recv", "errors_total", "dropped",
            "connections"} == set(network)
    assert "lo" not in network["interfaces"]
    filesystems = collect_now("filesystem_info", physical_only=False)
    assert filesystems["count"] == len(filesystems["filesystems"]) > 0
    info = collect_now("os_info")
    assert info["system"] == "Linux" and info["agent_version"]


def test_example_config_loads_and_shows_the_defaults() -> None:
    """etc/heartbeat-agent.example.yaml is valid and each key it sets is the default."""
    from heartbeat.config.agent import load_agent_config

    root = Path(__file__).resolve().parent.parent
    example = load_agent_config(root / "etc" / "heartbeat-agent.example.yaml")
    defaults = AgentConfig()
    for key in ("hb_port", "interval", "name", "plugin_dirs", "allowed_commands",
                "command_timeout", "update_command", "update_timeout", "max_datagram",
                "batch_delay", "resolve_interval"):
        assert getattr(example, key) == getattr(defaults, key), key
    classes = discover_plugins([], "x")
    for name, options in example.plugins.items():
        cls = classes[name]
        built = cls.Options(**{k: v for k, v in options.items() if k != "interval"})
        assert built == cls.Options(), name
    assert load_agent_config(root / "etc" / "heartbeat-agent.yaml").hb_port == 50003


def test_cpu_monitor_measures_since_its_previous_collection_on_any_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """cpu_percent/per_core cover a 0.5 s first sample, then the time since the last collect.

    psutil keys its own "since last call" state by thread, and the agent's thread pool
    runs each collection on whichever worker is free: the plugin keeps its own sample.
    """
    import threading

    import psutil

    kind = type(psutil.cpu_times())
    fields = len(kind._fields)

    def times(busy: float, idle: float) -> Any:
        return kind._make([busy, 0.0, 0.0, idle] + [0.0] * (fields - 4))

    now: dict[bool, Any] = {}

    def set_times(total: tuple[float, float], cores: list[tuple[float, float]]) -> None:
        now[False], now[True] = times(*total), [times(*core) for core in cores]

    monkeypatch.setattr(psutil, "cpu_times", lambda percpu=False: now[percpu])

    def fresh_thread(function: Any, *args: Any) -> defer.Deferred[Any]:
        out: list[Any] = []
        worker = threading.Thread(target=lambda: out.append(function(*args)))
        worker.start()
        worker.join()
        return defer.succeed(out[0])

    reactor = AgentReactor()
    cls = discover_plugins([], "x")["cpu_monitor"]
    plugin = cls(cls.Options(), PluginContext(reactor, fresh_thread, "web1"))

    set_times((100.0, 100.0), [(50.0, 50.0), (50.0, 50.0)])
    first = defer.ensureDeferred(_await(plugin.collect()))
    set_times((101.0, 103.0), [(1.0 + 50.0, 50.0), (50.0, 52.0 + 50.0)])
    reactor.advance(0.5)
    set_times((131.0, 113.0), [(51.0 + 30.0, 50.0), (50.0, 102.0 + 10.0)])
    second = defer.ensureDeferred(_await(plugin.collect()))
    got = [(d.result["cpu_percent"], d.result["per_core"])  # type: ignore[attr-defined]
           for d in (first, second)]
    assert got == [(25.0, [100.0, 0.0]), (75.0, [100.0, 0.0])]
