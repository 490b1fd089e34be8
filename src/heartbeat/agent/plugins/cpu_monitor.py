"""cpu_monitor: CPU use, load, frequency, process counts and uptime."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psutil

from heartbeat.agent.plugin import MonitorPlugin, PluginOptions
from heartbeat.config import _opt


@dataclass(frozen=True)
class CpuOptions(PluginOptions):
    per_core: bool = _opt(True, doc="also send each core's use")


def _frequency() -> dict[str, float | None]:
    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError, RuntimeError):
        freq = None
    if freq is None:
        return {"frequency_mhz": None, "frequency_min_mhz": None, "frequency_max_mhz": None}
    return {"frequency_mhz": round(freq.current, 1),
            "frequency_min_mhz": round(freq.min, 1) or None,
            "frequency_max_mhz": round(freq.max, 1) or None}


def read_cpu(per_core: bool, now: float) -> dict[str, Any]:
    """Blocking: psutil reads /proc. ``now`` is the reactor's clock, for the uptime."""
    data: dict[str, Any] = {"cpu_percent": psutil.cpu_percent(interval=None)}
    if per_core:
        data["per_core"] = psutil.cpu_percent(interval=None, percpu=True)
    load1, load5, load15 = os.getloadavg()
    states: Counter[str] = Counter()
    threads = 0
    for process in psutil.process_iter(["status", "num_threads"]):
        info = process.info
        states[info.get("status") or "unknown"] += 1
        threads += info.get("num_threads") or 0
    boot = psutil.boot_time()
    data.update({
        "cpu_count": psutil.cpu_count(),
        "load_1min": round(load1, 2), "load_5min": round(load5, 2),
        "load_15min": round(load15, 2),
        **_frequency(),
        "process_count": sum(states.values()),
        "process_running": states[psutil.STATUS_RUNNING],
        "process_sleeping": states[psutil.STATUS_SLEEPING] + states[psutil.STATUS_IDLE]
        + states[psutil.STATUS_DISK_SLEEP],
        "process_zombie": states[psutil.STATUS_ZOMBIE],
        "thread_count": threads,
        "uptime_seconds": round(max(0.0, now - boot), 1),
        "boot_time": boot,
    })
    return data


class CpuMonitor(MonitorPlugin):
    name = "cpu_monitor"
    Options = CpuOptions
    options: CpuOptions

    def collect(self) -> Any:
        return self.run_in_thread(read_cpu, self.options.per_core, self.reactor.seconds())
