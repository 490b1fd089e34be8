"""Rule parsing: the threshold keys of a server config checked into a :class:`RuleBook`.

``thresholds:`` (over the built-in rules of plugins.py), ``threshold_configs:``
(named profiles) and ``hosts.<name>.threshold_config`` are checked once, each
problem a one-line :class:`~heartbeat.config.loader.ConfigError` naming the key; the
book then gives each host its compiled :class:`RuleSet`. Pure code.

Rules mirror the shape of the plugin data, so ``disk_monitor: {partitions: {/:
{percent: RULE}}}`` watches ``disk_monitor.partitions./.percent``; ``*`` matches
any key at its level, and a metric without an exact rule falls back to the rule
named after its trailing ``_``-separated segments (``check_disk_root_status_code``
-> ``status_code``). docs/THRESHOLD_ALERTING.md is the user's description.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from heartbeat.config.loader import ConfigError
from heartbeat.config.server import HostConfig, ServerConfig
from heartbeat.server.thresholds.compiled import RuleSet
from heartbeat.server.thresholds.plugins import DEFAULT_THRESHOLDS
from heartbeat.server.thresholds.rules import (
    DEFAULT_HYSTERESIS,
    OPERATORS,
    ORDERING_OPERATORS,
    RTT,
    Rule,
    Tree,
    merge_trees,
    tree_json,
)
from heartbeat.server.thresholds.templates import parse_template

__all__ = ["RuleBook", "parse_rule", "parse_tree"]

_RULE_KEYS: Final = ("operator", "warning", "critical", "hysteresis", "display", "generic",
                     "recover_after")
_RULE_MARKERS: Final = frozenset({"operator", "warning", "critical"})
_PROFILE_KEYS: Final = ("thresholds", "description", "recover_after")
_ANY: Final = "*"
"""The key matching any name at its level (under ``rtt``: any host without a rule)."""


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
    recover_after = recover_after_value(raw.get("recover_after"), f"{key}.recover_after", source)
    if op == "nagios":
        for name in ("warning", "critical"):
            if name in raw:
                raise ConfigError(source, f"{key}.{name}", "the nagios operator takes no limits: "
                                  "exit code 1 is WARNING, 2 CRITICAL, 3 UNKNOWN")
        return Rule("nagios", display=display, generic=generic, recover_after=recover_after)
    warning = _limit(raw, "warning", op in ORDERING_OPERATORS, key, source)
    critical = _limit(raw, "critical", op in ORDERING_OPERATORS, key, source)
    if warning is None and critical is None:
        raise ConfigError(source, key, f"a rule with operator '{op}' needs warning or critical")
    if op in ORDERING_OPERATORS and warning is not None and critical is not None:
        upward = op in (">", ">=")
        if (warning > critical) if upward else (warning < critical):
            side = "above" if upward else "below"
            raise ConfigError(source, f"{key}.warning",
                              f"warning {warning} is {side} critical {critical}: with operator "
                              f"'{op}' it must be reached first")
    return Rule(op, warning, critical, float(hysteresis), display, generic, recover_after)


def recover_after_value(value: Any, key: str, source: str) -> int | None:
    """A ``recover_after`` setting: a whole number of good samples, at least 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(source, key, f"expected a whole number of samples, at least 1, got "
                                       f"{value!r:.40}")
    return value


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


