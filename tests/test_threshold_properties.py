"""Hysteresis properties (hypothesis): no flapping inside the band, monotone sweeps."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from heartbeat.config.server import ServerConfig
from heartbeat.server.thresholds.engine import ThresholdEngine
from heartbeat.server.thresholds.rulebook import RuleBook
from heartbeat.server.thresholds.rules import SEVERITY, Level, Rule

UPWARD = (">", ">=")
OPERATORS = st.sampled_from([">", ">=", "<", "<="])
LIMITS = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
HYSTERESIS = st.floats(min_value=0.0, max_value=0.5)
VALUES = st.floats(min_value=-1e7, max_value=1e7, allow_nan=False, allow_infinity=False)


def recovery(op: str, limit: float, hysteresis: float) -> float:
    return limit - hysteresis * abs(limit) if op in UPWARD else limit + hysteresis * abs(limit)


def engine(rule: dict[str, Any]) -> ThresholdEngine:
    book = RuleBook.from_config(ServerConfig(thresholds={"m": {"x": rule}}), "prop.yaml")
    return ThresholdEngine(book)


def run(e: ThresholdEngine, values: list[float]) -> list[tuple[Level, Level]]:
    """Feed values in order; the (previous, level) of every transition."""
    transitions = []
    for t, value in enumerate(values):
        for alert in e.evaluate_plugins("h", {"m": {"x": value}}, float(t)):
            transitions.append((alert.previous, alert.level))
    return transitions


@st.composite
def band(draw: st.DrawFn) -> tuple[str, float, float, list[float]]:
    """An operator, a limit, a hysteresis and values strictly between limit and recovery."""
    op = draw(OPERATORS)
    limit = draw(LIMITS)
    hysteresis = draw(HYSTERESIS)
    low, high = sorted((limit, recovery(op, limit, hysteresis)))
    if not math.nextafter(low, math.inf) < high:  # no float strictly between them
        values: list[float] = []
    else:
        inside = st.floats(min_value=low, max_value=high, exclude_min=True, exclude_max=True)
        values = draw(st.lists(inside, max_size=30))
    return op, limit, hysteresis, values


@given(band(), st.booleans())
def test_no_flapping_inside_the_band(case: tuple[str, float, float, list[float]],
                                     entered: bool) -> None:
    """Once a level is entered (or not), values between limit and recovery never change it."""
    op, limit, hysteresis, values = case
    e = engine({"operator": op, "critical": limit, "hysteresis": hysteresis})
    beyond = limit + (1 + abs(limit)) * (1 if op in UPWARD else -1)
    safe = limit - (1 + abs(limit)) * (1 if op in UPWARD else -1)
    start = run(e, [beyond if entered else safe])
    assert start == ([(Level.OK, Level.CRITICAL)] if entered else [])
    assert run(e, values) == []


@st.composite
def two_levels(draw: st.DrawFn) -> dict[str, Any]:
    """A rule with warning and critical on the right side of each other."""
    op = draw(OPERATORS)
    warning = draw(LIMITS)
    gap = draw(st.floats(min_value=0.0, max_value=1e6))
    critical = warning + gap if op in UPWARD else warning - gap
    return {"operator": op, "warning": warning, "critical": critical,
            "hysteresis": draw(HYSTERESIS)}


@given(two_levels(), st.lists(VALUES, max_size=40), st.booleans())
def test_monotone_sweep_transitions_at_most_once_per_threshold(
        rule: dict[str, Any], values: list[float], ascending: bool) -> None:
    """After its first value sets the start, a monotone sweep crosses each threshold once at
    most, so it makes <= 2 transitions, each moving in the sweep's direction."""
    sweep = sorted(values, reverse=not ascending)
    e = engine(rule)
    run(e, sweep[:1])
    transitions = run(e, sweep[1:])
    assert len(transitions) <= 2
    worsening = ascending == (rule["operator"] in UPWARD)
    for previous, level in transitions:
        if worsening:
            assert SEVERITY[level] > SEVERITY[previous]
        else:
            assert SEVERITY[level] < SEVERITY[previous]


