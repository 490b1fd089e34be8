"""The threshold engine with plain values: levels, operators, hysteresis, paths, messages."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from heartbeat.config.server import HostConfig, ServerConfig
from heartbeat.server.thresholds.engine import Alert, AlertState, ThresholdEngine
from heartbeat.server.thresholds.rulebook import RuleBook
from heartbeat.server.thresholds.rules import Level, Rule
from heartbeat.server.thresholds.templates import (
    MISSING,
    parse_template,
    render_template,
    show_value,
)

OK, WARNING, CRITICAL, UNKNOWN = Level.OK, Level.WARNING, Level.CRITICAL, Level.UNKNOWN


def engine(thresholds: dict[str, Any] | None = None, **config: Any) -> ThresholdEngine:
    settings = ServerConfig(thresholds=thresholds or {}, **config)
    return ThresholdEngine(RuleBook.from_config(settings, "test.yaml"))


def cpu(value: Any) -> dict[str, Any]:
    return {"cpu_monitor": {"cpu_percent": value}}


def summary(alerts: list[Alert]) -> list[tuple[str, str, str, bool]]:
    return [(a.metric_path, a.previous.value, a.level.value, a.notify) for a in alerts]


CPU_RULE = {"cpu_monitor": {"cpu_percent": {"warning": 80.0, "critical": 90.0,
                                            "hysteresis": 0.10}}}


class RuleLevelTests:
    """Rule.level on single values."""

    @pytest.mark.parametrize(("op", "warning", "critical", "value", "expected"), [
        (">", 80, 90, 80, OK), (">", 80, 90, 80.5, WARNING), (">", 80, 90, 90.1, CRITICAL),
        (">=", 80, 90, 80, WARNING), (">=", 80, 90, 90, CRITICAL), (">=", 80, 90, 79.9, OK),
        ("<", 10, 5, 10, OK), ("<", 10, 5, 9.9, WARNING), ("<", 10, 5, 4, CRITICAL),
        ("<=", 10, 5, 10, WARNING), ("<=", 10, 5, 5, CRITICAL), ("<=", 10, 5, 11, OK),
        ("==", 1, 2, 2, CRITICAL), ("==", 1, 2, 1, WARNING), ("==", 1, 2, 0, OK),
        ("!=", "ONLINE", None, "DEGRADED", WARNING), ("!=", "ONLINE", None, "ONLINE", OK),
    ])
    def test_operators(self, op: str, warning: Any, critical: Any, value: Any,
                       expected: Level) -> None:
        """Each operator compares the value with critical first, then warning."""
        result = Rule(op, warning, critical).level(value)
        assert result is not None
        assert result[0] is expected

    def test_limit_crossed_is_reported(self) -> None:
        """The level comes with the limit that was passed (None when OK)."""
        rule = Rule(">", 80, 90)
        assert [rule.level(v) for v in (50, 85, 95)] == [(OK, None), (WARNING, 80), (CRITICAL, 90)]

    @pytest.mark.parametrize(("value", "expected"), [
        (0, (OK, None)), (1, (WARNING, 1)), (2, (CRITICAL, 2)), (3, (UNKNOWN, 3)),
        (127, (UNKNOWN, 3)), (-1, (UNKNOWN, 3)), ("CRITICAL", (CRITICAL, 2)), (2.0, (CRITICAL, 2)),
    ])
    def test_nagios_operator_maps_exit_codes(self, value: Any, expected: tuple[Level, Any]) -> None:
        """nagios: 0 OK, 1 WARNING, 2 CRITICAL, 3 and any other code UNKNOWN; no limits needed."""
        assert Rule("nagios").level(value) == expected

    @pytest.mark.parametrize("value", ["85%", None, float("nan"), [1], {"a": 1}])
    def test_uncomparable_values_are_skipped(self, value: Any) -> None:
        """A value an ordering operator cannot compare gives no level at all."""
        assert Rule(">", 80, 90).level(value) is None

    def test_only_critical(self) -> None:
        """A rule with only critical never warns."""
        rule = Rule(">", None, 90)
        assert [rule.level(v)[0] for v in (85, 95)] == [OK, CRITICAL]  # type: ignore[index]

    def test_reference_hysteresis_example(self) -> None:
        """Critical 90, hysteresis 10 %: 91 CRITICAL, 85 stays CRITICAL, 79 leaves it (81)."""
        rule = Rule(">", None, 90, hysteresis=0.10)
        level = OK
        seen = []
        for value in (91, 85, 81.01, 81, 79):
            result = rule.level(value, level)
            assert result is not None
            level = result[0]
            seen.append(level)
        assert seen == [CRITICAL, CRITICAL, CRITICAL, OK, OK]

    def test_hysteresis_applies_per_level(self) -> None:
        """From CRITICAL, a value under critical's recovery but over warning's is WARNING."""
        rule = Rule(">", 80, 90, hysteresis=0.10)
        assert rule.level(85, CRITICAL) == (CRITICAL, 90)
        assert rule.level(75, CRITICAL) == (WARNING, 80)
        assert rule.level(75, WARNING) == (WARNING, 80)
        assert rule.level(72, WARNING) == (OK, None)
        assert rule.level(85, OK) == (WARNING, 80)

    def test_hysteresis_mirrored_for_less_than(self) -> None:
        """For '<' the recovery limit moves up: critical 5, 10 % -> CRITICAL until 5.5."""
        rule = Rule("<", 10, 5, hysteresis=0.10)
        assert rule.level(4.9, OK) == (CRITICAL, 5)
        assert rule.level(5.4, CRITICAL) == (CRITICAL, 5)
        assert rule.level(5.6, CRITICAL) == (WARNING, 10)
        assert rule.level(10.5, WARNING) == (WARNING, 10)
        assert rule.level(11.1, WARNING) == (OK, None)
        assert rule.level(9.9, OK) == (WARNING, 10)

    def test_hysteresis_moves_negative_limits_toward_safety(self) -> None:
        """A negative limit moves by its magnitude, still toward the safe side."""
        rule = Rule(">", None, -10, hysteresis=0.10)
        assert rule.level(-10.5, CRITICAL) == (CRITICAL, -10)
        assert rule.level(-11.5, CRITICAL) == (OK, None)


class TemplateTests:
    """Display templates never raise."""

    def test_fields_and_format_specs(self) -> None:
        """Named fields are filled, with format specs and conversions."""
        fields = {"value": 85.123, "op_symbol": ">", "threshold_value": 80.0, "name": "x"}
        text = "{value:.1f} {op_symbol} {threshold_value} {name!r}"
        assert render_template(parse_template(text), lambda n: fields[n]) == "85.1 > 80.0 'x'"

    def test_missing_field_renders_its_name(self) -> None:
        """A field nobody provides renders as its own name (attribute syntax is just a name)."""
        fields = {"value": 3}
        assert render_template(parse_template("{nope}: {value} {a.b[0]}"),
                               lambda n: fields.get(n, MISSING)) == "nope: 3 a.b[0]"

    def test_spec_that_does_not_fit_falls_back(self) -> None:
        """A numeric format spec on a string shows the plain value instead of raising."""
        assert render_template(parse_template("{value:.2f}|{value:{w}}"),
                               lambda n: "n/a") == "n/a|n/a"

    @pytest.mark.parametrize(("text", "problem"), [
        ("{value", "expected '}'"), ("value}", "Single '}'"), ("{}", "needs a name"),
        ("{value!x}", "unknown conversion"),
    ])
    def test_bad_templates_are_rejected(self, text: str, problem: str) -> None:
        """Templates that cannot render are refused when parsed (at config load)."""
        with pytest.raises(ValueError, match=problem):
            parse_template(text)

    @pytest.mark.parametrize(("value", "text"), [
        (85.0, "85.0"), (125.3, "125.3"), (85.123456, "85.12"), (12, "12"), (True, "1"),
        ("DEGRADED", "DEGRADED"),
    ])
    def test_values_in_messages(self, value: Any, text: str) -> None:
        """Messages show floats to two decimals, other values as they are."""
        assert show_value(value) == text


class TransitionTests:
    """The engine's state machine and its messages, in the reference formats."""

    def test_reference_message_formats(self) -> None:
        """WARNING/CRITICAL/RECOVERED/REMINDER read exactly as in the reference."""
        e = engine({"cpu_monitor": {"cpu_percent": {"warning": 80.0, "critical": 90.0}},
                    "memory_monitor": {"percent": {"warning": 85.0, "critical": 95.0}},
                    "rtt": {"webserver01": {"warning": 100.0, "critical": 500.0}}})
        messages = [a.message for a in e.evaluate_plugins("webserver01", cpu(85.0), 1.0)]
        messages += [a.message for a in e.evaluate_plugins(
            "webserver01", {"memory_monitor": {"percent": 96.0}}, 2.0)]
        messages += [a.message for a in e.evaluate_rtt("webserver01", 125.3, 3.0)]
        messages += [a.message for a in e.evaluate_plugins("webserver01", cpu(75.0), 4.0)]
        messages += [a.message for a in e.reminders(3602.0)]
        assert messages == [
            "WARNING: webserver01 - cpu_monitor.cpu_percent = 85.0",
            "CRITICAL: webserver01 - memory_monitor.percent = 96.0",
            "WARNING: webserver01 - rtt.webserver01 = 125.3",
            "RECOVERED: webserver01 - cpu_monitor.cpu_percent = 75.0 (WARNING -> OK)",
            "REMINDER (CRITICAL): webserver01 - memory_monitor.percent = 96.0 "
            "(ongoing for 3600s)",
        ]

    def test_walk_through_every_transition(self) -> None:
        """OK->WARNING, ->CRITICAL notify; CRITICAL->WARNING does not; recovery does."""
        e = engine(CPU_RULE)
        steps = [50, 85, 95, 85, 75, 74, 50]
        alerts = [summary(e.evaluate_plugins("h", cpu(v), t)) for t, v in enumerate(steps)]
        path = "cpu_monitor.cpu_percent"
        assert alerts == [
            [], [(path, "OK", "WARNING", True)], [(path, "WARNING", "CRITICAL", True)],
            [], [(path, "CRITICAL", "WARNING", False)], [], [(path, "WARNING", "OK", True)],
        ]

    def test_alert_event_data(self) -> None:
        """An alert carries everything the notifier and the UI need."""
        e = engine(CPU_RULE)
        e.evaluate_plugins("h", cpu(85), 10.0)
        (alert,) = e.evaluate_plugins("h", cpu(95), 20.0)
        assert alert.to_json() == {
            "metric_path": "cpu_monitor.cpu_percent", "level": "CRITICAL",
            "previous": "WARNING", "value": 95, "threshold_value": 90.0, "operator": ">",
            "message": "CRITICAL: h - cpu_monitor.cpu_percent = 95", "display": "",
            "since": 20.0, "notify": True, "reminder": False, "cleared": False,
            "flapping": False}
        assert (alert.host, alert.ts) == ("h", 20.0)

    def test_state_is_kept_per_host_and_path(self) -> None:
        """Active alerts list level, value, limit, since and last notification."""
        e = engine(CPU_RULE)
        e.evaluate_plugins("a", cpu(85), 1.0)
        e.evaluate_plugins("a", cpu(87), 2.0)
        e.evaluate_plugins("b", cpu(99), 3.0)
        assert [s.to_json() for s in e.states()] == [
            {"host": "b", "metric_path": "cpu_monitor.cpu_percent", "level": "CRITICAL",
             "value": 99, "threshold_value": 90.0,
             "message": "CRITICAL: b - cpu_monitor.cpu_percent = 99", "since": 3.0,
             "last_notified": 3.0, "flapping": False,
             "recovering": None},
            {"host": "a", "metric_path": "cpu_monitor.cpu_percent", "level": "WARNING",
             "value": 87, "threshold_value": 80.0,
             "message": "WARNING: a - cpu_monitor.cpu_percent = 87", "since": 1.0,
             "last_notified": 1.0, "flapping": False,
             "recovering": None},
        ]
        assert e.summary() == {"CRITICAL": 1, "WARNING": 1, "UNKNOWN": 0}
        assert [s.host for s in e.states("a")] == ["a"]

    def test_recovery_reports_the_limit_that_was_crossed(self) -> None:
        """RECOVERED carries the previous level's limit, not None."""
        e = engine(CPU_RULE)
        e.evaluate_plugins("h", cpu(95), 1.0)
        (alert,) = e.evaluate_plugins("h", cpu(10), 2.0)
        assert (alert.level, alert.previous, alert.threshold_value) == (OK, CRITICAL, 90.0)
        assert e.states() == []

    def test_straight_from_critical_to_ok(self) -> None:
        """A drop below every recovery limit recovers in one step, notified."""
        e = engine(CPU_RULE)
        e.evaluate_plugins("h", cpu(95), 1.0)
        assert [a.message for a in e.evaluate_plugins("h", cpu(1.5), 2.0)] == [
            "RECOVERED: h - cpu_monitor.cpu_percent = 1.5 (CRITICAL -> OK)"]

    def test_reminders_every_interval_while_not_ok(self) -> None:
        """A REMINDER comes every threshold_renotify_interval, counted from the last notice."""
        e = engine(CPU_RULE, threshold_renotify_interval=100.0)
        e.evaluate_plugins("h", cpu(95), 0.0)
        assert e.reminders(99.0) == []
        (first,) = e.reminders(100.0)
        assert (first.reminder, first.notify, first.level, first.previous) == (
            True, True, CRITICAL, CRITICAL)
        assert first.message == ("REMINDER (CRITICAL): h - cpu_monitor.cpu_percent = 95 "
                                 "(ongoing for 100s)")
        assert e.reminders(150.0) == []
        assert [a.message for a in e.reminders(200.0)] == [
            "REMINDER (CRITICAL): h - cpu_monitor.cpu_percent = 95 (ongoing for 200s)"]
        e.evaluate_plugins("h", cpu(10), 210.0)
        assert e.reminders(1000.0) == []

    def test_de_escalation_keeps_the_reminder_schedule(self) -> None:
        """De-escalation notifies nobody, so the next reminder still counts from the last."""
        e = engine(CPU_RULE, threshold_renotify_interval=100.0)
        e.evaluate_plugins("h", cpu(95), 0.0)
        e.evaluate_plugins("h", cpu(75), 60.0)
        assert [a.message for a in e.reminders(100.0)] == [
            "REMINDER (WARNING): h - cpu_monitor.cpu_percent = 75 (ongoing for 40s)"]

    def test_zero_interval_disables_reminders(self) -> None:
        """threshold_renotify_interval 0 means no reminders at all."""
        e = engine(CPU_RULE, threshold_renotify_interval=0.0)
        e.evaluate_plugins("h", cpu(95), 0.0)
        assert e.reminders(10**9) == []

    def test_unknown_escalation_order(self) -> None:
        """UNKNOWN sits between WARNING and CRITICAL: WARNING->UNKNOWN notifies,
        CRITICAL->UNKNOWN does not."""
        e = engine()
        checks = [1, 3, 2, 3, 0]
        got = [summary(e.evaluate_plugins("h", {"nagios_runner": {"check_x_status_code": c}},
                                          t)) for t, c in enumerate(checks)]
        path = "nagios_runner.check_x_status_code"
        assert got == [[(path, "OK", "WARNING", True)], [(path, "WARNING", "UNKNOWN", True)],
                       [(path, "UNKNOWN", "CRITICAL", True)],
                       [(path, "CRITICAL", "UNKNOWN", False)], [(path, "UNKNOWN", "OK", True)]]

    def test_uncomparable_value_keeps_the_state(self) -> None:
        """A value that cannot be compared neither recovers nor clears an alert."""
        e = engine(CPU_RULE)
        e.evaluate_plugins("h", cpu(95), 1.0)
        assert e.evaluate_plugins("h", cpu("n/a"), 2.0) == []
        assert [s.level for s in e.states()] == [CRITICAL]

    def test_metric_no_longer_reported_is_cleared_quietly(self) -> None:
        """A plugin sample without the alerting metric clears it, without notifying."""
        e = engine({"disk_monitor": {"partitions": {"*": {"percent": {"critical": 90}}}}})
        e.evaluate_plugins("h", {"disk_monitor": {"partitions": {"/mnt": {"percent": 95}}}}, 1)
        assert e.evaluate_plugins("h", {"cpu_monitor": {"cpu_percent": 1}}, 2) == []
        (alert,) = e.evaluate_plugins("h", {"disk_monitor": {"partitions": {}}}, 3)
        assert (alert.level, alert.previous, alert.notify, alert.cleared, alert.message) == (
            OK, CRITICAL, False, True, "CLEARED: h - disk_monitor.partitions./mnt.percent "
                                       "(no longer reported)")
        assert e.states() == []

    @pytest.mark.parametrize("data", [{"error": "zpool timed out"},
                                      {"available": False, "reason": "no zpool"}, "garbage"])
    def test_failed_plugin_sample_keeps_the_state(self, data: Any) -> None:
        """A plugin that reports an error (or nothing usable) clears no alert."""
        e = engine()
        e.evaluate_plugins("nas", {"zfs_monitor": {"pools": {"tank": {"health_ok": 0}}}}, 1)
        assert e.evaluate_plugins("nas", {"zfs_monitor": data}, 2) == []
        assert [s.metric_path for s in e.states()] == ["zfs_monitor.pools.tank.health_ok"]

    def test_rule_removed_clears_the_state(self) -> None:
        """After a restart with the rule gone, the next sample clears the stored alert."""
        first = engine(CPU_RULE)
        first.evaluate_plugins("h", cpu(95), 1.0)
        second = engine({})
        second.restore(first.states())
        assert [a.cleared for a in second.evaluate_plugins("h", cpu(95), 2.0)] == [True]

    def test_restored_state_does_not_notify_again(self) -> None:
        """States restored after a restart do not transition (or notify) on the same level."""
        first = engine(CPU_RULE)
        first.evaluate_plugins("h", cpu(95), 1.0)
        second = engine(CPU_RULE)
        second.restore(first.states())
        assert second.evaluate_plugins("h", cpu(96), 2.0) == []
        assert [s.to_json() for s in second.states()] == [{
            "host": "h", "metric_path": "cpu_monitor.cpu_percent", "level": "CRITICAL",
            "value": 96, "threshold_value": 90.0,
            "message": "CRITICAL: h - cpu_monitor.cpu_percent = 96", "since": 1.0,
            "last_notified": 1.0, "flapping": False,
             "recovering": None}]

    def test_forget_drops_a_removed_hosts_states(self) -> None:
        """A removed host's alerts disappear and are deleted from the store."""
        e = engine(CPU_RULE)
        e.evaluate_plugins("h", cpu(95), 1.0)
        e.take_dirty()
        e.forget("h")
        assert (e.states(), e.take_dirty()) == ([], ([], [("h", "cpu_monitor.cpu_percent")]))

    def test_dirty_states_are_copies(self) -> None:
        """take_dirty hands out snapshots: later changes do not leak into a queued write."""
        e = engine(CPU_RULE)
        e.evaluate_plugins("h", cpu(85), 1.0)
        upserts, deletes = e.take_dirty()
        e.evaluate_plugins("h", cpu(86), 2.0)
        assert ([s.value for s in upserts], deletes) == ([85], [])
        assert e.take_dirty()[0][0].value == 86
        assert e.take_dirty() == ([], [])

    def test_event_data_is_not_mutated(self) -> None:
        """Evaluation leaves the plugin data exactly as it came (other subscribers share it)."""
        plugins = {"zfs_monitor": {"pools": {"tank": {"health": "DEGRADED"}}},
                   "cpu_monitor": {"cpu_percent": 99}}
        before = copy.deepcopy(plugins)
        engine(CPU_RULE).evaluate_plugins("h", plugins, 1.0)
        assert plugins == before


