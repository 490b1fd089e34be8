"""A host as the API and the feed show it: the registry's record plus its alert levels.

One object answers both ``GET /api/0/hosts`` and the feed's snapshot, so a page
filled from either shows the same thing (issue 15: a reload shows the same page).
"""

from __future__ import annotations

from typing import Any

from heartbeat.server.registry import Host, Registry
from heartbeat.server.thresholds.engine import ThresholdEngine
from heartbeat.server.thresholds.rules import ALERT_LEVELS, SEVERITY

__all__ = ["HostViews"]

_NO_ALERTS = {level.value: 0 for level in ALERT_LEVELS}
_WORST_FIRST = sorted(ALERT_LEVELS, key=lambda level: -SEVERITY[level])


class HostViews:
    """Host objects for the API and the feed."""

    def __init__(self, registry: Registry, alerts: ThresholdEngine | None = None) -> None:
        self.registry = registry
        self.alerts = alerts

    def json(self, host: Host) -> dict[str, Any]:
        """``registry.host_json`` plus ``alerts`` (active alerts by level) and
        ``alert_level`` (the worst of them, None when there is none)."""
        body = self.registry.host_json(host)
        counts = dict(_NO_ALERTS)
        if self.alerts is not None and self.alerts.has_alerts(host.name):
            counts = self.alerts.summary(self.alerts.states(host.name))
        body["alerts"] = counts
        body["alert_level"] = next((level.value for level in _WORST_FIRST
                                    if counts[level.value]), None)
        return body
