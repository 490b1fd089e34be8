"""``GET /metrics``: the server's state in the Prometheus exposition formats.

Nothing here counts anything: a scrape reads the very objects ``/api/0/status``
and ``/api/0/hosts`` read (the registry, the threshold engine and the status
sources of every service), so the two can never disagree. A scrape has two
halves:

1. the latest plugin data of every host is read from the store (decoded on its
   thread: the registry holds none), then on the reactor thread
   :meth:`MetricsExporter.snapshot` copies what else it needs (host states and
   round trips, each host's compiled rules, the active alerts, the status
   sections): a few microseconds per host;
2. on a worker thread, :mod:`heartbeat.server.exposition` turns the snapshot into
   metric families (walking the plugin data with the rules, which is the costly
   part) and ``prometheus_client`` encodes them, in text format 0.0.4 or, when the
   scraper's ``Accept`` asks for it, OpenMetrics 1.0. That module, and with it
   ``prometheus_client`` (some 150 ms of CPU to import), is loaded by the first
   scrape, on its worker thread, not at start-up.

Plugin data a rule names becomes ``heartbeat_plugin_metric{host, plugin,
path}``; the number of those series is bounded by ``max_series`` and what is
left out is counted (docs/PROMETHEUS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

__all__ = [
    "DEFAULT_MAX_SERIES",
    "SERVER_METRICS",
    "MetricsExporter",
    "ServerMetric",
    "Snapshot",
]

DEFAULT_MAX_SERIES: Final = 100_000
NAGIOS_LEVELS: Final = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
"""An alert's level as a number, the Nagios way (Grafana maps them to colours)."""

NamedMetrics = Callable[[Any, Mapping[str, Any]], Iterable[tuple[str, str, float]]]
"""(a host's compiled rules, its latest plugin data) -> (plugin, path, value) per metric
a rule names."""
StatusSource = Callable[[], Mapping[str, Any]]
PluginData = Callable[[], Deferred[Mapping[str, Mapping[str, Any]]]]
"""Every host's latest data per plugin, ``{host: {plugin: data}}``, read from the store."""


@dataclass(frozen=True, slots=True)
class ServerMetric:
    """One of the server's own numbers, read from a section of ``/api/0/status``.

    ``path`` leads to a number, or, with ``label``, to a mapping whose keys
    become that label (``*`` in the path steps into every key of a mapping).
    """

    name: str
    kind: str  # "counter" or "gauge"
    doc: str
    section: str
    path: tuple[str, ...]
    label: str | None = None