class RuleBook:
    """Every host's rules: built-in defaults, ``thresholds:``, then profiles left to right."""

    def __init__(
        self,
        base: Tree,
        profiles: Mapping[str, Tree] | None = None,
        host_profiles: Mapping[str, tuple[str, ...]] | None = None,
        renotify_interval: float = 3600.0,
        recover_after: Mapping[str, int] | None = None,
    ) -> None:
        self.base = base
        self.profiles = dict(profiles or {})
        self.host_profiles = dict(host_profiles or {})
        self.renotify_interval = renotify_interval
        self.recover_after_settings = dict(recover_after or {})
        """``recover_after`` of profiles (by name) and hosts (by ``hosts.<name>``)."""
        self.has_rtt_rules = any(isinstance(tree.get(RTT), Mapping) and tree[RTT]
                                 for tree in (base, *self.profiles.values()))
        """Whether any host may have an RTT rule (most configs have none: a heartbeat's
        RTT then needs no host's rules looked up)."""
        self.plugins = frozenset(name for tree in (base, *self.profiles.values())
                                 for name in tree if name != RTT)
        """Every plugin a rule of some host may name (a rule names a plugin by its exact
        name): all that ``/metrics`` reads of the store's latest data."""
        self._compiled: dict[tuple[str, ...], RuleSet] = {}
        self._plain: RuleSet | None = None
        """The rules of every host no profile names (:meth:`rules_for`'s common answer)."""

    @classmethod
    def from_config(cls, config: ServerConfig, source: str = "<config>") -> RuleBook:
        """Check the threshold keys of ``config``; ConfigError names the first bad key."""
        defaults = parse_tree(DEFAULT_THRESHOLDS, "<built-in thresholds>", "heartbeat")
        base = merge_trees(defaults, parse_tree(config.thresholds, "thresholds", source))
        profiles: dict[str, Tree] = {}
        recover_after: dict[str, int] = {}
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
                                      f"profile has thresholds (and an optional description "
                                      f"and recover_after)")
            profiles[name] = parse_tree(raw.get("thresholds"), f"{key}.thresholds", source)
            count = recover_after_value(raw.get("recover_after"), f"{key}.recover_after", source)
            if count is not None:
                recover_after[name] = count
        host_profiles = {}
        for host, host_config in config.hosts.items():
            if host_config.recover_after is not None:
                recover_after[f"hosts.{host}"] = host_config.recover_after
            names = _profile_names(host_config)
            for name in names:
                if name not in profiles:
                    known = ", ".join(sorted(profiles)) or "none are configured"
                    raise ConfigError(source, f"hosts.{host}.threshold_config",
                                      f"unknown threshold profile {name!r} (known: {known})"
                                      f"{_suggest(name, profiles)}")
            if names:
                host_profiles[host] = names
        return cls(base, profiles, host_profiles, config.threshold_renotify_interval,
                   recover_after)

    def profiles_for(self, host: str) -> tuple[str, ...]:
        """The profiles applied to ``host``, in order: ``default`` first unless it is listed."""
        names = self.host_profiles.get(host, ())
        if "default" in self.profiles and "default" not in names:
            names = ("default", *names)
        return names

    def recover_after(self, host: str) -> int:
        """Good samples in a row before a metric of ``host`` whose rule does not say is OK
        again: the host's ``recover_after``, else its last profile's that sets one, else 1."""
        settings = self.recover_after_settings
        if not settings:
            return 1
        found = settings.get(f"hosts.{host}")
        if found is not None:
            return found
        for name in reversed(self.profiles_for(host)):
            if name in settings:
                return settings[name]
        return 1

    def rules_for(self, host: str) -> RuleSet:
        """The compiled rules of ``host``'s profiles (the book is not changed once made)."""
        if host not in self.host_profiles:  # one lookup a datagram for most hosts
            plain = self._plain
            if plain is None:
                plain = self._plain = self._rules(self.profiles_for(host))
            return plain
        return self._rules(self.profiles_for(host))

    def _rules(self, names: tuple[str, ...]) -> RuleSet:
        rules = self._compiled.get(names)
        if rules is None:
            tree = self.base
            for name in names:
                tree = merge_trees(tree, self.profiles[name])
            rules = self._compiled[names] = RuleSet.compile(tree)
        return rules

    def to_json(self, sees: Callable[[str], bool] | None = None) -> dict[str, Any]:
        """The whole configuration as the settings page shows it: the rules every host
        starts from (built-in defaults and ``thresholds:``), each profile, who uses which.

        ``sees``: only the hosts it is true of are named (RTT rules, profile users);
        the rules themselves are not secret, which hosts exist is.
        """
        def shown(tree: Tree) -> dict[str, Any]:
            return tree_json(_only_rtt_of(tree, sees)) if sees is not None else tree_json(tree)

        return {"thresholds": shown(self.base),
                "profiles": {name: shown(tree) for name, tree in self.profiles.items()},
                "hosts": {host: list(names) for host, names in self.host_profiles.items()
                          if sees is None or sees(host)},
                "renotify_interval": self.renotify_interval}

    def effective(self, host: str) -> dict[str, Any]:
        """What the UI shows for ``host``: its profiles and the rules that result (of the
        RTT rules by host, only its own and the catch-all: the others name other hosts)."""
        tree = _only_rtt_of(self.rules_for(host).tree, lambda name: name == host)
        return {"host": host, "profiles": list(self.profiles_for(host)),
                "renotify_interval": self.renotify_interval, "thresholds": tree_json(tree)}


def _only_rtt_of(tree: Tree, keep: Callable[[str], bool]) -> Tree:
    """``tree`` with its RTT rules limited to the hosts ``keep`` is true of (and ``*``)."""
    rtt = tree.get(RTT)
    if not isinstance(rtt, dict):
        return tree
    return {**tree, RTT: {name: rule for name, rule in rtt.items()
                          if name == _ANY or keep(name)}}


def _profile_names(host: HostConfig) -> tuple[str, ...]:
    value = host.threshold_config
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)
