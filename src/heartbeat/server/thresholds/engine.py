"""The alert state machine: plugin data and RTT in, :class:`Alert` values out.

A :class:`ThresholdEngine` walks each sample against a host's compiled rules
(compiled.py), keeps one :class:`AlertState` per host and metric path that is
not OK, and turns every transition into the :class:`Alert` the alerting service
publishes. The walk is generic: what a plugin needs beyond rules comes through
its adapter (plugins.py). Every sample is an evaluation of the metric's level for
flap detection (flapping.py; only metrics that changed lately keep a history),
and a metric in alert needs ``recover_after`` good samples in a row to be OK
again. Pure code: no reactor, no I/O, ``now`` is an argument.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from heartbeat.server.flapping import FlapChange, FlapDetector
from heartbeat.server.thresholds.compiled import Node, RuleSet
from heartbeat.server.thresholds.plugins import ADAPTERS, SampleAdapter
from heartbeat.server.thresholds.rulebook import RuleBook
from heartbeat.server.thresholds.rules import ALERT_LEVELS, RTT, SEVERITY, Level, Rule
from heartbeat.server.thresholds.templates import MISSING, show_value

__all__ = ["Alert", "AlertState", "ThresholdEngine"]

_OK: Final = Level.OK
_SCALARS: Final = frozenset({int, float, bool, str})
"""Exact classes (a set lookup is cheaper than isinstance on the hot path); JSON gives
no subclasses."""


@dataclass(slots=True)
class AlertState:
    """A metric of a host that is not OK; kept in the store across restarts."""

    host: str
    plugin: str
    metric_path: str
    level: Level
    value: Any
    threshold_value: Any
    operator: str
    display: str
    since: float
    """When the metric entered its current level."""
    last_notified: float | None
    flapping: bool = False
    good_samples: int = 0
    """OK samples in a row, toward ``recover_after`` (not kept across a restart)."""
    recover_after: int = 1

    @property
    def message(self) -> str:
        return _message(f"{self.level.value}:", self.host, self.metric_path, self.value,
                        self.display)

    def to_json(self) -> dict[str, Any]:
        """The API shape of an active alert."""
        return {"host": self.host, "metric_path": self.metric_path, "level": self.level.value,
                "value": self.value, "threshold_value": self.threshold_value,
                "message": self.message, "since": self.since,
                "last_notified": self.last_notified, "flapping": self.flapping,
                "recovering": {"samples": self.good_samples, "needed": self.recover_after}
                if self.good_samples else None}


def _message(prefix: str, host: str, path: str, value: Any, display: str, *,
             suffix: str = "") -> str:
    text = f"{prefix} {host} - {path} = {show_value(value)}"
    if display:
        text = f"{text} {display}"
    return f"{text} {suffix}" if suffix else text


@dataclass(frozen=True, slots=True)
class Alert:
    """A transition (or a reminder) of one metric, for the bus and the notifier."""

    host: str
    metric_path: str
    level: Level
    previous: Level
    value: Any
    threshold_value: Any
    operator: str
    message: str
    display: str
    since: float
    ts: float
    notify: bool
    reminder: bool = False
    cleared: bool = False
    """The metric stopped being reported while not OK; its state was dropped."""
    flapping: bool = False
    """The metric is flapping: the notifier holds this transition (or reminder)."""

    def to_json(self) -> dict[str, Any]:
        """The ALERT event's data."""
        return {"metric_path": self.metric_path, "level": self.level.value,
                "previous": self.previous.value, "value": self.value,
                "threshold_value": self.threshold_value, "operator": self.operator,
                "message": self.message, "display": self.display, "since": self.since,
                "notify": self.notify, "reminder": self.reminder, "cleared": self.cleared,
                "flapping": self.flapping}


class _Fields:
    """Template lookup for one metric: named fields, then its siblings, then the plugin's."""

    __slots__ = ("container", "named", "plugin")

    def __init__(self, named: dict[str, Any], container: Mapping[str, Any],
                 plugin: Mapping[str, Any]) -> None:
        self.named = named
        self.container = container
        self.plugin = plugin

    def __call__(self, name: str) -> Any:
        for source in (self.named, self.container, self.plugin):
            value = source.get(name, MISSING)
            if value is not MISSING and not isinstance(value, dict | list):
                return value
        return MISSING