SERVER_METRICS: Final = (
    ServerMetric("heartbeat_datagrams_received", "counter", "UDP datagrams received",
                 "ingest", ("received",)),
    ServerMetric("heartbeat_datagrams_accepted", "counter", "UDP datagrams accepted",
                 "ingest", ("accepted",)),
    ServerMetric("heartbeat_datagrams_dropped", "counter",
                 "UDP datagrams dropped, by reason (docs/PROTOCOL.md, docs/SECURITY.md)",
                 "ingest", ("dropped",), "reason"),
    ServerMetric("heartbeat_datagrams_dropped_by_kernel", "counter",
                 "UDP datagrams the kernel dropped before the server read them (its receive "
                 "buffer full: udp_rcvbuf)", "ingest", ("kernel_drops",)),
    ServerMetric("heartbeat_replies_sent", "counter", "ACK, CMD and UPD datagrams sent",
                 "ingest", ("replies",)),
    ServerMetric("heartbeat_reply_errors", "counter", "replies that could not be sent",
                 "ingest", ("reply_errors",)),
    ServerMetric("heartbeat_plugin_data_bytes", "gauge",
                 "bytes of plugin data held (counted against max_plugin_bytes)",
                 "ingest", ("plugin_data", "bytes")),
    ServerMetric("heartbeat_store_commits", "counter", "store write batches committed",
                 "store", ("commits",)),
    ServerMetric("heartbeat_store_failures", "counter", "store write batches that failed",
                 "store", ("failures",)),
    ServerMetric("heartbeat_store_dropped_rows", "counter",
                 "history rows dropped because the disk could not keep up",
                 "store", ("dropped_rows",)),
    ServerMetric("heartbeat_store_queue", "gauge", "store writes waiting for the next commit",
                 "store", ("queued",)),
    ServerMetric("heartbeat_store_isolated_rows", "counter",
                 "rows the database refused on their own, left out so the rest committed",
                 "store", ("isolated_rows",)),
    ServerMetric("heartbeat_store_backlog", "gauge",
                 "rows of failed batches kept for a retry (the disk full or the database gone)",
                 "store", ("backlog",)),
    ServerMetric("heartbeat_store_behind_seconds", "gauge",
                 "how far the store is behind memory while it keeps a batch for a retry",
                 "store", ("behind_seconds",)),
    ServerMetric("heartbeat_leader", "gauge",
                 "1 while this server leads those sharing its store (always with SQLite)",
                 "leader", ("leader",)),
    ServerMetric("heartbeat_leader_changes", "counter",
                 "times this server became or stopped being the leader", "leader", ("changes",)),
    ServerMetric("heartbeat_journal_queue", "gauge", "journal lines waiting to be written",
                 "journal", ("queued",)),
    ServerMetric("heartbeat_journal_lines", "counter", "journal lines written",
                 "journal", ("lines",)),
    ServerMetric("heartbeat_journal_write_failures", "counter", "journal writes that failed",
                 "journal", ("write_failures",)),
    ServerMetric("heartbeat_journal_lost_lines", "counter",
                 "journal lines a failed write (a full disk) did not put on disk whole",
                 "journal", ("lost",)),
    ServerMetric("heartbeat_journal_rotation_failures", "counter",
                 "journal rotations that failed (writing went on in the same file)",
                 "journal", ("rotation_failures",)),
    ServerMetric("heartbeat_journal_dropped", "counter",
                 "journal lines dropped because the disk could not keep up",
                 "journal", ("dropped",)),
    ServerMetric("heartbeat_notifications_sent", "counter", "notifications delivered",
                 "notify", ("channels", "*", "sent"), "channel"),
    ServerMetric("heartbeat_notification_failures", "counter",
                 "notification attempts that failed (each retry counts)",
                 "notify", ("channels", "*", "failed_attempts"), "channel"),
    ServerMetric("heartbeat_notifications_given_up", "counter",
                 "notifications abandoned after their last retry",
                 "notify", ("channels", "*", "gave_up"), "channel"),
    ServerMetric("heartbeat_notifications_dropped", "counter",
                 "notifications dropped on a full queue",
                 "notify", ("channels", "*", "dropped_queue_full"), "channel"),
    ServerMetric("heartbeat_notification_queue", "gauge",
                 "notifications waiting to be sent, per channel",
                 "notify", ("channels", "*", "queued"), "channel"),
    ServerMetric("heartbeat_dns_updates", "counter", "dynamic DNS updates done",
                 "dns", ("updated",)),
    ServerMetric("heartbeat_dns_failures", "counter", "dynamic DNS attempts that failed",
                 "dns", ("failed_attempts",)),
    ServerMetric("heartbeat_dns_queue", "gauge", "hosts waiting for a DNS update",
                 "dns", ("queued",)),
    ServerMetric("heartbeat_websocket_clients", "gauge", "WebSocket feed clients connected",
                 "websocket", ("clients",)),
    ServerMetric("heartbeat_websocket_messages_sent", "counter",
                 "messages sent to WebSocket feed clients", "websocket", ("sent",)),
    ServerMetric("heartbeat_websocket_dropped_clients", "counter",
                 "feed clients dropped for not reading", "websocket", ("dropped_clients",)),
    ServerMetric("heartbeat_http_connections", "gauge", "open HTTP and WebSocket connections",
                 "http", ("open",)),
    ServerMetric("heartbeat_http_refused", "counter",
                 "connections refused over the connection caps", "http", ("refused",)),
    ServerMetric("heartbeat_logins", "counter", "successful logins", "auth", ("logins",)),
    ServerMetric("heartbeat_failed_logins", "counter", "failed logins",
                 "auth", ("failed_logins",)),
    ServerMetric("heartbeat_alert_events", "counter", "alert events published",
                 "alerting", ("published",)),
    ServerMetric("heartbeat_notifications_held", "counter",
                 "notifications not sent, by reason (maintenance, silenced, acknowledged, "
                 "flapping, watch_false, short_down...)",
                 "notify", ("suppressed", "*"), "reason"),
    ServerMetric("heartbeat_maintenance_windows_open", "gauge",
                 "maintenance windows open now (docs/OPERATIONS.md)",
                 "operations", ("open_windows",)),
    ServerMetric("heartbeat_silences_active", "gauge", "silences in force now",
                 "operations", ("silences",)),
    ServerMetric("heartbeat_acknowledgements", "gauge", "problems acknowledged",
                 "operations", ("acknowledgements",)),
    ServerMetric("heartbeat_held_problems", "gauge",
                 "problems whose notice a window or silence holds back, notified once it ends",
                 "operations", ("held",)),
    ServerMetric("heartbeat_flapping", "gauge", "host states and metrics flapping now",
                 "operations", ("flapping",)),
    ServerMetric("heartbeat_job_pings", "counter", "cron-job pings taken (HTTP and UDP)",
                 "jobs", ("pings",)),
    ServerMetric("heartbeat_job_unknown_pings", "counter",
                 "cron-job pings for no job (an unknown UUID or action, a JOB datagram "
                 "from another host without the job's UUID)", "jobs", ("unknown_pings",)),
)
"""The server's own counters and queue depths, each from its ``/api/0/status`` field."""


