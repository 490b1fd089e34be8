"""filesystem_info: the mounted filesystems (physical ones by default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psutil

from heartbeat.agent.plugin import MonitorPlugin, PluginOptions
from heartbeat.config.loader import option


@dataclass(frozen=True)
class FilesystemOptions(PluginOptions):
    physical_only: bool = option(True, doc="false lists every mount (proc, tmpfs, ...)")


def read_filesystems(physical_only: bool) -> dict[str, Any]:
    """Blocking: psutil reads the mount table."""
    filesystems = {p.mountpoint: {"device": p.device, "fstype": p.fstype, "options": p.opts}
                   for p in psutil.disk_partitions(all=not physical_only)}
    return {"filesystems": filesystems, "count": len(filesystems)}


class FilesystemInfo(MonitorPlugin):
    name = "filesystem_info"
    Options = FilesystemOptions
    options: FilesystemOptions

    def collect(self) -> Any:
        return self.run_in_thread(read_filesystems, self.options.physical_only)
