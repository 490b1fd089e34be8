"""Configuration loading: defaults, types, and one-line errors naming file and key."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from heartbeat.config.agent import AgentConfig
from heartbeat.config.loader import ConfigError, _load_yaml, default_config_path, parse_config
from heartbeat.config.masking import SECRET_MASK, masked, settings_view
from heartbeat.config.server import SERVER_DEFAULTS, EmailConfig, HostConfig, ServerConfig
from heartbeat.server.settings import load_settings


def _agent_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(AgentConfig, text, "etc/hbc.yaml")
    return str(info.value)


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(ServerConfig, text, "etc/hb.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


class DefaultsTests:
    def test_reference_defaults(self) -> None:
        """The reference's ports and journal defaults are the built-in ones."""
        config = load_settings(None).config
        assert (config.hb_port, config.hbd_port, config.ws_port, config.wss_port) == (
            50003, 50004, 50005, None)
        assert (config.journal_enabled, config.journal_dir, config.journal_file,
                config.journal_max_size, config.journal_max_backups) == (
            True, "/var/log/heartbeat", "messages.journal", 104857600, 10)
        assert (config.cert_path, config.wss_pem, config.wss_key) == (
            "/usr/local/etc/ssl/", "fullchain.pem", "privkey.pem")

    def test_defaults_table_matches_dataclass(self) -> None:
        """SERVER_DEFAULTS is derived from ServerConfig, key for key."""
        assert dataclasses.asdict(ServerConfig()) == SERVER_DEFAULTS

    def test_empty_file_is_defaults(self) -> None:
        """An empty YAML file means the defaults."""
        assert parse_config(ServerConfig, "", "x.yaml") == ServerConfig()

    def test_embedded_default_config_loads(self) -> None:
        """etc/heartbeat.yaml (used by make run) is a valid config on loopback."""
        root = Path(__file__).parent.parent
        config = load_settings(root / "etc" / "heartbeat.yaml").config
        assert (config.hb_host, config.hbd_host) == ("127.0.0.1", "127.0.0.1")
        assert config.state_dir.startswith("var/") and config.users == {}

    def test_example_config_documents_every_key(self) -> None:
        """etc/heartbeat.example.yaml loads, and uncommented it names every server key."""
        path = Path(__file__).parent.parent / "etc" / "heartbeat.example.yaml"
        assert load_settings(path).config == ServerConfig()
        text = path.read_text()
        missing = [key for key in SERVER_DEFAULTS if f"# {key}:" not in text]
        assert missing == []

    def test_home_config_found_only_if_present(self, tmp_path: Path) -> None:
        """Without -c, ~/.hb.yaml is used when it exists, else the built-in defaults."""
        assert default_config_path(".hb.yaml", tmp_path) is None
        (tmp_path / ".hb.yaml").write_text("hb_port: 6000\n")
        assert default_config_path(".hb.yaml", tmp_path) == tmp_path / ".hb.yaml"


class ParseTests:
    def test_values_and_nested_sections(self) -> None:
        """Keys, nested host and email sections and int->float widening all load."""
        config = parse_config(ServerConfig, """
hb_port: 6000
grace: 5
dyndomains: [example.com]
hosts:
  web1: {watch: false, managers: [bob], threshold_config: [a, b]}
  db1:
email: {smtp_host: mail, smtp_port: 587}
""", "x.yaml")
        assert (config.hb_port, config.grace, config.dyndomains) == (6000, 5.0, ["example.com"])
        assert config.hosts == {
            "web1": HostConfig(watch=False, managers=["bob"], threshold_config=["a", "b"]),
            "db1": HostConfig(),
        }
        assert config.email == EmailConfig(smtp_host="mail", smtp_port=587)

    def test_thresholds_are_kept_verbatim(self) -> None:
        """Threshold trees (validated by the alerting engine) pass through, nulls included."""
        config = parse_config(ServerConfig, "thresholds: {zfs_monitor: null, "
                              "cpu_monitor: {cpu_percent: {warning: 80}}}\n", "x.yaml")
        assert config.thresholds == {"zfs_monitor": None,
                                     "cpu_monitor": {"cpu_percent": {"warning": 80}}}


