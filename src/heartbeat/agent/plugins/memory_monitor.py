"""memory_monitor: RAM and swap, counting reclaimable ZFS ARC as available."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from heartbeat.agent.plugin import MonitorPlugin, PluginOptions
from heartbeat.agent.plugins._units import mb
from heartbeat.agent.zfs import parse_arcstats
from heartbeat.config.loader import option

ARCSTATS = "/proc/spl/kstat/zfs/arcstats"


@dataclass(frozen=True)
class MemoryOptions(PluginOptions):
    arcstats_path: str = option(ARCSTATS, doc="where the ZFS ARC statistics are read")


def memory_fields(memory: dict[str, float], swap: dict[str, float],
                  arc: dict[str, int] | None) -> dict[str, Any]:
    """The plugin's data from psutil's numbers (bytes) and parsed arcstats, if any.

    The ARC above ``c_min`` is given back to applications on demand, so it counts
    as available; Linux's own ``available`` does not know that.
    """
    total = memory["total"]
    available = memory["available"]
    data: dict[str, Any] = {}
    if arc and "size" in arc:
        reclaimable = max(0, arc["size"] - arc.get("c_min", 0))
        available = min(total, available + reclaimable)
        data = {"zfs_arc_mb": mb(arc["size"]), "zfs_arc_min_mb": mb(arc.get("c_min", 0)),
                "zfs_arc_max_mb": mb(arc.get("c_max", 0)),
                "zfs_arc_reclaimable_mb": mb(reclaimable)}
    percent = round((total - available) / total * 100.0, 1) if total else 0.0
    return {
        "total_mb": mb(total), "available_mb": mb(available),
        "used_mb": mb(memory.get("used", total - available)), "free_mb": mb(memory["free"]),
        "percent": percent,
        "buffers_mb": mb(memory.get("buffers", 0)), "cached_mb": mb(memory.get("cached", 0)),
        "swap_total_mb": mb(swap["total"]), "swap_used_mb": mb(swap["used"]),
        "swap_free_mb": mb(swap["free"]), "swap_percent": round(swap["percent"], 1),
        **data,
    }


def read_memory(arcstats_path: str) -> dict[str, Any]:
    """Blocking: psutil and the arcstats file."""
    try:
        arc = parse_arcstats(Path(arcstats_path).read_text())
    except OSError:
        arc = None
    return memory_fields(psutil.virtual_memory()._asdict(), psutil.swap_memory()._asdict(), arc)


class MemoryMonitor(MonitorPlugin):
    name = "memory_monitor"
    Options = MemoryOptions
    options: MemoryOptions

    def collect(self) -> Any:
        return self.run_in_thread(read_memory, self.options.arcstats_path)
