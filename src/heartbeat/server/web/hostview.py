"""A host as the API and the feed show it: the registry's record plus its alert levels.

One object answers both ``GET /api/0/hosts`` and the feed's snapshot, so a page
filled from either shows the same thing (issue 15: a reload shows the same page).

Its JSON can be kept between events (``kept``, :meth:`HostViews.json_bytes`), in
two parts. What only events change (the registry's record with its flapping and
recovery, the alert counts) is encoded once per host and kept until an event
names the host (:meth:`HostViews.on_event`, which hears every kind through
``compose.SUBSCRIPTIONS``) or the registry changes hosts without one
(``Registry.replaced``: a restore, commands taken over from a shared store). The
parts that follow this rule: a registry change of a host comes with its events
(``message``, ``host.*``), a change of its alert counts with an ``alert``. What
the clock changes too (maintenance windows opening and closing, silences
ending) is asked for at every call and appended; for a host nothing covers, a
constant. A snapshot of a fleet whose hosts are quiet is then a join of kept
bytes (docs/PERFORMANCE.md, "The live page at fleet size").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from heartbeat.events import Event
from heartbeat.server.problems import state_level
from heartbeat.server.registry import Host, HostState, Registry
from heartbeat.server.suppression import DOWN_KEY, UNCOVERED
from heartbeat.server.thresholds.engine import ThresholdEngine
from heartbeat.server.thresholds.rules import ALERT_LEVELS, SEVERITY
from heartbeat.text import json_bytes

__all__ = ["DEFAULTS", "Annotations", "HostViews", "without_defaults"]

Annotations = Callable[[str, str], dict[str, Any]]

_NO_ALERTS = {level.value: 0 for level in ALERT_LEVELS}
_UNHEARD: float = 0.5
"""The rank of a host not heard from yet: before the UP ones, after any problem."""
_WORST_FIRST = [level.value for level in sorted(ALERT_LEVELS, key=lambda level: -SEVERITY[level])]
DEFAULTS: Final[dict[str, Any]] = {
    "version": None, "boot_time": None, "down_reason": None, "watch": True, "plugins": [],
    "pending_commands": 0, "signed": False, "key_id": None, "description": "", "tags": [],
    "latest_message": None, "parents": [], "flapping": False, "recovering": None,
    "alerts": dict(_NO_ALERTS), "alert_level": None, **UNCOVERED}
"""The fields of a host object a compact snapshot leaves out when they hold these values
(a quiet host's): sent with its first page, for the client to fill in again."""
_UNCOVERED: Final = dict(UNCOVERED)
_UNCOVERED_TAIL: Final = b"," + json_bytes(_UNCOVERED)[1:]
"""The JSON of what covers a problem nothing covers, as the end of a host object's."""


_ABSENT: Final = object()


def without_defaults(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without the fields that hold their :data:`DEFAULTS` value (of its type:
    ``0`` is not ``False``)."""
    return {key: value for key, value in body.items()
            if (default := DEFAULTS.get(key, _ABSENT)) is _ABSENT
            or type(value) is not type(default) or value != default}


class HostViews:
    """Host objects for the API and the feed."""

    def __init__(self, registry: Registry, alerts: ThresholdEngine | None = None,
                 annotations: Annotations | None = None, *, kept: bool = False) -> None:
        self.registry = registry
        self.alerts = alerts
        self.annotations = annotations
        """What covers a host's problem now: maintenance, silence, acknowledgement
        (``OperationsService.annotations``; None: nothing ever does)."""
        self.kept = kept
        """Whether :meth:`json_bytes` keeps each host's JSON between its events: only for
        views whose :meth:`on_event` hears every event of the bus (compose does that)."""
        self._kept: dict[str, tuple[bytes, bytes, bool]] = {}
        """Per host: the JSON of :meth:`_own` without its closing brace, the same without
        its defaults, and whether the host is flapping (its marker goes with the covering
        part)."""
        self._replaced = registry.replaced

    def on_event(self, event: Event) -> None:
        """An event names a host: what is kept of it may be out of date (every kind)."""
        if event.host:
            self._kept.pop(event.host, None)

    def annotate(self, host: str, key: str = DOWN_KEY) -> dict[str, Any]:
        """``in_maintenance``, ``maintenance``, ``silenced_by``, ``acknowledged`` and
        ``markers`` of ``host``'s problem ``key`` (its own by default, else a metric's)."""
        if self.annotations is None:
            return {**UNCOVERED, "maintenance": [], "markers": []}
        return self.annotations(host, key)

    def json(self, host: Host) -> dict[str, Any]:
        """``registry.host_json`` plus ``alerts`` (active alerts by level) and
        ``alert_level`` (the worst of them, None when there is none), and what covers
        its own problem (:meth:`annotate`; a flapping host is marked ``flapping``)."""
        body = self._own(host)
        body.update(self._covering(host.name, body["flapping"]))
        return body

    def json_bytes(self, host: Host, *, compact: bool = False) -> bytes:
        """The JSON of :meth:`json` (the same value; ``compact``: without the fields at
        their :data:`DEFAULTS`), from what is kept of the host when ``kept``: only the
        covering part is asked for, and encoded only when something covers the host or
        it is flapping."""
        if not self.kept:
            body = self.json(host)
            return json_bytes(without_defaults(body) if compact else body)
        if self._replaced != self.registry.replaced:
            self._kept.clear()
            self._replaced = self.registry.replaced
        kept = self._kept.get(host.name)
        if kept is None:
            own = self._own(host)
            kept = self._kept[host.name] = (
                json_bytes(own)[:-1], json_bytes(without_defaults(own))[:-1], own["flapping"])
        full, short, flapping = kept
        covering = self._covering(host.name, flapping)
        if covering == _UNCOVERED:
            return short + b"}" if compact else full + _UNCOVERED_TAIL
        if not compact:
            return full + b"," + json_bytes(covering)[1:]
        rest = json_bytes(without_defaults(covering))
        return short + (b"}" if rest == b"{}" else b"," + rest[1:])

    def _own(self, host: Host) -> dict[str, Any]:
        """What only the host's events change: the registry's record and the alerts."""
        body = self.registry.host_json(host)
        if self.alerts is not None and self.alerts.has_alerts(host.name):
            counts = self.alerts.summary(self.alerts.states(host.name))
            body["alerts"] = counts
            body["alert_level"] = next((level for level in _WORST_FIRST if counts[level]),
                                       None)
        else:  # most hosts, once per host of a snapshot: no walk
            body["alerts"] = dict(_NO_ALERTS)
            body["alert_level"] = None
        return body

    def _covering(self, name: str, flapping: bool) -> dict[str, Any]:
        """What covers the host's own problem now (the clock changes it too)."""
        covering = self.annotate(name)
        if flapping:
            covering["markers"] = [*covering["markers"], {"kind": "flapping"}]
        return covering

    def problems_first(self, names: Iterable[str]) -> list[str]:
        """``names`` (in name order) as /live sorts them by default: by rank, the worse of
        the host's state (DOWN as CRITICAL, another problem state as UNKNOWN, UNKNOWN
        between those and UP) and its worst alert, then by name. Found from the hosts
        per state and the active alerts, not from every host: the snapshot sends the
        first screen first, so the page can draw it before the rest has come."""
        rank: dict[str, float] = {}
        for state in HostState:
            if state is not HostState.UP:
                level = state_level(state.value)
                value = _UNHEARD if level is None else SEVERITY[level]
                rank.update(dict.fromkeys(self.registry.in_state(state.value), value))
        if self.alerts is not None:
            for alert in self.alerts.states():
                rank[alert.host] = max(rank.get(alert.host, 0.0), SEVERITY[alert.level])
        names = list(names)
        first = sorted((name for name in names if name in rank),
                       key=lambda name: (-rank[name], name))
        return first + [name for name in names if name not in rank]
