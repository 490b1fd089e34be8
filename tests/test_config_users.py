"""The users: section and the access lists are checked at start-up, one line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from heartbeat.config.loader import ConfigError
from heartbeat.passwords import hash_password
from heartbeat.server.settings import load_settings

GOOD = hash_password("pw")


def _load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "hb.yaml"
    path.write_text(text)
    load_settings(path)


@pytest.mark.parametrize(("text", "message"), [
    ("users:\n  alice:\n    password: hunter2\n",
     "users.alice.password: expected pbkdf2:sha256:<iterations>$<salt>$<hash> "
     "(make one with `heartbeat passwd NAME`)"),
    (f"users:\n  alice:\n    password: '{hash_password('pw', iterations=1000)}'\n",
     "users.alice.password: 1000 iterations is below the minimum of 600000"),
    ("users:\n  'bad name':\n    admin: true\n",
     "users.bad name: not a valid user name (1-64 of A-Z a-z 0-9 . _ @ -)"),
    ("users:\n  alice: {admin: true}\ndefault_owner: bob\n",
     "default_owner: no user named 'bob'"),
    ("users:\n  alice: {admin: true}\nhosts:\n  web1:\n    managers: [alice, bob]\n",
     "hosts.web1.managers: no user named 'bob' under users"),
    ("users:\n  alice: {admin: true}\nhosts:\n  web1:\n    owner: carol\n",
     "hosts.web1.owner: no user named 'carol' under users"),
    ("users:\n  alice:\n    notification_channels: [sms]\n",
     "users.alice.notification_channels: must be one of email, pushover, mattermost, "
     "signal, got 'sms'"),
    ("login_free_attempts: 0\n", "login_free_attempts: must be greater than 0, got 0"),
])
def test_bad_user_config_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    """Each mistake stops start-up with the file and the key."""
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert str(caught.value) == f"{tmp_path / 'hb.yaml'}: {message}"


def test_good_user_config_loads(tmp_path: Path) -> None:
    """A full users section with access lists loads as written."""
    path = tmp_path / "hb.yaml"
    path.write_text(f"users:\n  alice:\n    full_name: Alice\n    admin: true\n"
                    f"    password: '{GOOD}'\n  bob: {{}}\ndefault_owner: bob\n"
                    f"hosts:\n  web1:\n    owner: alice\n    monitors: [bob]\n")
    config = load_settings(path).config
    assert (config.users["alice"].password, config.users["alice"].admin,
            config.default_owner, config.hosts["web1"].monitors) == (GOOD, True, "bob", ["bob"])


def test_access_lists_unchecked_without_users(tmp_path: Path) -> None:
    """With no users: section (users may live in the store), names are not checked."""
    _load(tmp_path, "hosts:\n  web1:\n    owner: someone\n")
