"""Threshold rules and the alert state machine: plugin data and RTT in, alerts out.

Pure code: no reactor, no I/O, ``now`` is an argument. The configuration
(``thresholds``, ``threshold_configs``, ``hosts.<name>.threshold_config``) is
checked once into a :class:`RuleBook`; a :class:`ThresholdEngine` keeps one
:class:`AlertState` per host and metric path that is not OK and turns every
sample into the :class:`Alert` values the alerting service publishes.

Rules mirror the shape of the plugin data, so ``disk_monitor: {partitions: {/:
{percent: RULE}}}`` watches ``disk_monitor.partitions./.percent``; ``*`` matches
any key at its level, and a metric without an exact rule falls back to the rule
named after its trailing ``_``-separated segments (``check_disk_root_status_code``
-> ``status_code``). docs/THRESHOLD_ALERTING.md is the user's description.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import re
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, TypeAlias

from heartbeat.config import ConfigError, HostConfig, ServerConfig

__all__ = [
    "ALERT_LEVELS",
    "DEFAULT_HYSTERESIS",
    "DEFAULT_THRESHOLDS",
    "MISSING",
    "OPERATORS",
    "SEVERITY",
    "Alert",
    "AlertState",
    "Level",
    "Rule",
    "RuleBook",
    "RuleSet",
    "ThresholdEngine",
    "Tree",
    "merge_trees",
    "parse_rule",
    "parse_template",
    "parse_tree",
    "render_template",
    "show_value",
    "tree_json",
]


class Level(StrEnum):
    OK = "OK"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"
    UNKNOWN = "UNKNOWN"


_OK: Final = Level.OK
_OK_RESULT: Final = (Level.OK, None)
_NUMBERS: Final = frozenset({int, float, bool})
_SCALARS: Final = frozenset({int, float, bool, str})
"""Exact classes (a set lookup is cheaper than isinstance on the hot path); JSON gives
no subclasses."""
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

RTT: Final = "rtt"
ZFS: Final = "zfs_monitor"

DEFAULT_THRESHOLDS: Final[dict[str, Any]] = {
    # Pool health from every client version: older ones send only `health`,
    # and the engine derives `health_ok` (ONLINE 1, anything else 0) for them.
    ZFS: {"pools": {"*": {
        "health_ok": {"operator": "<", "critical": 1, "hysteresis": 0, "generic": False,
                      "display": "pool health {health}"},
        "capacity": {"operator": ">=", "warning": 80, "critical": 90, "generic": False},
    }}},
    # One generic rule for every Nagios check an agent runs.
    "nagios_runner": {"status_code": {"operator": "nagios", "display": "{check_name}: {output}"}},
}
"""Built-in rules beneath the user's ``thresholds:``; ``{zfs_monitor: null}`` removes one."""

_RULE_KEYS: Final = ("operator", "warning", "critical", "hysteresis", "display", "generic")
_RULE_MARKERS: Final = frozenset({"operator", "warning", "critical"})
_PROFILE_KEYS: Final = ("thresholds", "description")
_FORMATTER: Final = string.Formatter()
_HUGE_WIDTH: Final = re.compile(r"\d{4,}")
MISSING: Final = object()
"""What a template lookup returns for a field it does not know."""