class ThresholdEngine:
    """Evaluates samples against a :class:`RuleBook` and tracks every non-OK metric."""

    def __init__(self, rules: RuleBook,
                 adapters: Mapping[str, SampleAdapter] = ADAPTERS,
                 flaps: FlapDetector | None = None) -> None:
        self.rules = rules
        self._adapters = adapters
        self.flaps = flaps
        """Flap detection of metric levels (None: none)."""
        self._states: dict[str, dict[str, AlertState]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self.flap_changes: list[FlapChange] = []
        """Metrics that started or stopped flapping since :meth:`take_flap_changes`."""
        self._counts: dict[Level, int] = dict.fromkeys(ALERT_LEVELS, 0)
        """Active alerts per level, kept as states change: a summary walks nothing."""

    # state access
    def restore(self, states: Iterable[AlertState]) -> None:
        """Load states kept across a restart; nothing is notified again for them."""
        for state in states:
            if state.level is not _OK:
                old = self._states.setdefault(state.host, {}).get(state.metric_path)
                if old is not None:
                    self._counts[old.level] -= 1
                self._states[state.host][state.metric_path] = state
                self._counts[state.level] += 1
                if self.flaps is not None:
                    state.flapping = self.flaps.flapping(state.host, state.metric_path)

    def states(self, host: str | None = None) -> list[AlertState]:
        """Active alerts, most severe first, then by host and metric path."""
        if host is None:
            found = [s for states in self._states.values() for s in states.values()]
        else:
            found = list(self._states.get(host, {}).values())
        return sorted(found, key=lambda s: (-SEVERITY[s.level], s.host, s.metric_path))

    def has_alerts(self, host: str) -> bool:
        """Whether ``host`` has an active alert (cheap: once per host of a snapshot)."""
        return bool(self._states.get(host))

    def summary(self, states: Iterable[AlertState] | None = None) -> dict[str, int]:
        """Alerts by level: of ``states`` (e.g. those a user may see), else of all."""
        if states is None:
            return {level.value: self._counts[level] for level in ALERT_LEVELS}
        counts = {level.value: 0 for level in ALERT_LEVELS}
        for state in states:
            counts[state.level.value] += 1
        return counts

    def worst_levels(self) -> dict[str, str]:
        """Each alerting host's most severe active level (hosts without alerts are absent)."""
        return {host: max((s.level for s in states.values()), key=SEVERITY.__getitem__).value
                for host, states in self._states.items() if states}

    def take_dirty(self) -> tuple[list[AlertState], list[tuple[str, str]]]:
        """States changed since the last call (copies) and the keys of states removed."""
        upserts: list[AlertState] = []
        deletes: list[tuple[str, str]] = []
        for host, path in self._dirty:
            state = self._states.get(host, {}).get(path)
            if state is None:
                deletes.append((host, path))
            else:
                upserts.append(dataclasses.replace(state))
        self._dirty.clear()
        return upserts, deletes

    def forget(self, host: str) -> None:
        """Drop every state of a removed host."""
        for path, state in self._states.pop(host, {}).items():
            self._counts[state.level] -= 1
            self._dirty.add((host, path))
        if self.flaps is not None:
            self.flaps.forget(host)

    def take_flap_changes(self) -> list[FlapChange]:
        """Metrics that started or stopped flapping since the last call, in order."""
        changes, self.flap_changes = self.flap_changes, []
        return changes

    # evaluation
    def evaluate_plugins(self, host: str, plugins: Mapping[str, Any], now: float) -> list[Alert]:
        """Evaluate one PLG message's plugins; states of metrics they no longer report clear."""
        rules = self.rules.rules_for(host)
        if rules.plugins.keys().isdisjoint(plugins) and not self._states.get(host):
            return []  # no rule for these plugins and no alert to clear
        out: list[Alert] = []
        seen: set[str] = set()
        for plugin, data in plugins.items():
            node = rules.plugins.get(plugin)
            if node is not None and _reported(data):
                sample = _Sample(host, plugin, data, now, seen, out, self._states.get(host),
                                 self._adapters.get(plugin), self._tracks(host))
                self._walk(sample, node, data, plugin)
        states = self._states.get(host)
        if states:
            for state in list(states.values()):
                if state.metric_path not in seen and _reported(plugins.get(state.plugin)):
                    out.append(self._clear(state, now))
        return out

    def evaluate_rtt(self, host: str, rtt: Any, now: float) -> list[Alert]:
        """Check a heartbeat's round-trip time (ms) against ``thresholds.rtt.<host>``."""
        rules = self.rules
        rule = rules.rules_for(host).rtt_rule(host) if rules.has_rtt_rules else None
        if rule is None and host not in self._states:
            return []  # no rule and no alert to clear: most heartbeats
        path = f"{RTT}.{host}"
        out: list[Alert] = []
        if rule is not None:
            fields = {"rtt": rtt}
            sample = _Sample(host, RTT, fields, now, set(), out, self._states.get(host), None,
                             self._tracks(host))
            self._update(sample, RTT, host, rule, rtt, "", fields)
        else:
            state = self._states.get(host, {}).get(path)
            if state is not None:
                out.append(self._clear(state, now))
        return out

    def named_values(self, rules: RuleSet, plugins: Mapping[str, Any]
                     ) -> Iterator[tuple[str, str, float]]:
        """Every number in ``plugins`` a rule names: (plugin, path below it, value).

        The metrics :meth:`evaluate_plugins` would check, found by the same
        matching (exact names, ``*``, generic suffixes, names set to null), for
        ``/metrics``. It reads no alert state and changes nothing, so it may run
        on any thread over data the registry no longer changes.
        """
        for plugin, data in plugins.items():
            node = rules.plugins.get(plugin)
            if node is not None and _reported(data):
                yield from self._named(node, data, "", plugin, self._adapters.get(plugin))

    def _named(self, node: Node, data: dict[str, Any], path: str, plugin: str,
               adapt: SampleAdapter | None) -> Iterator[tuple[str, str, float]]:
        if adapt is not None:
            data = adapt(data)
        for key, value in data.items():
            child = node.child(key)
            if value.__class__ is dict:
                if child.__class__ is Node:
                    yield from self._named(child, value, f"{path}{key}.", plugin, adapt)
            elif child.__class__ is Rule or (child is None and key not in node.removed and any(
                    key.endswith(suffix) for _, suffix, _ in node.generic)):
                number = _number(value)
                if number is not None:
                    yield plugin, f"{path}{key}", number

    def reminders(self, now: float) -> list[Alert]:
        """A REMINDER for every alert last notified ``renotify_interval`` ago or more."""
        interval = self.rules.renotify_interval
        if interval <= 0:
            return []
        out = []
        for states in self._states.values():
            for state in states.values():
                last = state.last_notified if state.last_notified is not None else state.since
                if now - last < interval:
                    continue
                state.last_notified = now
                self._dirty.add((state.host, state.metric_path))
                message = _message(f"REMINDER ({state.level.value}):", state.host,
                                   state.metric_path, state.value, state.display,
                                   suffix=f"(ongoing for {int(now - state.since)}s)")
                out.append(Alert(state.host, state.metric_path, state.level, state.level,
                                 state.value, state.threshold_value, state.operator, message,
                                 state.display, state.since, now, notify=True, reminder=True,
                                 flapping=state.flapping))
        return out

    def _tracks(self, host: str) -> bool:
        """Whether some metric of ``host`` has a flap history (then OK samples count too)."""
        return self.flaps is not None and self.flaps.tracks(host)

    def _flap(self, host: str, path: str, level: Level, previous: Level, now: float) -> bool:
        """Record one evaluation of a metric's level; whether it is flapping now."""
        flaps = self.flaps
        if flaps is None:
            return False
        change = flaps.record(host, path, level.value, previous.value, now)
        if change is not None:
            self.flap_changes.append(change)
        return flaps.flapping(host, path)

    def _walk(self, sample: _Sample, node: Node, data: dict[str, Any], path: str) -> None:
        if sample.adapt is not None:
            data = sample.adapt(data)
        update = self._update
        # Two loops on purpose: one generator feeding both was 20 % slower on bench/.
        if node.scan:
            exact = node.exact
            wildcard = node.wildcard
            generic = node.generic
            removed = node.removed
            for key, value in data.items():
                child = exact.get(key)
                if child is None:
                    if key in removed:
                        continue
                    child = wildcard
                if child is None:
                    if generic and value.__class__ in _SCALARS:
                        for _, suffix, rule in generic:
                            if key.endswith(suffix):
                                update(sample, path, key, rule, value, key[:-len(suffix)], data)
                                break
                elif child.__class__ is Rule:
                    if value.__class__ in _SCALARS:
                        update(sample, path, key, child, value, "", data)
                elif isinstance(value, dict):
                    self._walk(sample, child, value, f"{path}.{key}")  # type: ignore[arg-type]
        else:
            for key, child in node.exact.items():
                value = data.get(key)
                if value is None:
                    continue
                if child.__class__ is Rule:
                    if value.__class__ in _SCALARS:
                        update(sample, path, key, child, value, "", data)
                elif isinstance(value, dict):
                    self._walk(sample, child, value, f"{path}.{key}")  # type: ignore[arg-type]

    def _update(  # noqa: PLR0917 - the hot path: one call per metric, positional is cheaper
        self, sample: _Sample, parent: str, key: str, rule: Rule, value: Any, check_name: str,
        container: Mapping[str, Any],
    ) -> None:
        states = sample.states
        if states is None and not sample.tracked:
            # The host has no alert: most samples end here, without building a path.
            result = rule.level(value)
            if result is None or result[0] is _OK:
                return
            path = f"{parent}.{key}"
            state = None
        else:
            path = f"{parent}.{key}"
            sample.seen.add(path)
            state = states.get(path) if states is not None else None
            result = rule.level(value, state.level if state is not None else _OK)
            if result is None:
                return
            if state is None and result[0] is _OK:
                self._flap(sample.host, path, _OK, _OK, sample.now)  # it has a history
                return
        level, limit = result
        current = state.level if state is not None else _OK
        if state is not None:
            if level is _OK and not self._recovered(state, rule, sample.host):
                level, limit = current, state.threshold_value  # not enough good samples yet
            elif level is not _OK:
                state.good_samples = 0
        host = sample.host
        now = sample.now
        flapping = self._flap(host, path, level, current, now)
        threshold = limit if level is not _OK or state is None else state.threshold_value
        display = ""
        if rule.display:
            named = {"value": value, "threshold_value": threshold, "op_symbol": rule.op_symbol,
                     "check_name": check_name, "metric_name": key, "metric_path": path,
                     "host": host, "level": level.value}
            if check_name:
                for alias in ("output", "status"):
                    aliased = container.get(f"{check_name}_{alias}", MISSING)
                    if aliased is not MISSING:
                        named[alias] = aliased
            if threshold is None:
                del named["threshold_value"]
            display = rule.render(_Fields(named, container, sample.plugin_data))
        self._dirty.add((host, path))
        if state is None:
            sample.seen.add(path)
            self._states.setdefault(host, {})[path] = AlertState(
                host, sample.plugin, path, level, value, limit, rule.operator, display, now, now,
                flapping)
            self._counts[level] += 1
            sample.out.append(Alert(host, path, level, _OK, value, limit, rule.operator,
                                    _message(f"{level.value}:", host, path, value, display),
                                    display, now, now, notify=True, flapping=flapping))
        elif level is current:
            state.value, state.threshold_value, state.display = value, threshold, display
            state.flapping = flapping
        elif level is _OK:
            self._drop(state)
            sample.out.append(Alert(host, path, _OK, current, value, threshold, rule.operator,
                                    _message("RECOVERED:", host, path, value, display,
                                             suffix=f"({current.value} -> OK)"),
                                    display, now, now, notify=True, flapping=flapping))
        else:
            notify = SEVERITY[level] > SEVERITY[current]
            self._counts[current] -= 1
            self._counts[level] += 1
            state.level, state.value, state.threshold_value = level, value, limit
            state.operator, state.display, state.since = rule.operator, display, now
            state.flapping = flapping
            if notify:
                state.last_notified = now
            sample.out.append(Alert(host, path, level, current, value, limit, rule.operator,
                                    _message(f"{level.value}:", host, path, value, display),
                                    display, now, now, notify=notify, flapping=flapping))

    def _recovered(self, state: AlertState, rule: Rule, host: str) -> bool:
        """One more OK sample of a metric in alert: enough in a row to be OK?"""
        needed = rule.recover_after or self.rules.recover_after(host)
        if needed <= 1:
            return True
        state.good_samples += 1
        state.recover_after = needed
        if state.good_samples < needed:
            return False
        state.good_samples = 0
        return True

    def _drop(self, state: AlertState) -> None:
        states = self._states[state.host]
        del states[state.metric_path]
        self._counts[state.level] -= 1
        if not states:
            del self._states[state.host]
        self._dirty.add((state.host, state.metric_path))

    def _clear(self, state: AlertState, now: float) -> Alert:
        self._drop(state)
        if self.flaps is not None:
            self.flaps.forget(state.host, state.metric_path)
        return Alert(state.host, state.metric_path, _OK, state.level, None,
                     state.threshold_value, state.operator,
                     f"CLEARED: {state.host} - {state.metric_path} (no longer reported)",
                     state.display, now, now, notify=False, cleared=True)


def _number(value: Any) -> float | None:
    """A JSON number (or bool, as 0/1) as a float; None for anything else or not finite."""
    if value.__class__ not in (int, float, bool):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return number if math.isfinite(number) else None


def _reported(data: Any) -> bool:
    """Whether a plugin's data is a full sample (not an agent's ``{"error": ...}`` or
    ``{"available": false}``): only then does a missing metric mean it is gone."""
    return isinstance(data, dict) and "error" not in data and data.get("available") is not False


@dataclass(slots=True)
class _Sample:
    """What one evaluation shares across the walk: where it is, and where results go."""

    host: str
    plugin: str
    plugin_data: Mapping[str, Any]
    now: float
    seen: set[str]
    out: list[Alert]
    states: dict[str, AlertState] | None
    """The host's alert states when the sample began (None: it had none)."""
    adapt: SampleAdapter | None
    """The plugin's adapter (plugins.py), called on every mapping the walk visits."""
    tracked: bool = False
    """Some metric of the host has a flap history: OK samples are evaluations too."""
