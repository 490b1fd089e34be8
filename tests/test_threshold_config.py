"""Threshold configuration is checked at load: every bad rule names its key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from heartbeat.config.loader import ConfigError, parse_config
from heartbeat.config.server import HostConfig, ServerConfig
from heartbeat.server.thresholds.rulebook import RuleBook
from heartbeat.server.thresholds.rules import Rule


def check(**config: Any) -> RuleBook:
    return RuleBook.from_config(ServerConfig(**config), "hb.yaml")


def problem(**config: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        check(**config)
    return str(caught.value)


class RuleValidationTests:
    @pytest.mark.parametrize(("thresholds", "message"), [
        ({"cpu_monitor": {"cpu_percent": {"warning": 80, "operator": "=>"}}},
         "hb.yaml: thresholds.cpu_monitor.cpu_percent.operator: unknown operator '=>'; "
         "expected one of > >= < <= == != nagios"),
        ({"cpu_monitor": {"cpu_percent": {"warning": 95, "critical": 90}}},
         "hb.yaml: thresholds.cpu_monitor.cpu_percent.warning: warning 95 is above critical 90: "
         "with operator '>' it must be reached first"),
        ({"disk_monitor": {"partitions": {"/": {"free_gb": {
            "warning": 5, "critical": 10, "operator": "<"}}}}},
         "hb.yaml: thresholds.disk_monitor.partitions./.free_gb.warning: warning 5 is below "
         "critical 10: with operator '<' it must be reached first"),
        ({"cpu_monitor": {"cpu_percent": {"warning": 80, "display": "{value"}}},
         "hb.yaml: thresholds.cpu_monitor.cpu_percent.display: bad template: "
         "expected '}' before end of string"),
        ({"cpu_monitor": {"cpu_percent": {"warning": 80, "display": "x {} y"}}},
         "hb.yaml: thresholds.cpu_monitor.cpu_percent.display: bad template: a field needs a "
         "name, e.g. {value}; '{}' names none"),
        ({"cpu_monitor": {"cpu_percent": {"warning": 80, "display": 5}}},
         "hb.yaml: thresholds.cpu_monitor.cpu_percent.display: expected a string, got 5"),
        ({"cpu_monitor": {"cpu_percent": {"warning": 80, "critcal": 90}}},
         "hb.yaml: thresholds.cpu_monitor.cpu_percent.critcal: unknown rule key (did you mean "
         "'critical'?); a rule has operator, warning, critical, hysteresis, display, generic, "
         "recover_after"),
        ({"cpu_monitor": {"cpu_percent": {"critcal": 90}}},
         "hb.yaml: thresholds.cpu_monitor.cpu_percent.critcal: expected a rule "
         "(warning/critical/operator) or a mapping of nested metrics, got 90 "
         "(did you mean 'critical'?)"),
        ({"cpu_monitor": {"cpu_percent": {"warning": "high"}}},
         "hb.yaml: thresholds.cpu_monitor.cpu_percent.warning: expected a number for operator "
         "'>', got 'high'"),
        ({"cpu_monitor": {"cpu_percent": {"operator": ">"}}},
         "hb.yaml: thresholds.cpu_monitor.cpu_percent: a rule with operator '>' needs warning "
         "or critical"),
        ({"cpu_monitor": {"cpu_percent": {"display": "x"}}},
         "hb.yaml: thresholds.cpu_monitor.cpu_percent: a rule needs operator, warning or "
         "critical"),
        ({"cpu_monitor": {"cpu_percent": {"warning": 80, "hysteresis": 1.5}}},
         "hb.yaml: thresholds.cpu_monitor.cpu_percent.hysteresis: must be a fraction in [0, 1), "
         "got 1.5"),
        ({"nagios_runner": {"status_code": {"operator": "nagios", "critical": 2}}},
         "hb.yaml: thresholds.nagios_runner.status_code.critical: the nagios operator takes no "
         "limits: exit code 1 is WARNING, 2 CRITICAL, 3 UNKNOWN"),
        ({"cpu_monitor": {"warning": 80, "critical": 90}},
         "hb.yaml: thresholds.cpu_monitor: a plugin's entry maps metric names to rules, e.g. "
         "cpu_percent: {warning: 80, critical: 90}"),
        ({"cpu_monitor": 80},
         "hb.yaml: thresholds.cpu_monitor: expected a mapping (a plugin, or under rtt a rule "
         "per host), got 80"),
        ({"rtt": {"web": 100}},
         "hb.yaml: thresholds.rtt.web: expected a rule such as {warning: 100, critical: 500} "
         "(ms), got 100"),
        ({"cpu_monitor": {"cpu_percent": {"warning": 80, "generic": "no"}}},
         "hb.yaml: thresholds.cpu_monitor.cpu_percent.generic: expected true or false, got 'no'"),
    ])
    def test_bad_rules_name_their_key(self, thresholds: dict[str, Any], message: str) -> None:
        """Each mistake stops loading with one line: file, key path, what is wrong."""
        assert problem(thresholds=thresholds) == message

    def test_good_rules_get_defaults(self) -> None:
        """operator defaults to '>', hysteresis to 0.02; strings are fine for == and !=."""
        book = check(thresholds={
            "cpu_monitor": {"cpu_percent": {"warning": 80}},
            "zfs_monitor": {"pools": {"*": {"health": {"operator": "!=", "critical": "ONLINE"}}}},
            "rtt": {"web": {"warning": 100, "critical": 500, "hysteresis": 0.05}},
        })
        tree = book.rules_for("x").tree
        assert tree["cpu_monitor"] == {"cpu_percent": Rule(">", 80, None, 0.02)}
        assert tree["rtt"] == {"web": Rule(">", 100, 500, 0.05)}
        assert tree["zfs_monitor"]["pools"]["*"]["health"] == Rule(  # type: ignore[index]
            "!=", None, "ONLINE")

    def test_equal_warning_and_critical_are_allowed(self) -> None:
        """warning == critical is odd but not on the wrong side."""
        check(thresholds={"m": {"x": {"warning": 5, "critical": 5}}})


class ProfileValidationTests:
    def test_unknown_profile_names_the_host_key(self) -> None:
        """A host naming a profile that does not exist stops start-up at that host's key."""
        assert problem(threshold_configs={"tight": {"thresholds": {}}},
                       hosts={"db-01": HostConfig(threshold_config=["tigth"])}) == (
            "hb.yaml: hosts.db-01.threshold_config: unknown threshold profile 'tigth' "
            "(known: tight) (did you mean 'tight'?)")

    def test_bad_rule_inside_a_profile(self) -> None:
        """A profile's rules are checked like the top-level ones, with the profile's path."""
        assert problem(threshold_configs={"tight": {"thresholds": {"cpu_monitor": {
            "cpu_percent": {"operator": "gt", "warning": 1}}}}}) == (
            "hb.yaml: threshold_configs.tight.thresholds.cpu_monitor.cpu_percent.operator: "
            "unknown operator 'gt'; expected one of > >= < <= == != nagios")

    def test_unknown_profile_key(self) -> None:
        """A profile has 'thresholds' (and a description), nothing else."""
        assert problem(threshold_configs={"tight": {"threshold": {}}}) == (
            "hb.yaml: threshold_configs.tight.threshold: unknown key (did you mean "
            "'thresholds'?); a profile has thresholds (and an optional description and "
            "recover_after)")

    def test_profile_must_be_a_mapping(self) -> None:
        """A profile that is not a mapping is refused."""
        assert problem(threshold_configs={"tight": [1]}) == (
            "hb.yaml: threshold_configs.tight: expected a mapping with 'thresholds', got [1]")