def show_value(value: Any) -> str:
    """A metric value as messages show it: floats to two decimals, ``85.0`` stays ``85.0``."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(round(value, 2)) if math.isfinite(value) else repr(value)
    return str(value)


# -- display templates -------------------------------------------------------------

Template: TypeAlias = tuple[tuple[str, str | None, str, str | None], ...]


def parse_template(text: str) -> Template:
    """Split a ``str.format`` template once; ValueError names what is wrong with it.

    Widths and precisions stop at 999: ``{value:>100000000}`` would make every
    message of the rule 100 MB.
    """
    parts = []
    for literal, name, spec, conversion in _FORMATTER.parse(text):
        if name is not None and not name.strip():
            raise ValueError("a field needs a name, e.g. {value}; '{}' names none")
        if conversion not in (None, "r", "s", "a"):
            raise ValueError(f"unknown conversion !{conversion} in {{{name}}}")
        if spec and _HUGE_WIDTH.search(spec):
            raise ValueError(f"width or precision over 999 in {{{name}:{spec}}}")
        parts.append((literal, name, spec or "", conversion))
    return tuple(parts)


def render_template(template: Template, lookup: Callable[[str], Any]) -> str:
    """Fill ``template``; a field ``lookup`` does not know renders as its own name.

    Never raises: a format spec that does not fit the value falls back to the
    plain value, so a notification is never lost to a template.
    """
    out: list[str] = []
    for literal, name, spec, conversion in template:
        out.append(literal)
        if name is None:
            continue
        value = lookup(name)
        if value is MISSING:
            out.append(name)
            continue
        if conversion == "r":
            value = repr(value)
        elif conversion == "a":
            value = ascii(value)
        elif conversion == "s":
            value = str(value)
        if not spec:
            out.append(show_value(value))
            continue
        try:
            out.append(format(value, spec))
        except (ValueError, TypeError, OverflowError):
            out.append(show_value(value))
    return "".join(out)


# -- rules ---------------------------------------------------------------------------


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
        return body


Tree: TypeAlias = "dict[str, Rule | Tree | None]"
"""Rules as configured: nested mappings with :class:`Rule` leaves; None removes."""


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _limit(rule: Mapping[str, Any], name: str, numeric: bool, key: str, source: str) -> Any:
    value = rule.get(name)
    if value is None:
        return None
    if numeric:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise ConfigError(source, f"{key}.{name}",
                              f"expected a number for operator '{rule.get('operator', '>')}', "
                              f"got {value!r:.40}")
        return value
    if not isinstance(value, str | int | float):
        raise ConfigError(source, f"{key}.{name}", f"expected a number or a string, got "
                                                    f"{value!r:.40}")
    return value


def parse_rule(raw: Mapping[str, Any], key: str, source: str) -> Rule:
    """Check one rule mapping; every problem names ``key`` and ``source``."""
    for name in raw:
        if name not in _RULE_KEYS:
            raise ConfigError(source, f"{key}.{name}",
                              f"unknown rule key{_suggest(str(name), _RULE_KEYS)}; a rule has "
                              f"{', '.join(_RULE_KEYS)}")
    op = raw.get("operator", ">")
    if op not in OPERATORS:
        raise ConfigError(source, f"{key}.operator",
                          f"unknown operator {op!r}; expected one of {' '.join(OPERATORS)}")
    hysteresis = raw.get("hysteresis", DEFAULT_HYSTERESIS)
    if isinstance(hysteresis, bool) or not isinstance(hysteresis, int | float) \
            or not 0 <= hysteresis < 1:
        raise ConfigError(source, f"{key}.hysteresis",
                          f"must be a fraction in [0, 1), got {hysteresis!r:.40}")
    display = raw.get("display")
    if display is not None:
        if not isinstance(display, str):
            raise ConfigError(source, f"{key}.display", f"expected a string, got {display!r:.40}")
        try:
            parse_template(display)
        except ValueError as e:
            raise ConfigError(source, f"{key}.display", f"bad template: {e}") from None
    generic = raw.get("generic", True)
    if not isinstance(generic, bool):
        raise ConfigError(source, f"{key}.generic", f"expected true or false, got {generic!r:.40}")
    if op == "nagios":
        for name in ("warning", "critical"):
            if name in raw:
                raise ConfigError(source, f"{key}.{name}", "the nagios operator takes no limits: "
                                  "exit code 1 is WARNING, 2 CRITICAL, 3 UNKNOWN")
        return Rule("nagios", display=display, generic=generic)
    warning = _limit(raw, "warning", op in _ORDERING, key, source)
    critical = _limit(raw, "critical", op in _ORDERING, key, source)
    if warning is None and critical is None:
        raise ConfigError(source, key, f"a rule with operator '{op}' needs warning or critical")
    if op in _ORDERING and warning is not None and critical is not None:
        upward = op in (">", ">=")
        if (warning > critical) if upward else (warning < critical):
            side = "above" if upward else "below"
            raise ConfigError(source, f"{key}.warning",
                              f"warning {warning} is {side} critical {critical}: with operator "
                              f"'{op}' it must be reached first")
    return Rule(op, warning, critical, float(hysteresis), display, generic)


def _is_rule(value: Mapping[str, Any]) -> bool:
    return any(name in _RULE_MARKERS for name in value)


def parse_tree(raw: Any, key: str, source: str) -> Tree:
    """Check a ``thresholds:`` mapping (or a profile's) into a :data:`Tree`."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(source, key, f"expected a mapping of plugins, got {raw!r:.40}")
    return _parse_level(raw, key, source, top=True)


def _parse_level(raw: Mapping[str, Any], key: str, source: str, *, top: bool) -> Tree:
    """One level of a tree: plugins (``top``), or metrics and nested mappings below them."""
    tree: Tree = {}
    for raw_name, value in raw.items():
        name = str(raw_name)
        path = f"{key}.{name}"
        if value is None:
            tree[name] = None
        elif not isinstance(value, Mapping):
            if top:
                raise ConfigError(source, path, f"expected a mapping (a plugin, or under {RTT} "
                                                f"a rule per host), got {value!r:.40}")
            raise ConfigError(source, path, f"expected a rule (warning/critical/operator) or a "
                                            f"mapping of nested metrics, got {value!r:.40}"
                                            f"{_suggest(name, _RULE_KEYS)}")
        elif top and name == RTT:
            tree[name] = _parse_rtt(value, path, source)
        elif _is_rule(value):
            if top:
                raise ConfigError(source, path, "a plugin's entry maps metric names to rules, "
                                                "e.g. cpu_percent: {warning: 80, critical: 90}")
            tree[name] = parse_rule(value, path, source)
        elif not top and any(part in _RULE_KEYS for part in value):
            raise ConfigError(source, path, "a rule needs operator, warning or critical")
        else:
            tree[name] = _parse_level(value, path, source, top=False)
    return tree


def _parse_rtt(raw: Mapping[str, Any], key: str, source: str) -> Tree:
    tree: Tree = {}
    for raw_host, value in raw.items():
        host = str(raw_host)
        if value is None:
            tree[host] = None
        elif isinstance(value, Mapping) and _is_rule(value):
            tree[host] = parse_rule(value, f"{key}.{host}", source)
        else:
            raise ConfigError(source, f"{key}.{host}", f"expected a rule such as "
                              f"{{warning: 100, critical: 500}} (ms), got {value!r:.40}")
    return tree


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


def _prune(tree: Tree) -> Tree:
    """``tree`` without its removed (None) names, as it is shown."""
    return {name: _prune(value) if isinstance(value, dict) else value
            for name, value in tree.items() if value is not None}


def tree_json(tree: Tree) -> dict[str, Any]:
    """A tree as the API shows it, with defaults filled into every rule."""
    return {name: value.to_json() if isinstance(value, Rule) else tree_json(value)
            for name, value in tree.items() if value is not None}


# -- compiled rules --------------------------------------------------------------------


class _Node:
    """One level of compiled rules: exact keys, the ``*`` entry, generic suffixes."""

    __slots__ = ("exact", "generic", "removed", "scan", "wildcard")

    def __init__(self, tree: Tree) -> None:
        wild = tree.get("*")
        self.exact: dict[str, _Node | Rule] = {}
        self.removed = frozenset(name for name, value in tree.items() if value is None)
        """Names set to null: neither ``*`` nor a generic rule applies to them."""
        for name, value in tree.items():
            if name == "*" or value is None:
                continue
            if isinstance(value, dict):
                # A `*` mapping applies beneath its exact siblings: exact wins per metric.
                self.exact[name] = _Node(merge_trees(wild, value) if isinstance(wild, dict)
                                         else value)
            else:
                self.exact[name] = value
        self.wildcard: _Node | Rule | None = _Node(wild) if isinstance(wild, dict) else wild
        rules = [(name, "_" + name, rule) for name, rule in self.exact.items()
                 if isinstance(rule, Rule) and rule.generic]
        self.generic = tuple(sorted(rules, key=lambda r: -len(r[0])))
        """Longest first: the first suffix that fits is the fewest segments stripped."""
        self.scan = self.wildcard is not None or bool(self.generic)
        """Whether every data key must be looked at (else only the exact ones)."""


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The effective rules of one host after defaults and profiles."""

    tree: Tree
    plugins: dict[str, _Node]
    rtt: dict[str, Rule | None]
    """A host mapped to None was set to null: ``rtt.*`` does not apply to it."""

    @classmethod
    def compile(cls, tree: Tree) -> RuleSet:
        rtt = tree.get(RTT)
        plugins = {name: _Node(value) for name, value in tree.items()
                   if name != RTT and isinstance(value, dict)}
        rtt_rules = {host: rule for host, rule in rtt.items()
                     if rule is None or isinstance(rule, Rule)} if isinstance(rtt, dict) else {}
        return cls(_prune(tree), plugins, rtt_rules)

    def rtt_rule(self, host: str) -> Rule | None:
        return self.rtt[host] if host in self.rtt else self.rtt.get("*")


class RuleBook:
    """Every host's rules: built-in defaults, ``thresholds:``, then profiles left to right."""

    def __init__(
        self,
        base: Tree,
        profiles: Mapping[str, Tree] | None = None,
        host_profiles: Mapping[str, tuple[str, ...]] | None = None,
        renotify_interval: float = 3600.0,
    ) -> None:
        self.base = base
        self.profiles = dict(profiles or {})
        self.host_profiles = dict(host_profiles or {})
        self.renotify_interval = renotify_interval
        self._compiled: dict[tuple[str, ...], RuleSet] = {}

    @classmethod
    def from_config(cls, config: ServerConfig, source: str = "<config>") -> RuleBook:
        """Check the threshold keys of ``config``; ConfigError names the first bad key."""
        defaults = parse_tree(DEFAULT_THRESHOLDS, "<built-in thresholds>", "heartbeat")
        base = merge_trees(defaults, parse_tree(config.thresholds, "thresholds", source))
        profiles: dict[str, Tree] = {}
        for name, profile in config.threshold_configs.items():
            key = f"threshold_configs.{name}"
            raw = {} if profile is None else profile
            if not isinstance(raw, Mapping):
                raise ConfigError(source, key, f"expected a mapping with 'thresholds', got "
                                               f"{raw!r:.40}")
            for part in raw:
                if part not in _PROFILE_KEYS:
                    raise ConfigError(source, f"{key}.{part}",
                                      f"unknown key{_suggest(str(part), _PROFILE_KEYS)}; a "
                                      f"profile has thresholds (and an optional description)")
            profiles[name] = parse_tree(raw.get("thresholds"), f"{key}.thresholds", source)
        host_profiles = {}
        for host, host_config in config.hosts.items():
            names = _profile_names(host_config)
            for name in names:
                if name not in profiles:
                    known = ", ".join(sorted(profiles)) or "none are configured"
                    raise ConfigError(source, f"hosts.{host}.threshold_config",
                                      f"unknown threshold profile {name!r} (known: {known})"
                                      f"{_suggest(name, profiles)}")
            if names:
                host_profiles[host] = names
        return cls(base, profiles, host_profiles, config.threshold_renotify_interval)

    def profiles_for(self, host: str) -> tuple[str, ...]:
        """The profiles applied to ``host``, in order: ``default`` first unless it is listed."""
        names = self.host_profiles.get(host, ())
        if "default" in self.profiles and "default" not in names:
            names = ("default", *names)
        return names

    def rules_for(self, host: str) -> RuleSet:
        names = self.profiles_for(host)
        rules = self._compiled.get(names)
        if rules is None:
            tree = self.base
            for name in names:
                tree = merge_trees(tree, self.profiles[name])
            rules = self._compiled[names] = RuleSet.compile(tree)
        return rules

    def to_json(self) -> dict[str, Any]:
        """The whole configuration as the settings page shows it: the rules every host
        starts from (built-in defaults and ``thresholds:``), each profile, who uses which."""
        return {"thresholds": tree_json(self.base),
                "profiles": {name: tree_json(tree) for name, tree in self.profiles.items()},
                "hosts": {host: list(names) for host, names in self.host_profiles.items()},
                "renotify_interval": self.renotify_interval}

    def effective(self, host: str) -> dict[str, Any]:
        """What the UI shows for ``host``: its profiles and the rules that result."""
        return {"host": host, "profiles": list(self.profiles_for(host)),
                "renotify_interval": self.renotify_interval,
                "thresholds": tree_json(self.rules_for(host).tree)}


def _profile_names(host: HostConfig) -> tuple[str, ...]:
    value = host.threshold_config
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


# -- alert state -----------------------------------------------------------------------


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

    @property
    def message(self) -> str:
        return _message(f"{self.level.value}:", self.host, self.metric_path, self.value,
                        self.display)

    def to_json(self) -> dict[str, Any]:
        """The API shape of an active alert."""
        return {"host": self.host, "metric_path": self.metric_path, "level": self.level.value,
                "value": self.value, "threshold_value": self.threshold_value,
                "message": self.message, "since": self.since,
                "last_notified": self.last_notified}


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

    def to_json(self) -> dict[str, Any]:
        """The ALERT event's data."""
        return {"metric_path": self.metric_path, "level": self.level.value,
                "previous": self.previous.value, "value": self.value,
                "threshold_value": self.threshold_value, "operator": self.operator,
                "message": self.message, "display": self.display, "since": self.since,
                "notify": self.notify, "reminder": self.reminder, "cleared": self.cleared}


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

    def __init__(self, rules: RuleBook) -> None:
        self.rules = rules
        self._states: dict[str, dict[str, AlertState]] = {}
        self._dirty: set[tuple[str, str]] = set()

    # state access
    def restore(self, states: Iterable[AlertState]) -> None:
        """Load states kept across a restart; nothing is notified again for them."""
        for state in states:
            if state.level is not _OK:
                self._states.setdefault(state.host, {})[state.metric_path] = state

    def states(self, host: str | None = None) -> list[AlertState]:
        """Active alerts, most severe first, then by host and metric path."""
        if host is None:
            found = [s for states in self._states.values() for s in states.values()]
        else:
            found = list(self._states.get(host, {}).values())
        return sorted(found, key=lambda s: (-SEVERITY[s.level], s.host, s.metric_path))

    def summary(self, states: Iterable[AlertState] | None = None) -> dict[str, int]:
        """Alerts by level: of ``states`` (e.g. those a user may see), else of all."""
        counts = {level.value: 0 for level in ALERT_LEVELS}
        if states is None:
            states = (s for by_path in self._states.values() for s in by_path.values())
        for state in states:
            counts[state.level.value] += 1
        return counts

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
        for path in self._states.pop(host, {}):
            self._dirty.add((host, path))

    # evaluation
    def evaluate_plugins(self, host: str, plugins: Mapping[str, Any], now: float) -> list[Alert]:
        """Evaluate one PLG message's plugins; states of metrics they no longer report clear."""
        rules = self.rules.rules_for(host)
        out: list[Alert] = []
        seen: set[str] = set()
        for plugin, data in plugins.items():
            node = rules.plugins.get(plugin)
            if node is not None and _reported(data):
                sample = _Sample(host, plugin, data, now, seen, out, self._states.get(host))
                self._walk(sample, node, data, plugin)
        states = self._states.get(host)
        if states:
            for state in list(states.values()):
                if state.metric_path not in seen and _reported(plugins.get(state.plugin)):
                    out.append(self._clear(state, now))
        return out

    def evaluate_rtt(self, host: str, rtt: Any, now: float) -> list[Alert]:
        """Check a heartbeat's round-trip time (ms) against ``thresholds.rtt.<host>``."""
        rule = self.rules.rules_for(host).rtt_rule(host)
        path = f"{RTT}.{host}"
        out: list[Alert] = []
        if rule is not None:
            fields = {"rtt": rtt}
            sample = _Sample(host, RTT, fields, now, set(), out, self._states.get(host))
            self._update(sample, RTT, host, rule, rtt, "", fields)
        else:
            state = self._states.get(host, {}).get(path)
            if state is not None:
                out.append(self._clear(state, now))
        return out

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
                                 state.display, state.since, now, notify=True, reminder=True))
        return out

    def _walk(self, sample: _Sample, node: _Node, data: dict[str, Any], path: str) -> None:
        if sample.zfs and "health_ok" not in data and isinstance(data.get("health"), str):
            # Older zfs_monitor clients send only `health`: derive the number the
            # default rule watches, on a copy (the event's data is shared).
            data = {**data, "health_ok": int(data["health"].strip().upper() == "ONLINE")}
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
        if states is None:
            # The host has no alert: most samples end here, without building a path.
            result = rule.level(value)
            if result is None or result[0] is _OK:
                return
            path = f"{parent}.{key}"
            state = None
        else:
            path = f"{parent}.{key}"
            sample.seen.add(path)
            state = states.get(path)
            result = rule.level(value, state.level if state is not None else _OK)
            if result is None or (state is None and result[0] is _OK):
                return
        level, limit = result
        current = state.level if state is not None else _OK
        host = sample.host
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
        now = sample.now
        if state is None:
            sample.seen.add(path)
            self._states.setdefault(host, {})[path] = AlertState(
                host, sample.plugin, path, level, value, limit, rule.operator, display, now, now)
            sample.out.append(Alert(host, path, level, _OK, value, limit, rule.operator,
                                    _message(f"{level.value}:", host, path, value, display),
                                    display, now, now, notify=True))
        elif level is current:
            state.value, state.threshold_value, state.display = value, threshold, display
        elif level is _OK:
            self._drop(state)
            sample.out.append(Alert(host, path, _OK, current, value, threshold, rule.operator,
                                    _message("RECOVERED:", host, path, value, display,
                                             suffix=f"({current.value} -> OK)"),
                                    display, now, now, notify=True))
        else:
            notify = SEVERITY[level] > SEVERITY[current]
            state.level, state.value, state.threshold_value = level, value, limit
            state.operator, state.display, state.since = rule.operator, display, now
            if notify:
                state.last_notified = now
            sample.out.append(Alert(host, path, level, current, value, limit, rule.operator,
                                    _message(f"{level.value}:", host, path, value, display),
                                    display, now, now, notify=notify))

    def _drop(self, state: AlertState) -> None:
        states = self._states[state.host]
        del states[state.metric_path]
        if not states:
            del self._states[state.host]
        self._dirty.add((state.host, state.metric_path))

    def _clear(self, state: AlertState, now: float) -> Alert:
        self._drop(state)
        return Alert(state.host, state.metric_path, _OK, state.level, None,
                     state.threshold_value, state.operator,
                     f"CLEARED: {state.host} - {state.metric_path} (no longer reported)",
                     state.display, now, now, notify=False, cleared=True)


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
    zfs: bool = field(init=False)

    def __post_init__(self) -> None:
        self.zfs = self.plugin == ZFS