class ErrorTests:
    def test_unknown_key_suggests_closest(self) -> None:
        """An unknown key is named, with the closest known key suggested."""
        assert _error("hb_prot: 1\n") == (
            "etc/hb.yaml: hb_prot: unknown key (did you mean 'hb_port'?)")

    def test_unknown_nested_key(self) -> None:
        """Unknown keys in a host section are named with their full path."""
        assert _error("hosts: {web1: {wacth: false}}\n") == (
            "etc/hb.yaml: hosts.web1.wacth: unknown key (did you mean 'hosts.web1.watch'?)")

    def test_reference_keys_we_replaced_say_by_what(self) -> None:
        """An old hbd/hbc config's replaced keys name what replaces them."""
        assert (_error("pickfile: /var/lib/hbd/state.pickle\n"),
                _agent_error("server: mon.example.com\n")) == (
            "etc/hb.yaml: pickfile: unknown key (replaced by state_dir: the folder of the"
            " SQLite store)",
            "etc/hbc.yaml: server: unknown key (name the server on the command line:"
            " twistd heartbeat-agent SERVER)")

    def test_unknown_key_without_suggestion(self) -> None:
        """A key like nothing known gets no suggestion."""
        assert _error("zzzzzz: 1\n") == "etc/hb.yaml: zzzzzz: unknown key"

    @pytest.mark.parametrize(("text", "expected"), [
        ("hb_port: abc\n", "hb_port: expected an integer, got 'abc'"),
        ("hb_port: 70000\n", "hb_port: port 70000 is out of range 1-65535"),
        ("hb_port: 0\n", "hb_port: port 0 is out of range 1-65535"),
        ("journal_enabled: maybe\n", "journal_enabled: expected true or false, got 'maybe'"),
        ("grace: -1\n", "grace: must not be negative, got -1.0"),
        ("interval: 0\n", "interval: must be greater than 0, got 0.0"),
        ("dyndomains: example.com\n", "dyndomains: expected a list of strings, got 'example.com'"),
        ("dyndomains: [1]\n", "dyndomains[0]: expected a string, got 1"),
        ("ws_port: nope\n", "ws_port: expected an integer or null, got 'nope'"),
        ("pushsrv: telegram\n",
         "pushsrv: must be one of pushover, mattermost, signal, all, got 'telegram'"),
        ("hosts: [a, b]\n", "hosts: expected a mapping, got ['a', 'b']"),
        ("hosts: {web1: {watch: 3}}\n", "hosts.web1.watch: expected true or false, got 3"),
        ("hosts: {'bad name': {}}\n", "hosts.bad name: not a valid host name"),
        ("ws_port: 50004\n", "ws_port: port 50004 is already used by hbd_port"),
        ("- a\n- b\n", "the top level must be a mapping of keys"),
        ("hb_port: [\n", "line 2: not valid YAML"),
        ("interval: 1" + "0" * 400 + "\n",
         "interval: expected a finite number, got 1" + "0" * 59),
        ("interval: 1" + "0" * 5000 + "\n",
         "an integer of more digits than Python reads (4,300)"),
    ])
    def test_wrong_values_name_the_key(self, text: str, expected: str) -> None:
        """Wrong types, ranges and shapes stop loading with the key and the problem."""
        assert _error(text).startswith(f"etc/hb.yaml: {expected}")

    @pytest.mark.parametrize(("text", "expected"), [
        ("interval: 5\ngrace: 3\ninterval: 60\n",
         "etc/hb.yaml: interval: given twice (lines 1 and 3); keep one"),
        ("hosts:\n  db1: {require_signed: true}\n  web1: {}\n  db1: {}\n",
         "etc/hb.yaml: hosts.db1: given twice (lines 2 and 4); keep one"),
        ("users:\n  alice:\n    admin: true\n    email: a@example.com\n    admin: false\n",
         "etc/hb.yaml: users.alice.admin: given twice (lines 3 and 5); keep one"),
        ("dyndomains: [a.example]\nhosts:\n  web1: {tags: [x]}\n"
         "  \"web1\": {tags: [y]}\n",
         "etc/hb.yaml: hosts.web1: given twice (lines 3 and 4); keep one"),
    ])
    def test_a_key_given_twice_is_named(self, text: str, expected: str) -> None:
        """A key given twice in one mapping stops loading naming it and both lines
        (YAML alone keeps the last one silently)."""
        assert _error(text) == expected

    def test_an_agent_key_given_twice_is_named(self) -> None:
        """The agent's config is held to the same rule."""
        assert _agent_error("hb_port: 50003\nhb_port: 50013\n") == (
            "etc/hbc.yaml: hb_port: given twice (lines 1 and 2); keep one")

    def test_yaml_merge_keys_still_override(self) -> None:
        """A ``<<`` merge's keys may be overridden: that is YAML's own way, not a duplicate."""
        config = parse_config(ServerConfig, "hosts:\n  base: &b {interval: 30, watch: false}\n"
                              "  web1:\n    <<: *b\n    interval: 60\n", "hb.yaml")
        assert (config.hosts["web1"].interval, config.hosts["web1"].watch) == (60.0, False)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing config file is named."""
        with pytest.raises(ConfigError, match=r"nope\.yaml: no such file"):
            load_settings(tmp_path / "nope.yaml")

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A directory (or unreadable file) given as config is named with the reason."""
        with pytest.raises(ConfigError, match=r": cannot read: "):
            load_settings(tmp_path)


