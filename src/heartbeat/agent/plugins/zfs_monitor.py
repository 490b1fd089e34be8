"""zfs_monitor: ZFS pool health, capacity, fragmentation, dedup, I/O and vdev errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from heartbeat.agent import zfs
from heartbeat.agent.plugin import MonitorPlugin, PluginOptions, PluginUnavailable
from heartbeat.agent.process import ProcessResult, run_process
from heartbeat.config.loader import option


@dataclass(frozen=True)
class ZfsOptions(PluginOptions):
    zpool_bin: str = option("zpool", doc="the zpool program")
    status: bool = option(True, doc="also run 'zpool status' for vdev errors")


class ZfsMonitor(MonitorPlugin):
    name = "zfs_monitor"
    Options = ZfsOptions
    options: ZfsOptions
    status_flags = ["-p"]

    async def _run(self, *args: str) -> ProcessResult:
        return await run_process(self.reactor, [self.options.zpool_bin, *args], self.timeout)

    async def collect(self) -> dict[str, Any]:
        listed = await self._run("list", "-Hp", "-o", ",".join(zfs.LIST_COLUMNS))
        if listed.error is not None:
            raise PluginUnavailable(listed.error)
        if listed.rc != 0:
            stderr = listed.text("stderr").strip()
            if "/dev/zfs" in stderr or "ZFS modules" in stderr or "kernel module" in stderr:
                raise PluginUnavailable(stderr.splitlines()[0])
            raise RuntimeError(f"zpool list: {stderr or listed.describe()}")
        pools = zfs.parse_list(listed.text())
        iostat: dict[str, Any] = {}
        status: dict[str, zfs.PoolStatus] = {}
        if pools:
            io = await self._run("iostat", "-Hp")
            iostat = zfs.parse_iostat(io.text()) if io.rc == 0 else {}
            if self.options.status:
                status = await self._status()
        merged = zfs.merge_pools(pools, iostat, status)
        return {"pools": merged, "pool_count": len(merged),
                "pools_unhealthy": sum(1 for p in merged.values() if not p["health_ok"])}

    async def _status(self) -> dict[str, zfs.PoolStatus]:
        result = await self._run("status", *self.status_flags)
        if result.rc != 0 and self.status_flags:
            self.status_flags = []  # zpool before 0.8 has no -p
            result = await self._run("status")
        return zfs.parse_status(result.text()) if result.rc == 0 else {}
