"""Config of operations: parents, static maintenance windows, time zone, flapping."""

from __future__ import annotations

import pytest

from heartbeat.config.loader import ConfigError, parse_config
from heartbeat.config.server import ServerConfig
from heartbeat.server.schedule import OneOffWindow, RecurringWindow
from heartbeat.server.settings import ServerSettings, parse_settings

HOSTS = "hosts:\n  router1: {}\n  switch1: {parents: [router1]}\n  web1: {parents: [switch1]}\n"


def error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, "hb.yaml")
    return str(caught.value)


class DependencyConfigTests:
    def test_parents_make_the_graph(self) -> None:
        """parents: under hosts: become the dependency graph the registry uses."""
        loaded = parse_settings(HOSTS, "hb.yaml")
        assert loaded.dependencies.descendants("router1") == ["switch1", "web1"]
        assert loaded.dependencies.parents_of("web1") == ("switch1",)

    def test_cycle_is_named(self) -> None:
        """A dependency cycle stops start-up naming the whole cycle."""
        assert error("hosts:\n  a: {parents: [b]}\n  b: {parents: [c]}\n  c: {parents: [a]}\n") \
            == "hb.yaml: hosts.a.parents: dependency cycle a -> b -> c -> a"

    def test_unknown_and_own_parent(self) -> None:
        """A parent must be under hosts: (with a suggestion); a host is not its own parent."""
        assert error("hosts:\n  router1: {}\n  web1: {parents: [ruter1]}\n") == (
            "hb.yaml: hosts.web1.parents: no host 'ruter1' under hosts: (did you mean "
            "'router1'?); a parent must be listed there too")
        assert error("hosts:\n  web1: {parents: [web1]}\n") == (
            "hb.yaml: hosts.web1.parents: a host cannot be its own parent")

    def test_recover_after_must_be_positive(self) -> None:
        """hosts.<name>.recover_after is a whole number above 0."""
        assert error("hosts:\n  web1: {recover_after: 0}\n") == (
            "hb.yaml: hosts.web1.recover_after: must be greater than 0, got 0")


class MaintenanceConfigTests:
    def test_static_windows_named_or_numbered(self) -> None:
        """Windows under maintenance: are checked at load, named by name or config-N."""
        loaded = parse_settings("timezone: Europe/Berlin\nmaintenance:\n"
                                "  - {name: weekly, hosts: ['web*'], cron: '0 2 * * sun', "
                                "duration: 2h}\n"
                                "  - {tags: [linux], start: 2026-12-24T18:00:00+01:00, "
                                "end: 2026-12-27T08:00:00+01:00}\n", "hb.yaml")
        weekly, once = loaded.maintenance
        assert (weekly.id, weekly.zone_name, weekly.source, weekly.author) == (
            "weekly", "Europe/Berlin", "config", None)
        assert isinstance(weekly.timing, RecurringWindow)
        assert (once.id, once.timing) == ("config-2", OneOffWindow(1798131600.0, 1798354800.0))
        assert loaded.zone == "Europe/Berlin"

    @pytest.mark.parametrize(("text", "line"), [
        ("maintenance:\n  - {hosts: [a], cron: '0 2 * *', duration: 60}\n",
         "hb.yaml: maintenance[0].cron: expected 5 fields (minute hour day-of-month month "
         "day-of-week), got 4 in '0 2 * *'"),
        ("maintenance:\n  - {name: x, hosts: [a], start: 1, end: 2}\n"
         "  - {name: x, hosts: [b], start: 1, end: 2}\n",
         "hb.yaml: maintenance[1].name: a second window named 'x'"),
        ("maintenance:\n  - {name: '12', hosts: [a], start: 1, end: 2}\n",
         "hb.yaml: maintenance[0].name: not a window name (1-64 of A-Z a-z 0-9 . _ -, not only "
         "digits): '12'"),
        ("maintenance:\n  - [a, b]\n",
         "hb.yaml: maintenance[0]: expected a mapping, got ['a', 'b']"),
        ("timezone: Mars/Base\n",
         "hb.yaml: timezone: unknown time zone 'Mars/Base' (an IANA name such as "
         "Europe/Berlin or UTC)"),
    ])
    def test_errors_name_the_key(self, text: str, line: str) -> None:
        """A bad window or zone stops start-up with one line naming the key."""
        assert error(text) == line

    def test_default_zone_is_the_machines(self) -> None:
        """Without timezone: the machine's zone, as found at load."""
        config = parse_config(ServerConfig, "maintenance:\n  - {hosts: [a], cron: '@daily', "
                                            "duration: 60}\n", "hb.yaml")
        loaded = ServerSettings.from_config(config, "hb.yaml", machine_zone="America/Chicago")
        assert (loaded.zone, loaded.maintenance[0].zone_name) == (
            "America/Chicago", "America/Chicago")


class FlappingConfigTests:
    def test_thresholds_are_percentages_low_below_high(self) -> None:
        """flap thresholds are 0-100, and flapping stops below where it starts."""
        assert error("flap_high_threshold: 130\n") == (
            "hb.yaml: flap_high_threshold: must be a percentage from 0 to 100, got 130.0")
        assert error("flap_low_threshold: 40\n") == (
            "hb.yaml: flap_low_threshold: 40.0 is above flap_high_threshold 30.0: flapping "
            "must stop below where it starts")


def test_documented_examples_load() -> None:
    """The YAML of docs/OPERATIONS.md (but the recover_after sketch) and the README's
    operations snippet are configs the server takes, meaning what the pages say."""
    import re
    import textwrap
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    blocks = re.findall(r"```yaml\n(.*?)```", (root / "docs" / "OPERATIONS.md").read_text(),
                        re.S)
    loaded = [parse_settings(block, "OPERATIONS.md") for block in blocks
              if "{...}" not in block]
    assert len(loaded) == 3
    windows = {w.id: w for w in loaded[0].maintenance}
    assert (sorted(windows), windows["weekly-patch"].matches("db1", frozenset({"linux"})),
            isinstance(windows["dc-move"].timing, OneOffWindow)) == (
        ["dc-move", "weekly-patch"], True, True)
    assert loaded[1].dependencies.children_of("router-1") == ("db1", "web1", "web2")
    assert loaded[2].config.flap_high_threshold == 30.0
    readme = (root / "README.rst").read_text()
    block = readme.split("Maintenance, silences, acknowledgements\n", 1)[1].split("::\n\n", 1)[1]
    snippet = textwrap.dedent("\n".join(block.split("\n\n", 1)[0].splitlines()))
    settings = parse_settings(snippet, "README.rst")
    assert isinstance(settings.maintenance[0].timing, RecurringWindow)
    assert settings.dependencies.parents_of("web1") == ("router-1",)