def test_secrets_are_masked_in_the_settings_view() -> None:
    """Every secret field shows as ******** (unset stays null); nothing else is touched."""
    config = parse_config(ServerConfig, """
email: {username: hb, password: hunter2}
pushover: {token: tok, user: usr}
mattermost: {url: "https://chat.example/hooks/abc"}
keys: {k1: shared-secret-of-16+}
users: {alice: {admin: true, pushover_user: ukey,
                password: "pbkdf2:sha256:600000$salt$%s"}}
""".replace("%s", "0" * 64), "hb.yaml")
    rows = {row["key"]: row for row in settings_view(config)}
    assert rows["email"]["value"]["password"] == SECRET_MASK
    assert rows["email"]["value"]["username"] == "hb"
    assert rows["email"]["default"]["password"] is None
    assert rows["pushover"]["value"] == {"token": SECRET_MASK, "user": SECRET_MASK,
                                         "url": "https://api.pushover.net/1/messages.json"}
    assert rows["mattermost"]["value"]["url"] == SECRET_MASK
    assert rows["keys"] == {"key": "keys", "value": {"k1": SECRET_MASK}, "default": {},
                            "changed": True, "doc": "shared keys by id for signed datagrams",
                            "unit": None, "secret": True}
    alice = rows["users"]["value"]["alice"]
    assert (alice["password"], alice["pushover_user"], alice["admin"]) == (
        SECRET_MASK, SECRET_MASK, True)
    text = repr(settings_view(config))
    for secret in ("hunter2", "tok", "usr", "hooks/abc", "shared-secret-of-16+", "ukey", "0" * 64):
        assert f"'{secret}'" not in text and secret + "'" not in text, secret


def test_settings_view_lists_every_key_in_order() -> None:
    """One row per ServerConfig field, in declaration order; defaults are unchanged."""
    rows = settings_view(ServerConfig())
    assert [r["key"] for r in rows] == [f.name for f in dataclasses.fields(ServerConfig)]
    assert not any(r["changed"] for r in rows)
    assert rows[1] == {"key": "hb_port", "value": 50003, "default": 50003, "changed": False,
                       "doc": "UDP port for heartbeats", "unit": None, "secret": False}
    assert masked({"a": [ServerConfig().email]})["a"][0]["smtp_port"] == 25


def test_a_key_with_a_newline_still_gives_one_line() -> None:
    """Control characters in a key are escaped, so the error stays one line."""
    with pytest.raises(ConfigError) as caught:
        parse_config(ServerConfig, "hosts: {\"a\\nb\": false}\n", "bad.yaml")
    assert str(caught.value) == "bad.yaml: hosts.a\\nb: expected a mapping, got False"


@pytest.mark.parametrize(("text", "valid"), [
    ("hosts:\n" + "".join(f"  h{n}: {{tags: [web], parents: [sw]}}\n" for n in range(50))
     + "  sw: {}\n", True),
    ("interval: [", False),  # not YAML
    ("interval: -1", False),  # a key's check
])
@pytest.mark.parametrize("collecting", [True, False])
def test_reading_a_config_leaves_the_collector_as_it_found_it(
        text: str, valid: bool, collecting: bool) -> None:
    """The collector is paused while a config is read (a fleet's ``hosts:`` section is
    read 5 times as fast without it), and left as it was, read or refused."""
    import gc
    seen: list[bool] = []
    original = ServerConfig.check

    def check(self: ServerConfig, source: str) -> None:
        seen.append(gc.isenabled())
        original(self, source)

    (gc.enable if collecting else gc.disable)()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ServerConfig, "check", check)
            if valid:
                assert len(parse_config(ServerConfig, text, "etc/hb.yaml").hosts) == 51
                assert seen == [False]
            else:
                with pytest.raises(ConfigError):
                    parse_config(ServerConfig, text, "etc/hb.yaml")
        assert gc.isenabled() is collecting
    finally:
        gc.enable()


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.sampled_from(["yes", "no", "1e3", "0x1f", "~", "2026-12-04",
                                                "010", ".inf", "null", "12:30"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(document=YAML_VALUES, style=st.sampled_from([None, False, True]))
def test_the_config_reader_reads_yaml_as_pyyaml_does(document: Any, style: bool | None) -> None:
    """What the loader reads (libyaml, strings taken as their nodes' values) is what
    yaml.safe_load reads, whatever the values and however they are written."""
    text = yaml.safe_dump(document, default_flow_style=style, allow_unicode=True)
    assert _load_yaml(text, "x.yaml") == yaml.safe_load(text)


@pytest.mark.parametrize("text", [
    "base: &b {interval: 30, tags: [web]}\nhosts:\n  web1: {<<: *b, owner: ann}\n"
    "  web2:\n    <<: *b\n    interval: 60\n",
    "a: !!str 12\nb: !!int '7'\n",
    "when: 2026-12-04 10:00:00\nset: !!set {a, b}\nbytes: !!binary aGVsbG8=\n",
    "names: &n [a, b]\nagain: *n\n",
])
def test_anchors_merges_and_tags_read_as_pyyaml_does(text: str) -> None:
    assert _load_yaml(text, "x.yaml") == yaml.safe_load(text)
