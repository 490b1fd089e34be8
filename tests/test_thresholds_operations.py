"""The threshold engine's recover_after and metric flapping, with plain values."""

from __future__ import annotations

from typing import Any

import pytest

from heartbeat.config.loader import ConfigError
from heartbeat.config.server import HostConfig, ServerConfig
from heartbeat.server.flapping import FlapDetector
from heartbeat.server.thresholds.engine import Alert, ThresholdEngine
from heartbeat.server.thresholds.rulebook import RuleBook

CPU = "cpu_monitor.cpu_percent"


def engine(rule: dict[str, Any] | None = None, flaps: FlapDetector | None = None,
           **config: Any) -> ThresholdEngine:
    thresholds = {"cpu_monitor": {"cpu_percent": {"critical": 90.0, "hysteresis": 0,
                                                  **(rule or {})}}}
    settings = ServerConfig(thresholds=thresholds, **config)
    return ThresholdEngine(RuleBook.from_config(settings, "test.yaml"), flaps=flaps)


def cpu(value: float) -> dict[str, Any]:
    return {"cpu_monitor": {"cpu_percent": value}}


def feed(e: ThresholdEngine, values: list[float], start: float = 0.0,
         host: str = "h") -> list[Alert]:
    out: list[Alert] = []
    for i, value in enumerate(values):
        out += e.evaluate_plugins(host, cpu(value), start + i)
    return out


def levels(alerts: list[Alert]) -> list[tuple[str, str, bool]]:
    return [(a.previous.value, a.level.value, a.flapping) for a in alerts]


class RecoverAfterTests:
    def test_rule_needs_good_samples_in_a_row(self) -> None:
        """recover_after: 3 on the rule: two good samples keep CRITICAL, the third is OK."""
        e = engine({"recover_after": 3})
        assert levels(feed(e, [95, 50, 50])) == [("OK", "CRITICAL", False)]
        (state,) = e.states("h")
        assert state.to_json()["recovering"] == {"samples": 2, "needed": 3}
        assert state.value == 50
        assert levels(feed(e, [50], 3)) == [("CRITICAL", "OK", False)]
        assert e.states("h") == []

    def test_a_bad_sample_starts_the_count_again(self) -> None:
        """A bad sample between good ones resets the count."""
        e = engine({"recover_after": 2})
        assert levels(feed(e, [95, 50, 95, 50])) == [("OK", "CRITICAL", False)]
        assert levels(feed(e, [50], 4)) == [("CRITICAL", "OK", False)]

    def test_host_then_profile_then_one(self) -> None:
        """Without a rule setting: the host's recover_after, else its profile's, else 1."""
        config = {"threshold_configs": {"slow": {"recover_after": 3}},
                  "hosts": {"a": HostConfig(recover_after=2, threshold_config="slow"),
                            "b": HostConfig(threshold_config="slow"), "c": HostConfig()}}
        e = engine(**config)
        assert (e.rules.recover_after("a"), e.rules.recover_after("b"),
                e.rules.recover_after("c")) == (2, 3, 1)
        assert len(feed(e, [95, 50, 50], host="a")) == 2
        assert len(feed(e, [95, 50, 50], host="b")) == 1
        assert len(feed(e, [95, 50], host="c")) == 2
        ruled = engine({"recover_after": 4}, hosts={"a": HostConfig(recover_after=2)})
        assert len(feed(ruled, [95, 50, 50, 50], host="a")) == 1  # the rule wins

    def test_shown_in_the_rules(self) -> None:
        """A rule's recover_after is part of its JSON."""
        e = engine({"recover_after": 3})
        assert e.rules.effective("h")["thresholds"]["cpu_monitor"]["cpu_percent"] == {
            "operator": ">", "warning": None, "critical": 90.0, "hysteresis": 0.0,
            "recover_after": 3}

    @pytest.mark.parametrize(("config", "line"), [
        ({"thresholds": {"cpu_monitor": {"cpu_percent": {"critical": 90, "recover_after": 0}}}},
         "test.yaml: thresholds.cpu_monitor.cpu_percent.recover_after: expected a whole number "
         "of samples, at least 1, got 0"),
        ({"threshold_configs": {"slow": {"recover_after": "3"}}},
         "test.yaml: threshold_configs.slow.recover_after: expected a whole number of samples, "
         "at least 1, got '3'"),
    ])
    def test_bad_settings(self, config: dict[str, Any], line: str) -> None:
        """A recover_after that is not a whole number of at least 1 is refused."""
        with pytest.raises(ConfigError) as caught:
            RuleBook.from_config(ServerConfig(**config), "test.yaml")
        assert str(caught.value) == line


class FlappingTests:
    def test_flapping_metric_one_start_transitions_marked_one_stop(self) -> None:
        """A metric swinging across its limit starts flapping once; its transitions are
        marked; steady samples settle it once; OK samples count while it has a history."""
        e = engine(flaps=FlapDetector())
        alerts = feed(e, [95, 50] * 4)
        starts = e.take_flap_changes()
        assert [(c.subject, c.flapping, c.state, c.ts) for c in starts] == [
            (CPU, True, "OK", 5.0)]
        assert levels(alerts) == [("OK", "CRITICAL", False), ("CRITICAL", "OK", False)] * 2 + [
            ("OK", "CRITICAL", False), ("CRITICAL", "OK", True),
            ("OK", "CRITICAL", True), ("CRITICAL", "OK", True)]
        assert feed(e, [50] * 20, 8) == []
        assert [(c.flapping, c.state) for c in e.take_flap_changes()] == [(False, "OK")]
        assert e.flaps is not None and not e.flaps.flapping("h", CPU)

    def test_alert_state_and_reminders_say_flapping(self) -> None:
        """An active alert of a flapping metric shows it; its reminders are marked."""
        e = engine(flaps=FlapDetector(), threshold_renotify_interval=10)
        feed(e, [95, 50] * 3 + [95])
        (state,) = e.states("h")
        assert state.flapping and state.to_json()["flapping"]
        (reminder,) = e.reminders(100)
        assert reminder.reminder and reminder.flapping

    def test_steady_metrics_keep_no_history(self) -> None:
        """Metrics that never alert cost the detector nothing."""
        flaps = FlapDetector()
        e = engine(flaps=flaps)
        for i in range(50):
            feed(e, [10, 20, 30], host=f"h{i}")
        assert len(flaps) == 0

    def test_cleared_metric_and_removed_host_forget_history(self) -> None:
        """A metric no longer reported, or a removed host, drops its history."""
        flaps = FlapDetector()
        e = engine(flaps=flaps)
        feed(e, [95, 50, 95])
        assert len(flaps) == 1
        e.evaluate_plugins("h", {"cpu_monitor": {}}, 10)
        assert len(flaps) == 0
        feed(e, [95], 11)
        e.forget("h")
        assert len(flaps) == 0
