"""ping_monitor: round-trip times and loss to each configured target, via the system ping."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from heartbeat.agent.plugin import MonitorPlugin, PluginOptions
from heartbeat.agent.process import ProcessResult, run_process
from heartbeat.config.checks import positive
from heartbeat.config.loader import option

_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_LOSS = re.compile(r"([\d.]+)% packet loss")
_RTT = re.compile(r"(?:rtt|round-trip) min/avg/max(?:/(?:mdev|stddev))? = "
                  r"([\d.]+)/([\d.]+)/([\d.]+)(?:/([\d.]+))? ms")


@dataclass(frozen=True)
class PingOptions(PluginOptions):
    hosts: list[str] = option(
        [], doc="targets (names or addresses); the plugin runs only with some")
    count: int = option(3, positive, doc="echo requests per target")
    ping_interval: float = option(
        1.0, positive, doc="seconds between requests (>= 0.2 unless root)")
    ping_timeout: float = option(5.0, positive, doc="seconds to wait for the last reply")
    ping_bin: str = option("ping", doc="the ping program")


def parse_ping(output: str) -> dict[str, Any]:
    """The summary of iputils, BSD or busybox ``ping`` output (RTTs in ms)."""
    data: dict[str, Any] = {"rtt_min": None, "rtt_avg": None, "rtt_max": None,
                            "rtt_mdev": None, "loss_percent": 100.0, "transmitted": 0,
                            "received": 0}
    if summary := _SUMMARY.search(output):
        data["transmitted"], data["received"] = int(summary.group(1)), int(summary.group(2))
    if loss := _LOSS.search(output):
        data["loss_percent"] = float(loss.group(1))
    if rtt := _RTT.search(output):
        data.update(zip(("rtt_min", "rtt_avg", "rtt_max", "rtt_mdev"),
                        (None if v is None else float(v) for v in rtt.groups()), strict=True))
    data["reachable"] = 1 if data["received"] else 0
    return data


def target_result(result: ProcessResult) -> dict[str, Any]:
    data = parse_ping(result.text("stdout"))
    if not data["received"]:
        problem = result.text("stderr").strip() or (
            result.describe() if result.rc else "no reply")
        data["error"] = problem.splitlines()[-1][:300] if problem else "no reply"
    return data


class PingMonitor(MonitorPlugin):
    name = "ping_monitor"
    Options = PingOptions
    options: PingOptions

    @classmethod
    def wants_to_run(cls, options: PluginOptions) -> bool:
        return options.enabled and bool(getattr(options, "hosts", []))

    def argv(self, target: str) -> list[str]:
        o = self.options
        return [o.ping_bin, "-n", "-c", str(o.count), "-i", f"{o.ping_interval:g}",
                "-W", str(math.ceil(o.ping_timeout)), target]

    async def collect(self) -> dict[str, Any]:
        o = self.options
        limit = o.count * o.ping_interval + o.ping_timeout + 2.0
        results = await defer.gatherResults(
            [run_process(self.reactor, self.argv(host), limit) for host in o.hosts])
        return {"targets": {host: target_result(r)
                            for host, r in zip(o.hosts, results, strict=True)}}