class PathTests:
    """Nested metric paths, wildcards, generic matching and health_ok synthesis."""

    def test_nested_paths(self) -> None:
        """Rules mirror nested data; the metric path joins every key with dots."""
        e = engine({"disk_monitor": {"partitions": {
            "/": {"percent": {"warning": 80, "critical": 90}},
            "/var/lib/postgresql": {"free_gb": {"warning": 10, "critical": 5, "operator": "<"}},
        }}})
        data = {"disk_monitor": {"partitions": {
            "/": {"percent": 85.0, "free_gb": 3.0},
            "/var/lib/postgresql": {"percent": 99.0, "free_gb": 4.5},
        }}}
        assert [a.message for a in e.evaluate_plugins("db", data, 1.0)] == [
            "WARNING: db - disk_monitor.partitions./.percent = 85.0",
            "CRITICAL: db - disk_monitor.partitions./var/lib/postgresql.free_gb = 4.5",
        ]

    def test_wildcard_matches_any_key_and_exact_wins_per_metric(self) -> None:
        """'*' covers every key at its level; an exact sibling overrides only its own metrics."""
        e = engine({"disk_monitor": {"partitions": {
            "*": {"percent": {"warning": 80, "critical": 90}, "free_gb": {"critical": 1,
                                                                           "operator": "<"}},
            "/boot": {"percent": {"warning": 95, "critical": 99}},
        }}})
        data = {"disk_monitor": {"partitions": {
            "/": {"percent": 85, "free_gb": 50}, "/home": {"percent": 91, "free_gb": 0.5},
            "/boot": {"percent": 85, "free_gb": 0.2},
        }}}
        assert sorted(summary(e.evaluate_plugins("h", data, 1.0))) == [
            ("disk_monitor.partitions./.percent", "OK", "WARNING", True),
            ("disk_monitor.partitions./boot.free_gb", "OK", "CRITICAL", True),
            ("disk_monitor.partitions./home.free_gb", "OK", "CRITICAL", True),
            ("disk_monitor.partitions./home.percent", "OK", "CRITICAL", True),
        ]

    def test_generic_matching_strips_leading_segments(self) -> None:
        """check_disk_root_status_code finds status_code; the prefix is {check_name}."""
        e = engine({"nagios_runner": {"status_code": {
            "operator": "nagios",
            "display": "{check_name}: {output} [{status}] {metric_name} {op_symbol}"}}})
        data = {"nagios_runner": {
            "check_disk_root_status_code": 2, "check_disk_root_status": "CRITICAL",
            "check_disk_root_output": "DISK CRITICAL - free space: / 100 MB",
            "check_load_status_code": 0, "check_load_status": "OK",
            "check_load_output": "OK - load average: 0.1",
        }}
        (alert,) = e.evaluate_plugins("web", data, 1.0)
        assert alert.message == (
            "CRITICAL: web - nagios_runner.check_disk_root_status_code = 2 check_disk_root: "
            "DISK CRITICAL - free space: / 100 MB [CRITICAL] check_disk_root_status_code nagios")
        assert (alert.display, alert.threshold_value) == (
            "check_disk_root: DISK CRITICAL - free space: / 100 MB [CRITICAL] "
            "check_disk_root_status_code nagios", 2)

    def test_exact_match_wins_over_generic(self) -> None:
        """An exact entry is used even when a generic one would also fit."""
        e = engine({"nagios_runner": {
            "status_code": {"operator": "nagios"},
            "check_backup_status_code": {"operator": ">=", "critical": 1},
        }})
        data = {"nagios_runner": {"check_backup_status_code": 1, "check_ntp_status_code": 1}}
        assert sorted(summary(e.evaluate_plugins("h", data, 1.0))) == [
            ("nagios_runner.check_backup_status_code", "OK", "CRITICAL", True),
            ("nagios_runner.check_ntp_status_code", "OK", "WARNING", True),
        ]

    def test_generic_prefers_the_fewest_stripped_segments(self) -> None:
        """The first rule found while stripping one segment at a time is the one used."""
        e = engine({"m": {"code": {"critical": 1}, "status_code": {"warning": 1}}})
        assert summary(e.evaluate_plugins("h", {"m": {"disk_status_code": 5}}, 1.0)) == [
            ("m.disk_status_code", "OK", "WARNING", True)]

    def test_generic_matches_whole_segments_only(self) -> None:
        """'percent' matches swap_percent but not swappercent."""
        e = engine({"memory_monitor": {"percent": {"critical": 50}}})
        data = {"memory_monitor": {"swap_percent": 60, "swappercent": 60}}
        assert summary(e.evaluate_plugins("h", data, 1.0)) == [
            ("memory_monitor.swap_percent", "OK", "CRITICAL", True)]

    def test_generic_false_limits_a_rule_to_its_own_name(self) -> None:
        """generic: false keeps a rule from matching *_<name> metrics."""
        e = engine({"memory_monitor": {"percent": {"critical": 50, "generic": False}}})
        data = {"memory_monitor": {"percent": 60, "swap_percent": 60}}
        assert summary(e.evaluate_plugins("h", data, 1.0)) == [
            ("memory_monitor.percent", "OK", "CRITICAL", True)]

    @pytest.mark.parametrize("health", ["DEGRADED", "SUSPENDED", "FAULTED", "UNAVAIL"])
    def test_health_ok_synthesised_for_old_zfs_clients(self, health: str) -> None:
        """Pools with only a health string get health_ok, so the default rule fires."""
        e = engine()
        data = {"zfs_monitor": {"pools": {"tank": {"health": health, "capacity": 10},
                                          "rpool": {"health": "ONLINE", "capacity": 10}}}}
        assert [a.message for a in e.evaluate_plugins("nas", data, 1.0)] == [
            f"CRITICAL: nas - zfs_monitor.pools.tank.health_ok = 0 pool health {health}"]

    def test_health_ok_sent_by_the_client_wins(self) -> None:
        """A client's own health_ok is used as sent."""
        e = engine()
        data = {"zfs_monitor": {"pools": {"tank": {"health": "DEGRADED", "health_ok": 1}}}}
        assert e.evaluate_plugins("nas", data, 1.0) == []

    def test_default_rules_and_removal(self) -> None:
        """Built-in rules apply unless the user replaces them or removes them with null."""
        data = {"zfs_monitor": {"pools": {"tank": {"health": "DEGRADED", "capacity": 85}}},
                "nagios_runner": {"check_x_status_code": 2}}
        got = summary(engine().evaluate_plugins("h", data, 1.0))
        assert sorted(got) == [
            ("nagios_runner.check_x_status_code", "OK", "CRITICAL", True),
            ("zfs_monitor.pools.tank.capacity", "OK", "WARNING", True),
            ("zfs_monitor.pools.tank.health_ok", "OK", "CRITICAL", True),
        ]
        replaced = engine({"zfs_monitor": {"pools": {"*": {"capacity": {"critical": 80}}}}})
        assert sorted(summary(replaced.evaluate_plugins("h", data, 1.0)))[1:] == [
            ("zfs_monitor.pools.tank.capacity", "OK", "CRITICAL", True),
            ("zfs_monitor.pools.tank.health_ok", "OK", "CRITICAL", True),
        ]
        removed = engine({"zfs_monitor": None, "nagios_runner": {"status_code": None}})
        assert removed.evaluate_plugins("h", data, 1.0) == []

    def test_template_sees_plugin_fields_and_siblings(self) -> None:
        """Any plugin field can be named; the metric's siblings come before the plugin's."""
        e = engine({"disk_monitor": {"partitions": {"*": {"percent": {
            "critical": 90, "display": "{device} on {hostname}: {free_gb:.0f} GB free "
                                       "({value}% {op_symbol} {threshold_value}%) {missing}"}}}}})
        data = {"disk_monitor": {"hostname": "db", "partitions": {
            "/": {"percent": 95.0, "free_gb": 2.4, "device": "/dev/sda1"}}}}
        (alert,) = e.evaluate_plugins("db", data, 1.0)
        assert alert.display == "/dev/sda1 on db: 2 GB free (95.0% > 90%) missing"

    def test_rtt_per_host_and_wildcard(self) -> None:
        """rtt.<host> rules apply to that host's heartbeats; rtt.'*' to every other host."""
        e = engine({"rtt": {"db": {"warning": 50, "critical": 200}, "*": {"critical": 1000}}})
        assert summary(e.evaluate_rtt("db", 60.0, 1.0)) == [("rtt.db", "OK", "WARNING", True)]
        assert e.evaluate_rtt("web", 600.0, 1.0) == []
        assert summary(e.evaluate_rtt("web", 1500.0, 2.0)) == [
            ("rtt.web", "OK", "CRITICAL", True)]
        assert [a.message for a in e.evaluate_rtt("db", 45.2, 3.0)] == [
            "RECOVERED: db - rtt.db = 45.2 (WARNING -> OK)"]

    def test_null_beside_wildcard_exempts_that_key(self) -> None:
        """`/boot: null` next to `*` (and `rtt.<host>: null` next to `rtt.*`) means no rule."""
        e = engine({"disk_monitor": {"partitions": {"*": {"percent": {"critical": 90}},
                                                    "/boot": None}},
                    "rtt": {"*": {"critical": 100}, "lab": None}})
        data = {"disk_monitor": {"partitions": {"/boot": {"percent": 99.0},
                                                "/": {"percent": 95.0}}}}
        assert summary(e.evaluate_plugins("h", data, 1.0)) == [
            ("disk_monitor.partitions./.percent", "OK", "CRITICAL", True)]
        assert (e.evaluate_rtt("lab", 500.0, 1.0), summary(e.evaluate_rtt("web", 500.0, 1.0))) == (
            [], [("rtt.web", "OK", "CRITICAL", True)])

    def test_rtt_without_rule_clears(self) -> None:
        """A host whose RTT rule is gone clears its RTT alert on the next heartbeat."""
        first = engine({"rtt": {"db": {"critical": 10}}})
        first.evaluate_rtt("db", 60.0, 1.0)
        second = engine()
        second.restore(first.states())
        assert [a.cleared for a in second.evaluate_rtt("db", 60.0, 2.0)] == [True]