@dataclass(frozen=True, slots=True)
class HostRow:
    name: str
    state: str
    rtt: float | None
    rules: Any
    plugins: dict[str, Any]
    """The host's latest data per plugin (as read from the store for this scrape)."""


@dataclass(frozen=True, slots=True)
class JobRow:
    """A cron job as a scrape shows it (heartbeat.server.jobs)."""

    name: str
    host: str
    level: str
    last_success: float | None
    last_duration: float | None
    next_expected: float | None


JobRows = Callable[[], Iterable[JobRow]]


@dataclass(slots=True)
class Snapshot:
    """What one scrape shows, copied on the reactor thread."""

    version: str
    started: float
    states: tuple[str, ...]
    hosts: list[HostRow] = field(default_factory=list)
    alerts: list[tuple[str, str, str]] = field(default_factory=list)
    """(host, metric path, level) of every active alert shown."""
    jobs: list[JobRow] = field(default_factory=list)
    """The cron jobs shown (those of the hosts shown; without a host: as a host with no
    entry under hosts:)."""
    status: dict[str, Mapping[str, Any]] | None = None
    """The status sections; None for a scraper who sees only some hosts."""


def format_asked(accept: str | None) -> str:
    """A key equal for two ``Accept`` headers that get the same exposition format.

    Without ``prometheus_client`` (imported by the first render, on its thread): every
    header asking for neither OpenMetrics nor a text format of version 1 or later gets
    the default text format (key ``""``); any other is keyed by its own words, so two
    scrapes share a render only when they would get the same bytes.
    """
    for part in (accept or "").split(","):
        media, *params = (token.strip() for token in part.split(";"))
        if media == "application/openmetrics-text" or (media == "text/plain" and any(
                p.startswith("version=") and not p.startswith("version=0.") for p in params)):
            return (accept or "").strip()
    return ""


