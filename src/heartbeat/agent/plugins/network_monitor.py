"""network_monitor: per-interface counters, errors, drops and connection counts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import psutil

from heartbeat.agent.plugin import MonitorPlugin, PluginOptions
from heartbeat.config.loader import option

COUNTED_STATES = ("ESTABLISHED", "LISTEN", "TIME_WAIT", "CLOSE_WAIT")


@dataclass(frozen=True)
class NetworkOptions(PluginOptions):
    include_loopback: bool = option(False, doc="also report the loopback interface")


def _connections() -> dict[str, int] | None:
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    states = Counter(c.status for c in connections)
    counts = {"total": len(connections)}
    counts.update({state.lower(): states[state] for state in COUNTED_STATES})
    counts["other"] = len(connections) - sum(states[s] for s in COUNTED_STATES)
    return counts


def read_network(include_loopback: bool) -> dict[str, Any]:
    """Blocking: psutil reads /proc/net and /sys/class/net."""
    counters = psutil.net_io_counters(pernic=True)
    stats = psutil.net_if_stats()
    interfaces: dict[str, Any] = {}
    for name, c in sorted(counters.items()):
        stat = stats.get(name)
        if not include_loopback and (name == "lo" or (name.startswith("lo") and stat
                                     and "loopback" in getattr(stat, "flags", ""))):
            continue
        interfaces[name] = {
            "bytes_sent": c.bytes_sent, "bytes_recv": c.bytes_recv,
            "packets_sent": c.packets_sent, "packets_recv": c.packets_recv,
            "errin": c.errin, "errout": c.errout, "dropin": c.dropin, "dropout": c.dropout,
            "is_up": bool(stat.isup) if stat else None,
            "speed_mbps": stat.speed if stat and stat.speed else None,
            "mtu": stat.mtu if stat else None,
        }
    values = list(interfaces.values())
    return {
        "interfaces": interfaces,
        "bytes_sent": sum(i["bytes_sent"] for i in values),
        "bytes_recv": sum(i["bytes_recv"] for i in values),
        "errors_total": sum(i["errin"] + i["errout"] for i in values),
        "dropped": sum(i["dropin"] + i["dropout"] for i in values),
        "connections": _connections(),
    }


class NetworkMonitor(MonitorPlugin):
    name = "network_monitor"
    Options = NetworkOptions
    options: NetworkOptions

    def collect(self) -> Any:
        return self.run_in_thread(read_network, self.options.include_loopback)
