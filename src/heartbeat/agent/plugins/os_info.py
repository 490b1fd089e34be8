"""os_info: what the host is (OS, kernel, distribution, hardware); collected once."""

from __future__ import annotations

import platform
from typing import Any

import psutil

import heartbeat
from heartbeat.agent.plugin import InfoPlugin
from heartbeat.agent.plugins._units import mb


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _distribution() -> dict[str, Any]:
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        return {"distribution": None, "distribution_id": None, "distribution_version": None}
    return {"distribution": release.get("PRETTY_NAME") or release.get("NAME"),
            "distribution_id": release.get("ID"),
            "distribution_version": release.get("VERSION_ID")}


def read_os_info() -> dict[str, Any]:
    """Blocking: reads /proc and /etc files."""
    uname = platform.uname()
    return {
        "system": uname.system,
        "hostname": uname.node,
        "kernel": uname.release,
        "kernel_version": uname.version,
        "architecture": uname.machine,
        **_distribution(),
        "cpu_model": _cpu_model(),
        "cpu_count": psutil.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "memory_total_mb": mb(psutil.virtual_memory().total),
        "boot_time": psutil.boot_time(),
        "python_version": platform.python_version(),
        "agent_version": heartbeat.__version__,
    }


class OsInfo(InfoPlugin):
    name = "os_info"

    def collect(self) -> Any:
        return self.run_in_thread(read_os_info)