@given(two_levels(), VALUES, st.sampled_from([Level.OK, Level.WARNING, Level.CRITICAL]))
def test_level_is_never_less_severe_than_without_hysteresis(
        rule: dict[str, Any], value: float, current: Level) -> None:
    """Hysteresis only delays recovery: with it a value is never judged better than without."""
    with_band = Rule(rule["operator"], rule["warning"], rule["critical"], rule["hysteresis"])
    without = Rule(rule["operator"], rule["warning"], rule["critical"], 0.0)
    banded, plain = with_band.level(value, current), without.level(value, current)
    assert banded is not None
    assert plain is not None
    assert SEVERITY[banded[0]] >= SEVERITY[plain[0]]
    assert SEVERITY[banded[0]] <= max(SEVERITY[plain[0]], SEVERITY[current])


@given(st.lists(st.tuples(st.sampled_from(["h1", "h2", "h3"]),
                          st.sampled_from(["eval", "gone", "forget", "restore"]),
                          st.dictionaries(st.sampled_from(["x", "y"]),
                                          st.sampled_from([0.0, 85.0, 95.0, "up"]))),
                max_size=40))
def test_running_summary_and_worst_levels_match_the_states(
        steps: list[tuple[str, str, dict[str, Any]]]) -> None:
    """The alert counts kept as states change equal a count over the states, and each
    host's worst level is the most severe of its states, whatever happened before."""
    rule = {"operator": ">", "warning": 80.0, "critical": 90.0}
    book = RuleBook.from_config(ServerConfig(thresholds={"m": {"x": rule, "y": rule}}), "p.yaml")
    e = ThresholdEngine(book)
    for t, (host, action, data) in enumerate(steps):
        if action == "eval":
            e.evaluate_plugins(host, {"m": data}, float(t))
        elif action == "gone":
            e.evaluate_plugins(host, {"m": {}}, float(t))
        elif action == "forget":
            e.forget(host)
        else:
            e.restore(e.states())  # the same states again replace, never double
        assert e.summary() == e.summary(e.states())
        worst = {}
        for state in e.states():
            if SEVERITY[state.level] > SEVERITY.get(worst.get(state.host, Level.OK), 0):
                worst[state.host] = state.level
        assert e.worst_levels() == {h: level.value for h, level in worst.items()}


KEYS = st.sampled_from(["a", "b", "x_a", "y_b", "b_a"])
ALWAYS = {"operator": ">", "warning": -1e300}


def _rule_trees() -> st.SearchStrategy[dict[str, Any]]:
    rule = st.builds(lambda generic: {**ALWAYS, "generic": generic}, st.booleans())
    leaf = st.one_of(rule, st.none())
    return st.recursive(
        st.dictionaries(st.one_of(KEYS, st.just("*")), leaf, max_size=4),
        lambda inner: st.dictionaries(st.one_of(KEYS, st.just("*")),
                                      st.one_of(leaf, inner), max_size=4),
        max_leaves=10)


def _data() -> st.SearchStrategy[dict[str, Any]]:
    scalar = st.one_of(st.integers(-10**6, 10**6), st.floats(-1e6, 1e6), st.booleans())
    return st.recursive(st.dictionaries(KEYS, scalar, max_size=5),
                        lambda inner: st.dictionaries(KEYS, st.one_of(scalar, inner),
                                                      max_size=5),
                        max_leaves=15)


@given(_rule_trees(), _data())
@example({"a": {**ALWAYS, "generic": True}, "b_a": None, "*": {"x_a": ALWAYS}},
         {"b_a": 1, "y_b": {"x_a": 2.5}, "b": True})
def test_named_values_are_exactly_what_the_walk_evaluates(tree: dict[str, Any],
                                                          data: dict[str, Any]) -> None:
    """/metrics' named_values finds the same metric paths as evaluate_plugins alerts on
    when every rule fires: one matching, two uses."""
    book = RuleBook.from_config(ServerConfig(thresholds={"p": tree}), "prop.yaml")
    e = ThresholdEngine(book)
    alerted = {a.metric_path for a in e.evaluate_plugins("h", {"p": data}, 0.0)}
    named = {f"{plugin}.{path}": value
             for plugin, path, value in e.named_values(book.rules_for("h"), {"p": data})}
    assert set(named) == alerted