class MetricsExporter:
    """Answers scrapes: a snapshot on the reactor thread, families and encoding off it."""

    def __init__(
        self,
        registry: Any,
        engine: Any,
        status_sources: Mapping[str, StatusSource],
        *,
        version: str,
        started: float,
        states: Iterable[str],
        named_metrics: NamedMetrics,
        run_in_thread: Callable[..., Deferred[Any]],
        plugin_data: PluginData,
        max_series: int = DEFAULT_MAX_SERIES,
        jobs: JobRows | None = None,
    ) -> None:
        self.registry = registry
        self.engine = engine
        self.status_sources = status_sources
        self.version = version
        self.started = started
        self.states = tuple(states)
        self.named_metrics = named_metrics
        self.run_in_thread = run_in_thread
        self.plugin_data = plugin_data
        self.max_series = max_series
        self.jobs = jobs
        self.scrapes = 0
        self.shared = 0
        self._in_flight: dict[str, list[Deferred[tuple[bytes, str]]]] = {}

    def snapshot(self, sees: Callable[[str], bool] | None = None,
                 plugin_data: Mapping[str, Mapping[str, Any]] | None = None) -> Snapshot:
        """Copy what a scrape shows; ``sees`` (None: everything) filters hosts and alerts;
        ``plugin_data``: each host's latest data per plugin (read from the store).

        A scraper who sees only some hosts gets no server-wide numbers.
        """
        snap = Snapshot(self.version, self.started, self.states)
        rules_for = self.engine.rules.rules_for
        for host in self.registry:
            name = host.name
            if sees is not None and not sees(name):
                continue
            plugins = dict(plugin_data.get(name, {})) if plugin_data and host.plugins else {}
            snap.hosts.append(HostRow(name, str(host.state.value), host.rtt,
                                      rules_for(name) if plugins else None, plugins))
        snap.hosts.sort(key=lambda h: h.name)
        snap.alerts = [(s.host, s.metric_path, str(s.level.value)) for s in self.engine.states()
                       if sees is None or sees(s.host)]
        if self.jobs is not None:
            snap.jobs = [job for job in self.jobs() if sees is None or sees(job.host)]
        if sees is None:
            snap.status = {section: dict(source())
                           for section, source in self.status_sources.items()}
        return snap

    def encode(self, snapshot: Snapshot, accept: str | None) -> tuple[bytes, str]:
        """The exposition of ``snapshot`` in the format ``accept`` asks for (thread-safe)."""
        from heartbeat.server.exposition import exposition  # noqa: PLC0415 (see the module)

        return exposition(snapshot, self.named_metrics, self.max_series, accept)

    def render(self, accept: str | None, sees: Callable[[str], bool] | None = None
               ) -> Deferred[tuple[bytes, str]]:
        """A scrape: (body, content type).

        Scrapes of everything in the same format while one is being rendered share
        its result (two Prometheus servers of an HA pair, say), so a large fleet is
        never rendered twice at once.
        """
        self.scrapes += 1
        if sees is not None:
            return self._render(accept, sees)
        asked = format_asked(accept)
        waiting = self._in_flight.get(asked)
        if waiting is not None:
            self.shared += 1
            d: Deferred[tuple[bytes, str]] = Deferred()
            waiting.append(d)
            return d
        waiting = self._in_flight[asked] = []

        def done(result: Any) -> Any:
            del self._in_flight[asked]
            for other in waiting:
                if isinstance(result, Failure):
                    other.errback(result)
                else:
                    other.callback(result)
            return result

        return self._render(accept, None).addBoth(done)

    def _render(self, accept: str | None, sees: Callable[[str], bool] | None
                ) -> Deferred[tuple[bytes, str]]:
        """The plugin data from the store, then the snapshot, then families and encoding."""
        return self.plugin_data().addCallback(
            lambda data: self.run_in_thread(self.encode, self.snapshot(sees, data), accept))
