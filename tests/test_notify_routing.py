"""Who gets a host's notifications on which channel, and the config checks behind it."""

from __future__ import annotations

from pathlib import Path

import pytest

from heartbeat.config.loader import ConfigError, parse_config
from heartbeat.config.server import ServerConfig
from heartbeat.server.notify.routing import CHANNELS, Router, channels_in_use
from heartbeat.server.settings import load_settings

CONFIG = """
pushsrv: pushover
email: {to: [ops@example.com]}
pushover: {token: app-token, user: group-key}
mattermost: {url: "http://127.0.0.1:1/hooks/k3y", channel: alerts}
signal: {number: "+100", recipients: ["+200"]}
default_owner: olga
users:
  root: {admin: true, email: root@example.com, notification_channels: [email, signal],
         signal_number: "+300"}
  olga: {email: olga@example.com, pushover_user: olga-key,
         notification_channels: [email, pushover, mattermost]}
  mike: {mattermost_user: mike, signal_number: "+400",
         notification_channels: [mattermost, signal]}
  nina: {email: nina@example.com, notification_channels: [email]}
hosts:
  web1: {owner: nina, managers: [mike]}
  db1: {}
  quiet: {watch: false, owner: nina}
"""


def config(text: str = CONFIG) -> ServerConfig:
    return parse_config(ServerConfig, text, "test.yaml")


def test_owner_managers_and_admins_on_their_channels() -> None:
    """web1: everyone's recipients, plus admin root, owner nina and manager mike."""
    assert Router(config(), CHANNELS).route("web1") == {
        "email": ("ops@example.com", "root@example.com", "nina@example.com"),
        "pushover": ("group-key",),
        "mattermost": ("@mike",),
        "signal": ("+300", "+400"),
    }


def test_default_owner_when_host_has_none() -> None:
    """db1 has no owner: default_owner olga gets it; mattermost without a user: the channel."""
    assert Router(config(), CHANNELS).route("db1") == {
        "email": ("ops@example.com", "root@example.com", "olga@example.com"),
        "pushover": ("group-key", "olga-key"),
        "mattermost": ("alerts",),
        "signal": ("+300",),
    }


def test_unconfigured_host_and_missing_channels() -> None:
    """An unlisted host routes like db1; channels not started are left out."""
    assert Router(config(), ["email", "pushover"]).route("new-host") == {
        "email": ("ops@example.com", "root@example.com", "olga@example.com"),
        "pushover": ("group-key", "olga-key"),
    }


def test_watch_false_silences_everyone() -> None:
    """watch: false routes to nobody, whatever the users want."""
    router = Router(config(), CHANNELS)
    assert (router.watched("quiet"), router.route("quiet")) == (False, {})


def test_pushsrv_all_uses_every_configured_push_service() -> None:
    """pushsrv all: pushover, mattermost and signal recipients all get every host."""
    router = Router(config(CONFIG.replace("pushsrv: pushover", "pushsrv: all")), CHANNELS)
    assert router.route("db1") == {
        "email": ("ops@example.com", "root@example.com", "olga@example.com"),
        "pushover": ("group-key", "olga-key"),
        "mattermost": ("alerts",),
        "signal": ("+200", "+300"),
    }


def test_channels_in_use() -> None:
    """Only channels with some recipient are started."""
    assert channels_in_use(config()) == ["email", "pushover", "mattermost", "signal"]
    assert channels_in_use(config("pushsrv: mattermost\nmattermost: {url: 'http://h/x'}\n")) == [
        "mattermost"]
    assert channels_in_use(ServerConfig()) == []


@pytest.mark.parametrize(("text", "error"), [
    ("pushsrv: pushover\n", "pushsrv: pushover needs pushover.token"),
    ("pushsrv: signal\nsignal: {number: '+1'}\n", "pushsrv: signal needs signal.recipients"),
    ("pushsrv: all\n", "pushsrv: all: no push service is configured"),
    ("users: {al: {notification_channels: [email]}}\n",
     "users.al.notification_channels: email needs users.al.email"),
    ("users: {al: {notification_channels: [pushover], pushover_user: k}}\n",
     "users.al.notification_channels: pushover needs pushover.token"),
    ("users: {al: {notification_channels: [fax]}}\n",
     "users.al.notification_channels: must be one of email, pushover, mattermost, signal, "
     "got 'fax'"),
    ("email: {username: hb}\n", "email.password: needed with email.username"),
    ("mattermost: {url: 'ftp://x/y'}\n",
     "mattermost.url: must be an http:// or https:// URL, got 'ftp://x/y'"),
    ("dyndomains: ['bad domain']\n", "dyndomains: not a valid domain name: 'bad domain'"),
    ("nsupdate_server: '127.0.0.1 99999'\n",
     "nsupdate_server: must be 'host' or 'host port', got '127.0.0.1 99999'"),
])
def test_config_errors_name_the_key(tmp_path: Path, text: str, error: str) -> None:
    """A route that could never deliver stops start-up with one line naming the key."""
    path = tmp_path / "hb.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == f"{path}: {error}"


def test_example_config_routes_load(tmp_path: Path) -> None:
    """The routing config above passes every check."""
    path = tmp_path / "hb.yaml"
    path.write_text(CONFIG)
    assert load_settings(path).config.pushsrv == "pushover"


def test_documented_example_routes_as_documented() -> None:
    """The routing example in docs/NOTIFICATIONS.md loads and routes as the page says."""
    page = (Path(__file__).parent.parent / "docs" / "NOTIFICATIONS.md").read_text()
    example = page.split("## Who gets what", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    conf = config(example)
    router = Router(conf, channels_in_use(conf))
    assert router.route("web1") == {
        "email": ("ops@example.com", "root@example.com", "olga@example.com"),
        "pushover": ("GROUP_KEY", "OLGA_KEY"),
        "mattermost": ("@mike",),
    }
    assert router.route("db1") == {
        "email": ("ops@example.com", "root@example.com", "olga@example.com"),
        "pushover": ("GROUP_KEY", "OLGA_KEY"),
    }
    assert router.route("lab1") == {}


def test_readme_examples_load(tmp_path: Path) -> None:
    """The notification and DNS snippets in README.rst are valid configs."""
    import textwrap

    readme = (Path(__file__).parent.parent / "README.rst").read_text()
    snippets = []
    for title in ("Notifications\n=============", "Dynamic DNS\n==========="):
        block = readme.split(title, 1)[1].split("::\n\n", 1)[1]
        lines = []
        for line in block.splitlines():
            if line and not line.startswith(" "):
                break
            lines.append(line)
        snippets.append(textwrap.dedent("\n".join(lines)))
    notify = config(snippets[0])
    assert Router(notify, channels_in_use(notify)).route("web1") == {
        "email": ("ops@example.com", "olga@example.com"), "pushover": ("GROUP_KEY",)}
    assert config(snippets[1]).dyndomains == ["dyn.example.com"]