def test_yaml_config_round_trip() -> None:
    """The reference's YAML example loads as written, including null removal."""
    text = """
thresholds:
  rtt:
    webserver01: {warning: 100.0, critical: 500.0}
  cpu_monitor:
    cpu_percent:
      warning: 80.0
      critical: 90.0
      operator: ">"
      hysteresis: 0.02
      display: "(threshold: {op_symbol} {threshold_value}%)"
  disk_monitor:
    partitions:
      /:
        free_gb: {warning: 10.0, critical: 5.0, operator: "<"}
  zfs_monitor: null
threshold_configs:
  default:
    thresholds:
      memory_monitor:
        memory_percent: {warning: 85, critical: 95}
hosts:
  db-01:
    threshold_config: [default]
threshold_renotify_interval: 1800
"""
    config = parse_config(ServerConfig, text, "hb.yaml")
    book = RuleBook.from_config(config, "hb.yaml")
    assert sorted(book.rules_for("db-01").tree) == [
        "cpu_monitor", "disk_monitor", "memory_monitor", "nagios_runner", "rtt"]
    assert book.renotify_interval == 1800.0


def test_example_config_threshold_section_is_valid() -> None:
    """The thresholds part of etc/heartbeat.example.yaml, uncommented, loads and checks."""
    path = Path(__file__).parent.parent / "etc" / "heartbeat.example.yaml"
    text = path.read_text()
    section = text[text.index("# --- Thresholds"):]
    section = section[:section.index("# ---", 5)]
    keys = ("thresholds:", "threshold_configs:", "threshold_renotify_interval:")
    lines = [line[2:] for line in section.splitlines() if line.startswith("# ")
             and (line[2:].startswith(" ") or line[2:].startswith(keys))]
    config = parse_config(ServerConfig, "\n".join(lines), str(path))
    book = RuleBook.from_config(config, str(path))
    assert sorted(book.rules_for("webserver01").tree) == [
        "cpu_monitor", "disk_monitor", "memory_monitor", "nagios_runner", "rtt"]
    assert sorted(book.profiles) == ["default", "tight_cpu"]
