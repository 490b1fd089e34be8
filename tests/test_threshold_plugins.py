"""Plugin adapters: what the generic walk learns of a plugin comes through its adapter."""

from __future__ import annotations

from typing import Any

from heartbeat.config.server import ServerConfig
from heartbeat.server.thresholds.engine import ThresholdEngine
from heartbeat.server.thresholds.plugins import ADAPTERS, ZFS, zfs_health_ok
from heartbeat.server.thresholds.rulebook import RuleBook
from heartbeat.server.thresholds.rules import Level


def _engine(adapters: Any = ADAPTERS, **config: Any) -> ThresholdEngine:
    return ThresholdEngine(RuleBook.from_config(ServerConfig(**config), "test.yaml"), adapters)


def test_zfs_health_ok_derives_on_a_copy() -> None:
    """An old client's pool gets health_ok on a copy; the mapping given stays as it was."""
    pool = {"health": " degraded ", "capacity": 10}
    assert (zfs_health_ok(pool), pool) == (
        {"health": " degraded ", "capacity": 10, "health_ok": 0},
        {"health": " degraded ", "capacity": 10})


def test_zfs_health_ok_keeps_what_the_client_sent() -> None:
    """A pool that carries health_ok (or no health text) is returned as it is."""
    sent = {"health": "DEGRADED", "health_ok": 1}
    assert [zfs_health_ok(sent), zfs_health_ok({"health": 3})] == [sent, {"health": 3}]
    assert zfs_health_ok(sent) is sent


def test_adapters_name_only_zfs() -> None:
    """zfs_monitor is the one bundled plugin with an adapter."""
    assert dict(ADAPTERS) == {ZFS: zfs_health_ok}


def test_walk_without_the_adapter_derives_nothing() -> None:
    """The walk knows no plugin by name: without the ZFS adapter an old pool has no health_ok."""
    plugins = {ZFS: {"pools": {"tank": {"health": "FAULTED", "capacity": 10}}}}
    assert _engine(adapters={}).evaluate_plugins("h", plugins, 0.0) == []
    alerts = _engine().evaluate_plugins("h", plugins, 0.0)
    assert [(a.metric_path, a.level, a.value) for a in alerts] == [
        ("zfs_monitor.pools.tank.health_ok", Level.CRITICAL, 0)]


def test_an_adapter_serves_any_plugin_at_every_level() -> None:
    """An adapter registered for a plugin sees each mapping the walk visits, and its
    derived metric is checked by the plugin's rules like a sent one."""
    seen: list[dict[str, Any]] = []

    def total(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(data)
        if "rx" in data and "tx" in data:
            return {**data, "total": data["rx"] + data["tx"]}
        return data

    engine = _engine(adapters={"net": total},
                     thresholds={"net": {"eth0": {"total": {"warning": 100}}}})
    plugins = {"net": {"eth0": {"rx": 70, "tx": 40}}}
    alerts = engine.evaluate_plugins("h", plugins, 0.0)
    assert [(a.metric_path, a.level, a.value) for a in alerts] == [
        ("net.eth0.total", Level.WARNING, 110)]
    assert seen == [{"eth0": {"rx": 70, "tx": 40}}, {"rx": 70, "tx": 40}]
    assert plugins == {"net": {"eth0": {"rx": 70, "tx": 40}}}
