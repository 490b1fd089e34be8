"""A host as the API and the feed show it: the registry's record plus its alert levels.

One object answers both ``GET /api/0/hosts`` and the feed's snapshot, so a page
filled from either shows the same thing (issue 15: a reload shows the same page).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from heartbeat.server.problems import state_level
from heartbeat.server.registry import Host, HostState, Registry
from heartbeat.server.suppression import DOWN_KEY
from heartbeat.server.thresholds.engine import ThresholdEngine
from heartbeat.server.thresholds.rules import ALERT_LEVELS, SEVERITY

__all__ = ["Annotations", "HostViews"]

Annotations = Callable[[str, str], dict[str, Any]]

_NO_ALERTS = {level.value: 0 for level in ALERT_LEVELS}
_UNHEARD: float = 0.5
"""The rank of a host not heard from yet: before the UP ones, after any problem."""
_WORST_FIRST = [level.value for level in sorted(ALERT_LEVELS, key=lambda level: -SEVERITY[level])]


class HostViews:
    """Host objects for the API and the feed."""

    def __init__(self, registry: Registry, alerts: ThresholdEngine | None = None,
                 annotations: Annotations | None = None) -> None:
        self.registry = registry
        self.alerts = alerts
        self.annotations = annotations
        """What covers a host's problem now: maintenance, silence, acknowledgement
        (``OperationsService.annotations``; None: nothing ever does)."""

    def annotate(self, host: str, key: str = DOWN_KEY) -> dict[str, Any]:
        """``in_maintenance``, ``maintenance``, ``silenced_by``, ``acknowledged`` and
        ``markers`` of ``host``'s problem ``key`` (its own by default, else a metric's)."""
        if self.annotations is None:
            return {"in_maintenance": False, "maintenance": [], "silenced_by": None,
                    "acknowledged": None, "markers": []}
        return self.annotations(host, key)

    def json(self, host: Host) -> dict[str, Any]:
        """``registry.host_json`` plus ``alerts`` (active alerts by level) and
        ``alert_level`` (the worst of them, None when there is none), and what covers
        its own problem (:meth:`annotate`; a flapping host is marked ``flapping``)."""
        body = self.registry.host_json(host)
        body.update(self.annotate(host.name))
        if body["flapping"]:
            body["markers"] = [*body["markers"], {"kind": "flapping"}]
        if self.alerts is not None and self.alerts.has_alerts(host.name):
            counts = self.alerts.summary(self.alerts.states(host.name))
            body["alerts"] = counts
            body["alert_level"] = next((level for level in _WORST_FIRST if counts[level]),
                                       None)
        else:  # most hosts, once per host of a snapshot: no walk
            body["alerts"] = dict(_NO_ALERTS)
            body["alert_level"] = None
        return body

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