class ProfileTests:
    """threshold_configs: default for everyone, host lists applied left to right."""

    CONFIG: dict[str, Any] = {
        "thresholds": {"cpu_monitor": {"cpu_percent": {"warning": 85, "critical": 95}}},
        "threshold_configs": {
            "default": {"thresholds": {
                "cpu_monitor": {"cpu_percent": {"warning": 80, "critical": 90}},
                "memory_monitor": {"memory_percent": {"warning": 85, "critical": 95}}}},
            "tight_cpu": {"thresholds": {"cpu_monitor": {
                "cpu_percent": {"warning": 60, "critical": 75}}}},
            "db_disk": {"thresholds": {"disk_monitor": {"partitions": {
                "/var/lib/postgresql": {"percent": {"warning": 75, "critical": 88}}}}}},
            "no_memory": {"thresholds": {"memory_monitor": None}},
        },
        "hosts": {"web-01": HostConfig(threshold_config="default"),
                  "db-01": HostConfig(threshold_config=["tight_cpu", "db_disk"]),
                  "lab": HostConfig(threshold_config=["no_memory"]),
                  "odd": HostConfig(threshold_config=["tight_cpu", "default"])},
    }

    def book(self) -> RuleBook:
        return RuleBook.from_config(ServerConfig(**self.CONFIG), "test.yaml")

    def cpu_limits(self, host: str) -> tuple[Any, Any]:
        rule = self.book().rules_for(host).tree["cpu_monitor"]["cpu_percent"]  # type: ignore[index]
        assert isinstance(rule, Rule)
        return rule.warning, rule.critical

    def test_default_profile_applies_to_every_host(self) -> None:
        """Hosts with no threshold_config get thresholds: plus the 'default' profile."""
        assert self.cpu_limits("anyhost") == (80, 90)
        assert self.cpu_limits("web-01") == (80, 90)
        assert self.book().profiles_for("anyhost") == ("default",)

    def test_profiles_layer_left_to_right(self) -> None:
        """A list applies in order; unmentioned metrics are inherited unchanged."""
        book = self.book()
        assert book.profiles_for("db-01") == ("default", "tight_cpu", "db_disk")
        effective = book.effective("db-01")
        assert effective == {
            "host": "db-01", "profiles": ["default", "tight_cpu", "db_disk"],
            "renotify_interval": 3600.0,
            "thresholds": {
                "zfs_monitor": {"pools": {"*": {
                    "health_ok": {"operator": "<", "warning": None, "critical": 1,
                                  "hysteresis": 0.0, "display": "pool health {health}",
                                  "generic": False},
                    "capacity": {"operator": ">=", "warning": 80, "critical": 90,
                                 "hysteresis": 0.02, "generic": False}}}},
                "nagios_runner": {"status_code": {"operator": "nagios",
                                                  "display": "{check_name}: {output}"}},
                "cpu_monitor": {"cpu_percent": {"operator": ">", "warning": 60, "critical": 75,
                                                "hysteresis": 0.02}},
                "memory_monitor": {"memory_percent": {"operator": ">", "warning": 85,
                                                      "critical": 95, "hysteresis": 0.02}},
                "disk_monitor": {"partitions": {"/var/lib/postgresql": {"percent": {
                    "operator": ">", "warning": 75, "critical": 88, "hysteresis": 0.02}}}},
            },
        }

    def test_explicit_default_position_is_kept(self) -> None:
        """A host listing 'default' itself gets it where it is listed (here: last)."""
        assert self.book().profiles_for("odd") == ("tight_cpu", "default")
        assert self.cpu_limits("odd") == (80, 90)

    def test_profile_can_remove_with_null(self) -> None:
        """null in a profile removes the inherited rules."""
        assert "memory_monitor" not in self.book().rules_for("lab").tree

    def test_rtt_rule_of_a_profile_alone(self) -> None:
        """An RTT rule only a profile has (none under ``thresholds:``) still applies to
        that profile's hosts, and to none of the others."""
        config = {**self.CONFIG, "threshold_configs": {
            **self.CONFIG["threshold_configs"],
            "tight_cpu": {"thresholds": {"rtt": {"*": {"critical": 100}}}}}}
        e = ThresholdEngine(RuleBook.from_config(ServerConfig(**config), "test.yaml"))
        assert e.rules.has_rtt_rules and not self.book().has_rtt_rules
        assert e.evaluate_rtt("web-01", 500.0, 1.0) == []
        assert summary(e.evaluate_rtt("db-01", 500.0, 1.0)) == [("rtt.db-01", "OK", "CRITICAL",
                                                                  True)]

    def test_hosts_evaluate_with_their_own_profile(self) -> None:
        """The same value alerts on the tight host and not on the default one."""
        e = ThresholdEngine(self.book())
        assert e.evaluate_plugins("web-01", cpu(70), 1.0) == []
        assert summary(e.evaluate_plugins("db-01", cpu(70), 1.0)) == [
            ("cpu_monitor.cpu_percent", "OK", "WARNING", True)]


