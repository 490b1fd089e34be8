"""cpu_monitor: CPU use, load, frequency, process counts and uptime."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psutil
from twisted.internet import defer
from twisted.internet.task import deferLater

from heartbeat.agent.plugin import MonitorPlugin, PluginOptions
from heartbeat.config.loader import option


@dataclass(frozen=True)
class CpuOptions(PluginOptions):
    per_core: bool = option(True, doc="also send each core's use")


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


FIRST_SAMPLE = 0.5
"""Seconds the first collection measures over (later ones: since the previous one)."""

BusyTotal = tuple[float, float]
CpuSample = tuple[BusyTotal, list[BusyTotal]]
"""(busy, total) CPU seconds of the whole machine and of each core."""


def _busy_total(times: Any) -> BusyTotal:
    fields = times._asdict()
    # Linux counts guest time inside user and nice already.
    total = sum(v for k, v in fields.items() if k not in ("guest", "guest_nice"))
    return total - fields["idle"] - fields.get("iowait", 0.0), total


def sample_cpu() -> CpuSample:
    """Blocking: the CPU time counters now.

    Kept by the plugin rather than left to ``psutil.cpu_percent(interval=None)``, whose
    "since the last call" is per thread: the agent's pool runs each collection on any
    free worker, so that would measure a random span (or none: a meaningless 0.0).
    """
    return (_busy_total(psutil.cpu_times()),
            [_busy_total(core) for core in psutil.cpu_times(percpu=True)])


def busy_percent(before: BusyTotal, after: BusyTotal) -> float:
    """CPU busy % between two (busy, total) samples, as hbc_mini computes it."""
    total = after[1] - before[1]
    if total <= 0:
        return 0.0
    return round(max(0.0, min(100.0, 100.0 * (after[0] - before[0]) / total)), 1)


def read_cpu(per_core: bool, now: float, before: CpuSample) -> tuple[dict[str, Any], CpuSample]:
    """Blocking: psutil reads /proc. ``now`` is the reactor's clock, for the uptime.

    Returns the data, with CPU use since ``before``, and the sample to measure from next.
    """
    after = sample_cpu()
    data: dict[str, Any] = {"cpu_percent": busy_percent(before[0], after[0])}
    if per_core:
        data["per_core"] = [busy_percent(b, a) for b, a in zip(before[1], after[1],
                                                               strict=False)]
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
    return data, after


class CpuMonitor(MonitorPlugin):
    name = "cpu_monitor"
    Options = CpuOptions
    options: CpuOptions
    previous: CpuSample | None = None

    def collect(self) -> Any:
        return defer.ensureDeferred(self._collect())

    async def _collect(self) -> dict[str, Any]:
        before = self.previous
        if before is None:
            before = await self.run_in_thread(sample_cpu)
            await deferLater(self.reactor, FIRST_SAMPLE, lambda: None)
        data, self.previous = await self.run_in_thread(
            read_cpu, self.options.per_core, self.reactor.seconds(), before)
        return data
