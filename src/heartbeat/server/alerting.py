"""Threshold alerting at the edge: bus events in, ALERT events out, states in the store.

The :class:`~heartbeat.server.thresholds.ThresholdEngine` decides; this service
feeds it the registry's ``host.plugins`` events and the RTT of heartbeats' ``message``
events, publishes what it returns
as ``ALERT`` events and a metric that starts or stops flapping as ``alert.flapping`` (the
journal, the WebSocket feed and the notifier take them from the bus), keeps the alert
states in the store so a restart neither loses nor re-notifies them, and runs the
reminder timer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from heartbeat.events import ALERT, ALERT_FLAPPING, Event, EventBus
from heartbeat.server.store import StoreService
from heartbeat.server.tables import ALERT_STATES, Tables, Write
from heartbeat.server.thresholds.engine import Alert, AlertState, ThresholdEngine
from heartbeat.server.thresholds.rules import Level
from heartbeat.server.timers import periodic, start_timers, stop_timers
from heartbeat.text import json_bytes

__all__ = ["AlertingService", "load_alert_states", "reminder_period"]

log = Logger()



def load_alert_states(tables: Tables) -> list[AlertState]:
    """Every stored alert state, for ``ThresholdEngine.restore`` (at startup, before threads)."""
    states = []
    for row in tables.rows(ALERT_STATES):
        values = dict(zip(ALERT_STATES.columns, row, strict=True))
        values["level"] = Level(values["level"])
        for name in ("value", "threshold_value"):
            values[name] = json.loads(values[name]) if values[name] is not None else None
        states.append(AlertState(**values))
    return states


def _row(state: AlertState) -> tuple[Any, ...]:
    return (state.host, state.metric_path, state.plugin, state.level.value, state.value,
            state.threshold_value, state.operator, state.display, state.since,
            state.last_notified)


def _write_states(tables: Tables, rows: list[tuple[Any, ...]],
                  deletes: list[tuple[str, str]]) -> None:
    """On the store's worker: JSON-encode the values here, off the reactor thread."""
    tables.put(ALERT_STATES, [(*row[:4], json_bytes(row[4]).decode(),
                               json_bytes(row[5]).decode(), *row[6:]) for row in rows])
    tables.delete(ALERT_STATES, deletes)


def reminder_period(renotify_interval: float) -> float:
    """How often to look for due reminders: at most 10 s late, sooner for short intervals."""
    if renotify_interval <= 0:
        return 10.0
    return max(0.05, min(10.0, renotify_interval / 4))


class AlertingService(Service):
    """Feeds the engine from the bus, publishes ALERT events, keeps states stored."""

    name = "alerting"

    def __init__(
        self,
        engine: ThresholdEngine,
        bus: EventBus,
        store: StoreService,
        clock: IReactorTime,
        *,
        watched: Callable[[str], bool] = lambda host: True,
        period: float = 10.0,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.store = store
        self.clock = clock
        self.watched = watched
        """Whether a host's alerts may notify (``hosts.<name>.watch``)."""
        self.period = period
        self._timers = [periodic("alerting reminders", period, self.check_reminders, clock)]
        self.published = 0
        self.reminders_sent = 0
        store.add_source(self._writes)

    def on_heartbeat(self, event: Event) -> None:
        """A ``message`` event: an HTB's ``rtt``, when it reports one (the registry took
        it as ``Host.rtt``). From the message, not an event of its own: a heartbeat's
        one event is the message (issue 16)."""
        message = event.data["message"]
        if message["ID"] != "HTB" or "rtt" not in message:
            return
        alerts = self.engine.evaluate_rtt(event.host, float(message["rtt"]), event.ts)
        if alerts or self.engine.flap_changes:  # else nothing to publish: most heartbeats
            self._publish(alerts)

    def on_plugins(self, event: Event) -> None:
        alerts = self.engine.evaluate_plugins(event.host, event.data["plugins"], event.ts)
        if alerts or self.engine.flap_changes:
            self._publish(alerts)

    def on_removed(self, event: Event) -> None:
        self.engine.forget(event.host)

    def _publish(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            data = alert.to_json()
            if data["notify"] and not self.watched(alert.host):
                data["notify"] = False
            self.published += 1
            if not alert.reminder:
                log.info("alerting: {message}", message=alert.message, host=alert.host,
                         metric_path=alert.metric_path, alert_level=alert.level.value,
                         notify=data["notify"])
            self.bus.publish(Event(ALERT, alert.host, alert.ts, data))
        for change in self.engine.take_flap_changes():
            log.info("alerting: {host} {subject} {what} flapping ({percent:.1f}%)",
                     host=change.host, subject=change.subject, percent=change.percent,
                     what="started" if change.flapping else "stopped")
            self.bus.publish(Event(ALERT_FLAPPING, change.host, change.ts, change.to_json()))

    def check_reminders(self) -> None:
        """One tick of the reminder timer: the reminders due, published."""
        due = [a for a in self.engine.reminders(self.clock.seconds()) if self.watched(a.host)]
        self.reminders_sent += len(due)
        self._publish(due)

    def _writes(self) -> list[Write]:
        upserts, deletes = self.engine.take_dirty()
        if not upserts and not deletes:
            return []
        rows = [_row(state) for state in upserts]
        return [lambda tables: _write_states(tables, rows, deletes)]

    def to_json(self) -> dict[str, Any]:
        return {"active": self.engine.summary(), "published": self.published,
                "reminders": self.reminders_sent}

    def startService(self) -> None:
        super().startService()
        start_timers(self._timers)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return stop_timers(self._timers)