def test_alert_state_json_roundtrip_fields() -> None:
    """AlertState keeps exactly the stored columns."""
    state = AlertState("h", "cpu_monitor", "cpu_monitor.cpu_percent", CRITICAL, 95, 90, ">",
                       "", 1.0, 2.0)
    assert state.message == "CRITICAL: h - cpu_monitor.cpu_percent = 95"


class AgentShapeTests:
    """The data the agent documents (docs/AGENT.md on the agent branch), verbatim."""

    NAGIOS = {"check_load_status_code": 0, "check_load_status": "OK",
              "check_load_output": "OK - load average: 0.30, 0.20, 0.10",
              "check_load_load1": 0.3, "check_load_load5": 0.2, "check_load_load15": 0.1,
              "check_disk_status_code": 2, "check_disk_status": "CRITICAL",
              "check_disk_output": "DISK CRITICAL - free space: / 100 MB (2%)",
              "check_disk_root": 4800}
    ZFS = {"pools": {"tank": {
        "health": "DEGRADED", "health_ok": 0, "size": 9981503995904, "alloc": 3046184919040,
        "free": 6935319076864, "capacity": 30, "fragmentation": 9, "dedup_ratio": 1.0,
        "read_errors": 0, "write_errors": 0, "checksum_errors": 0, "data_errors": 0,
        "vdevs_unhealthy": 1, "scan": "resilvered 1.20T in 03:12:45 with 0 errors",
        "vdevs": [{"name": "mirror-0", "state": "DEGRADED", "depth": 1, "read": 0,
                   "write": 0, "cksum": 0, "note": None}]}},
        "pool_count": 1, "pools_unhealthy": 1}
    DISK = {"partitions": {"/": {"device": "/dev/sda1", "fstype": "ext4", "total_gb": 48.9,
                                 "used_gb": 20.1, "free_gb": 2.3, "free_mb": 2355.2,
                                 "percent": 91.3, "inodes_percent": 12.0}},
            "io": {"read_bytes": 123456789, "write_bytes": 987654321}}

    def test_built_in_rules_on_agent_data(self) -> None:
        """Out of the box, a failing Nagios check and a degraded pool are CRITICAL."""
        alerts = engine().evaluate_plugins("nas", {"nagios_runner": self.NAGIOS,
                                                   "zfs_monitor": self.ZFS}, 1.0)
        assert [a.message for a in alerts] == [
            "CRITICAL: nas - nagios_runner.check_disk_status_code = 2 check_disk: "
            "DISK CRITICAL - free space: / 100 MB (2%)",
            "CRITICAL: nas - zfs_monitor.pools.tank.health_ok = 0 pool health DEGRADED",
        ]

    def test_reference_rules_on_agent_disk_data(self) -> None:
        """The reference's disk rules, nested under partitions, watch the agent's partitions."""
        e = engine({"disk_monitor": {"partitions": {"/": {
            "percent": {"warning": 80.0, "critical": 90.0},
            "free_gb": {"warning": 10.0, "critical": 5.0, "operator": "<"}}}}})
        assert sorted(summary(e.evaluate_plugins("web", {"disk_monitor": self.DISK}, 1.0))) == [
            ("disk_monitor.partitions./.free_gb", "OK", "CRITICAL", True),
            ("disk_monitor.partitions./.percent", "OK", "CRITICAL", True),
        ]
