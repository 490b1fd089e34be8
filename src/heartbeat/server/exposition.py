"""The Prometheus exposition of a scrape's :class:`~heartbeat.server.metrics.Snapshot`.

Run on a worker thread: :class:`SnapshotCollector` turns the snapshot into metric
families and ``prometheus_client`` encodes them in the format the scraper's ``Accept``
asks for. Kept apart from :mod:`heartbeat.server.metrics` so that ``prometheus_client``
(about 150 ms of CPU to import) is loaded by the first scrape, not by every start.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from heartbeat.server.metrics import NAGIOS_LEVELS, SERVER_METRICS, NamedMetrics, Snapshot

__all__ = ["SnapshotCollector", "exposition"]


def exposition(snapshot: Snapshot, named_metrics: NamedMetrics, max_series: int,
               accept: str | None) -> tuple[bytes, str]:
    """(body, content type) of ``snapshot`` in the format ``accept`` asks for."""
    encoder, content_type = choose_encoder(accept or "")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, named_metrics, max_series))
    return encoder(registry), content_type


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _leaves(value: Any, path: tuple[str, ...], labels: tuple[str, ...] = ()
            ) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(the keys ``*`` stood for, the value) for every match of ``path`` in ``value``."""
    if not path:
        yield labels, value
        return
    if not isinstance(value, Mapping):
        return
    head, rest = path[0], path[1:]
    if head == "*":
        for key in sorted(value):
            yield from _leaves(value[key], rest, (*labels, str(key)))
    elif head in value:
        yield from _leaves(value[head], rest, labels)


class SnapshotCollector(Collector):
    """A ``prometheus_client`` collector over one :class:`Snapshot` (run off the reactor)."""

    def __init__(self, snapshot: Snapshot, named_metrics: NamedMetrics, max_series: int) -> None:
        self.snapshot = snapshot
        self.named_metrics = named_metrics
        self.max_series = max_series
        self.left_out = 0

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        yield InfoMetricFamily("heartbeat_build", "the server's version",
                               value={"version": snap.version})
        yield GaugeMetricFamily("heartbeat_start_time_seconds",
                                "when the server started (Unix time)", value=snap.started)
        yield from self._hosts()
        yield from self._plugins()
        yield from self._alerts()
        yield from self._jobs()
        if snap.status is not None:
            yield from self._server()

    def _hosts(self) -> Iterator[Metric]:
        snap = self.snapshot
        totals = GaugeMetricFamily("heartbeat_hosts", "hosts by state", labels=["state"])
        counts = dict.fromkeys(snap.states, 0)
        up = GaugeMetricFamily("heartbeat_host_up", "1 if the host is UP, else 0",
                               labels=["host"])
        state = GaugeMetricFamily(
            "heartbeat_host_state",
            "the host's state as a label (UP, DOWN, UNKNOWN, UNREACHABLE); always 1",
            labels=["host", "state"])
        rtt = GaugeMetricFamily("heartbeat_host_rtt_seconds",
                                "the round trip the host last measured to the server",
                                labels=["host"])
        for host in snap.hosts:
            counts[host.state] = counts.get(host.state, 0) + 1
            up.add_metric([host.name], 1.0 if host.state == "UP" else 0.0)
            state.add_metric([host.name, host.state], 1.0)
            if host.rtt is not None:
                rtt.add_metric([host.name], host.rtt / 1000.0)
        for name, count in counts.items():
            totals.add_metric([name], count)
        yield from (totals, up, state, rtt)

    def _plugins(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "heartbeat_plugin_metric",
            "each numeric plugin value a threshold rule names (docs/PROMETHEUS.md)",
            labels=["host", "plugin", "path"])
        room = self.max_series
        left_out = 0
        for host in self.snapshot.hosts:
            if not host.plugins or host.rules is None:
                continue
            for plugin, path, value in self.named_metrics(host.rules, host.plugins):
                if room <= 0:
                    left_out += 1
                    continue
                family.add_metric([host.name, plugin, path], value)
                room -= 1
        self.left_out = left_out
        yield family
        yield GaugeMetricFamily(
            "heartbeat_plugin_metric_series_left_out",
            "plugin metric series not shown this scrape for being over metrics.max_series",
            value=left_out)

    def _alerts(self) -> Iterator[Metric]:
        level = GaugeMetricFamily(
            "heartbeat_alert_level",
            "an active alert's level: 1 WARNING, 2 CRITICAL, 3 UNKNOWN (absent: OK)",
            labels=["host", "metric_path"])
        totals = GaugeMetricFamily("heartbeat_alerts", "active alerts by level",
                                   labels=["level"])
        counts = {"CRITICAL": 0, "WARNING": 0, "UNKNOWN": 0}
        for host, path, name in self.snapshot.alerts:
            level.add_metric([host, path], NAGIOS_LEVELS.get(name, 3))
            counts[name] = counts.get(name, 0) + 1
        for name, count in counts.items():
            totals.add_metric([name], count)
        yield level
        yield totals

    def _jobs(self) -> Iterator[Metric]:
        labels = ["job", "host"]
        level = GaugeMetricFamily("heartbeat_job_level",
                                  "a cron job's level: 0 OK, 1 WARNING, 2 CRITICAL", labels=labels)
        success = GaugeMetricFamily("heartbeat_job_last_success_timestamp_seconds",
                                    "when the job's last successful run ended (Unix time)",
                                    labels=labels)
        took = GaugeMetricFamily("heartbeat_job_last_duration_seconds",
                                 "how long the job's last timed run took", labels=labels)
        due = GaugeMetricFamily("heartbeat_job_next_expected_timestamp_seconds",
                                "when the job's next run should have ended by (Unix time)",
                                labels=labels)
        for job in self.snapshot.jobs:
            names = [job.name, job.host]
            level.add_metric(names, NAGIOS_LEVELS.get(job.level, 3))
            for family, value in ((success, job.last_success), (took, job.last_duration),
                                  (due, job.next_expected)):
                if value is not None:
                    family.add_metric(names, value)
        yield from (level, success, took, due)

    def _server(self) -> Iterator[Metric]:
        status = self.snapshot.status or {}
        for metric in SERVER_METRICS:
            section = status.get(metric.section)
            if section is None:
                continue  # the service is not running (no notifier, no DNS...)
            labels = [] if metric.label is None else [metric.label]
            family: Metric
            if metric.kind == "counter":
                family = CounterMetricFamily(metric.name, metric.doc, labels=labels)
            else:
                family = GaugeMetricFamily(metric.name, metric.doc, labels=labels)
            for keys, value in _leaves(section, metric.path):
                if metric.label is not None and not keys and isinstance(value, Mapping):
                    samples = [([str(k)], v) for k, v in sorted(value.items())]
                else:
                    samples = [(list(keys), value)]
                for label_values, raw in samples:
                    number = _number(raw)
                    if number is not None:
                        family.add_metric(label_values, number)
            if family.samples or metric.label is not None:
                yield family
