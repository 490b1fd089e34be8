"""Rules as values: the alert levels, one :class:`Rule`, and trees of rules.

A :class:`Rule` maps one metric's value to a :class:`Level` (with hysteresis);
a :data:`Tree` nests rules in the shape of the plugin data, as configured.
Pure code: rulebook.py builds them from the config, compiled.py and engine.py
use them.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, TypeAlias

from heartbeat.server.thresholds.templates import Template, parse_template, render_template

__all__ = [
    "ALERT_LEVELS",
    "DEFAULT_HYSTERESIS",
    "OPERATORS",
    "ORDERING_OPERATORS",
    "RTT",
    "SEVERITY",
    "Level",
    "Rule",
    "Tree",
    "merge_trees",
    "prune",
    "tree_json",
]


class Level(StrEnum):
    """How bad a metric is; OK is never an alert."""

    OK = "OK"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"
    UNKNOWN = "UNKNOWN"


_OK: Final = Level.OK
_OK_RESULT: Final = (Level.OK, None)
_NUMBERS: Final = frozenset({int, float, bool})
ALERT_LEVELS: Final = (Level.CRITICAL, Level.WARNING, Level.UNKNOWN)
"""The levels an alert can be in, most severe first (the API's order)."""

SEVERITY: Final = {Level.OK: 0, Level.WARNING: 1, Level.UNKNOWN: 2, Level.CRITICAL: 3}
"""Severity for escalation: a move to a lower rank between alert levels is a
de-escalation and notifies nobody."""

OPERATORS: Final = (">", ">=", "<", "<=", "==", "!=", "nagios")
_ORDERING: Final = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_EQUALITY: Final = {"==": operator.eq, "!=": operator.ne}
_NAGIOS_CODES: Final = {0: Level.OK, 1: Level.WARNING, 2: Level.CRITICAL, 3: Level.UNKNOWN}
_NAGIOS_LIMITS: Final = {Level.WARNING: 1, Level.CRITICAL: 2, Level.UNKNOWN: 3}

DEFAULT_HYSTERESIS: Final = 0.02

ORDERING_OPERATORS: Final = frozenset(_ORDERING)
"""The operators that compare numbers (and so take numeric limits and hysteresis)."""

RTT: Final = "rtt"
"""The top-level branch of a tree that holds RTT rules by host, not plugin rules."""


def _number(value: Any) -> float | None:
    """A metric value usable with the ordering operators (bools count as 0/1)."""
    if isinstance(value, int | float):
        return value if not isinstance(value, float) or not math.isnan(value) else None
    return None


def _nagios_level(value: Any) -> Level | None:
    if isinstance(value, str):
        name = value.strip().upper()
        return Level(name) if name in Level.__members__ else None
    number = _number(value)
    if number is None:
        return None
    if number == int(number) and int(number) in _NAGIOS_CODES:
        return _NAGIOS_CODES[int(number)]
    return Level.UNKNOWN  # e.g. 127 (command not found) or a signal


@dataclass(frozen=True, slots=True)
class Rule:
    """One threshold: how a metric's value maps to a level.

    ``hysteresis`` moves a level's limit toward safety by that fraction of the
    limit while the metric is at or above that level: critical 90, hysteresis
    0.10 -> it stays CRITICAL until the value is no longer above 81.
    """

    operator: str = ">"
    warning: Any = None
    critical: Any = None
    hysteresis: float = DEFAULT_HYSTERESIS
    display: str | None = None
    generic: bool = True
    """False: only the metric of exactly this name, never a ``*_<name>`` one."""
    recover_after: int | None = None
    """Good samples in a row before the metric is OK again (None: the host's or its
    profiles' setting, else 1)."""
    _steps: tuple[tuple[Level, int, Any, Any, Callable[[Any, Any], bool]], ...] = field(
        init=False, repr=False, compare=False)
    _template: Template = field(init=False, repr=False, compare=False)
    _numeric: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_numeric", self.operator in _ORDERING)
        steps = []
        compare = _ORDERING.get(self.operator) or _EQUALITY.get(self.operator)
        if compare is not None:
            toward_safety = -1.0 if self.operator in (">", ">=") else 1.0
            for level, limit in ((Level.CRITICAL, self.critical), (Level.WARNING, self.warning)):
                if limit is None:
                    continue
                recovery = limit
                if self.operator in _ORDERING and self.hysteresis:
                    recovery = limit + toward_safety * self.hysteresis * abs(limit)
                steps.append((level, SEVERITY[level], limit, recovery, compare))
        object.__setattr__(self, "_steps", tuple(steps))
        object.__setattr__(self, "_template", parse_template(self.display or ""))

    @property
    def op_symbol(self) -> str:
        return self.operator

    def level(self, value: Any, current: Level = _OK) -> tuple[Level, Any] | None:
        """The level of ``value`` given the ``current`` one, and the limit it is past.

        None when the value cannot be compared (a string for ``>``, a null).
        """
        if self._numeric:
            if value.__class__ not in _NUMBERS or value != value:  # noqa: PLR0124 - NaN
                return None
        elif self.operator == "nagios":
            level = _nagios_level(value)
            return None if level is None else (level, _NAGIOS_LIMITS.get(level))
        elif value is None:
            return None
        rank = 0 if current is _OK else SEVERITY[current]
        for level, level_rank, limit, recovery, compare in self._steps:
            if compare(value, recovery if rank >= level_rank else limit):
                return level, limit
        return _OK_RESULT

    def render(self, lookup: Callable[[str], Any]) -> str:
        return render_template(self._template, lookup) if self.display else ""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"operator": self.operator}
        if self.operator != "nagios":
            body.update(warning=self.warning, critical=self.critical)
            if self.operator in _ORDERING:
                body["hysteresis"] = self.hysteresis
        if self.display is not None:
            body["display"] = self.display
        if not self.generic:
            body["generic"] = False
        if self.recover_after is not None:
            body["recover_after"] = self.recover_after
        return body


Tree: TypeAlias = "dict[str, Rule | Tree | None]"
"""Rules as configured: nested mappings with :class:`Rule` leaves; None removes."""


def merge_trees(base: Tree, over: Tree) -> Tree:
    """``over`` on top of ``base``: rules replace whole, mappings merge, None removes.

    A removed name stays as None, so that a ``*`` or generic rule beside it does
    not take its place (``/boot: null`` next to ``"*"`` means no rule for /boot).
    """
    out = dict(base)
    for name, value in over.items():
        if value is None:
            out[name] = None
        elif isinstance(value, dict):
            below = out.get(name)
            out[name] = merge_trees(below if isinstance(below, dict) else {}, value)
        else:
            out[name] = value
    return out


def prune(tree: Tree) -> Tree:
    """``tree`` without its removed (None) names, as it is shown."""
    return {name: prune(value) if isinstance(value, dict) else value
            for name, value in tree.items() if value is not None}


def tree_json(tree: Tree) -> dict[str, Any]:
    """A tree as the API shows it, with defaults filled into every rule."""
    return {name: value.to_json() if isinstance(value, Rule) else tree_json(value)
            for name, value in tree.items() if value is not None}
