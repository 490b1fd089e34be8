"""disk_monitor: use of each filesystem and the disks' I/O counters."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import psutil

from heartbeat.agent.plugin import MonitorPlugin, PluginOptions
from heartbeat.agent.plugins._units import MB, gb
from heartbeat.config.loader import option

EXCLUDED = ["squashfs", "tmpfs", "devtmpfs", "overlay", "iso9660"]


@dataclass(frozen=True)
class DiskOptions(PluginOptions):
    mountpoints: list[str] | None = option(None, doc="only these (default: physical, and /)")
    exclude_fstypes: list[str] = option(EXCLUDED, doc="filesystem types left out (not for /)")
    per_disk: bool = option(False, doc="also send per-device I/O counters under 'disks'")


def _io(counters: Any) -> dict[str, int]:
    return {"read_bytes": counters.read_bytes, "write_bytes": counters.write_bytes,
            "read_count": counters.read_count, "write_count": counters.write_count,
            "read_time_ms": counters.read_time, "write_time_ms": counters.write_time}


def _partition(mountpoint: str, device: str, fstype: str) -> dict[str, Any]:
    usage = psutil.disk_usage(mountpoint)
    inodes: float | None = None
    try:
        stat = os.statvfs(mountpoint)
        if stat.f_files:
            inodes = round((stat.f_files - stat.f_ffree) / stat.f_files * 100.0, 1)
    except (OSError, AttributeError):
        pass
    return {"device": device, "fstype": fstype, "total_gb": gb(usage.total),
            "used_gb": gb(usage.used), "free_gb": gb(usage.free),
            "free_mb": round(usage.free / MB, 1), "percent": usage.percent,
            "inodes_percent": inodes}


def read_disks(options: DiskOptions) -> dict[str, Any]:
    """Blocking: statvfs every filesystem, read the kernel's disk counters."""
    partitions: dict[str, Any] = {}
    wanted = options.mountpoints
    seen = {p.mountpoint: p for p in psutil.disk_partitions(all=wanted is not None)}
    if wanted is None:
        chosen = [m for m, p in seen.items()
                  if m == "/" or p.fstype not in options.exclude_fstypes]
        if "/" not in seen:
            chosen.insert(0, "/")
    else:
        chosen = list(wanted)
    for mountpoint in chosen:
        part = seen.get(mountpoint)
        try:
            partitions[mountpoint] = _partition(mountpoint, part.device if part else "",
                                                part.fstype if part else "")
        except OSError as e:
            partitions[mountpoint] = {"error": f"{e.strerror or e}"}
    try:
        total = psutil.disk_io_counters()
    except (OSError, RuntimeError):
        total = None
    data: dict[str, Any] = {"partitions": partitions, "io": _io(total) if total else None}
    if options.per_disk:
        try:
            per_disk = psutil.disk_io_counters(perdisk=True) or {}
        except (OSError, RuntimeError):
            per_disk = {}
        data["disks"] = {name: _io(c) for name, c in per_disk.items()}
    return data


class DiskMonitor(MonitorPlugin):
    name = "disk_monitor"
    Options = DiskOptions
    options: DiskOptions

    def collect(self) -> Any:
        return self.run_in_thread(read_disks, self.options)
