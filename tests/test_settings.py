"""Loading a server config is one call: its keys and its threshold rule book, checked together."""

from __future__ import annotations

from pathlib import Path

import pytest

from heartbeat.config.loader import ConfigError
from heartbeat.config.server import HostConfig, ServerConfig
from heartbeat.server.settings import ServerSettings, load_settings, parse_settings
from heartbeat.server.tap import Options
from heartbeat.server.thresholds.rulebook import RuleBook

BAD_RULE = "thresholds:\n  cpu_monitor:\n    cpu_percent: {warning: 95, critical: 90}\n"
BAD_RULE_PROBLEM = ("thresholds.cpu_monitor.cpu_percent.warning: warning 95 is above "
                    "critical 90: with operator '>' it must be reached first")
PROFILES = """\
hb_port: 6000
threshold_configs:
  tight: {thresholds: {cpu_monitor: {cpu_percent: {warning: 50, critical: 60}}}}
hosts:
  db-01: {threshold_config: tight}
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hb.yaml"
    path.write_text(text)
    return path


def test_a_bad_rule_is_a_config_error_at_load_time(tmp_path: Path) -> None:
    """load_settings refuses a bad rule as it refuses a bad key: one line, file and key."""
    path = _file(tmp_path, BAD_RULE)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == f"{path}: {BAD_RULE_PROBLEM}"


def test_loaded_settings_carry_keys_rules_and_file(tmp_path: Path) -> None:
    """The keys, the rule book built from them and the file name come back together."""
    path = _file(tmp_path, PROFILES)
    settings = load_settings(path)
    expected = ServerConfig(
        hb_port=6000, hosts={"db-01": HostConfig(threshold_config="tight")},
        threshold_configs={"tight": {"thresholds": {"cpu_monitor": {"cpu_percent": {
            "warning": 50, "critical": 60}}}}})
    assert (settings.config, settings.path) == (expected, str(path))
    assert settings.rules.effective("db-01") == RuleBook.from_config(
        expected, str(path)).effective("db-01")
    assert settings.rules.effective("db-01")["thresholds"]["cpu_monitor"] == {
        "cpu_percent": {"operator": ">", "warning": 50, "critical": 60, "hysteresis": 0.02}}


def test_defaults_have_the_built_in_rules() -> None:
    """No file: the default keys, path None, and the built-in rules only."""
    settings = load_settings(None)
    assert (settings.config, settings.path, sorted(settings.rules.to_json()["thresholds"])) == (
        ServerConfig(), None, ["nagios_runner", "zfs_monitor"])


def test_parse_and_from_config_check_the_same() -> None:
    """YAML text and an already-built ServerConfig are checked alike, errors naming the source."""
    with pytest.raises(ConfigError) as parsed:
        parse_settings(BAD_RULE, "text.yaml")
    config = parse_settings(PROFILES, "text.yaml").config
    bad = ServerConfig(thresholds={"cpu_monitor": {"cpu_percent": {"warning": 95,
                                                                  "critical": 90}}})
    with pytest.raises(ConfigError) as built:
        ServerSettings.from_config(bad, "built.yaml")
    assert (str(parsed.value), str(built.value), config.hb_port) == (
        f"text.yaml: {BAD_RULE_PROBLEM}", f"built.yaml: {BAD_RULE_PROBLEM}", 6000)


def test_twistd_options_hold_the_loaded_settings(tmp_path: Path) -> None:
    """tap.Options loads through load_settings: makeService gets keys and rules as one value."""
    path = _file(tmp_path, PROFILES)
    options = Options()
    options.parseOptions(["-c", str(path)])
    settings = options["settings"]
    assert (type(settings), settings.config, settings.path) == (
        ServerSettings, load_settings(path).config, str(path))
    assert settings.rules.profiles_for("db-01") == ("tight",)


def test_check_flag_refuses_a_bad_rule(tmp_path: Path) -> None:
    """--check stops on a bad rule with the same one line as start-up."""
    path = _file(tmp_path, BAD_RULE)
    with pytest.raises(SystemExit) as stopped:
        Options().parseOptions(["-c", str(path), "--check"])
    assert str(stopped.value) == f"heartbeat: config error: {path}: {BAD_RULE_PROBLEM}"


def test_the_server_process_shares_the_gil_in_short_turns() -> None:
    """twistd's server takes the GIL back for its reactor within SWITCH_INTERVAL of asking
    (1 ms), not CPython's 5 ms, while the store's or the journal's thread holds it."""
    import sys

    from heartbeat.server.tap import SWITCH_INTERVAL, share_the_gil

    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        share_the_gil()
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
        assert SWITCH_INTERVAL <= 0.001
    finally:
        sys.setswitchinterval(before)
