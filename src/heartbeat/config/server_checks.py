"""The server's cross-key checks: rules that span several keys of a :class:`ServerConfig`.

Each key is checked alone by the loader against its field; what needs more
than one key (ports not shared, access lists naming users, a notification route
that can deliver, hosts naming keys that exist) is checked here, run by
``ServerConfig.check`` once every key is in. Also here: :func:`push_services`,
what ``pushsrv`` selects, which the notify check and notification routing both
ask. Pure code.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from heartbeat.config.checks import USER_NAME, dns_label, key_problem
from heartbeat.config.loader import ConfigError
from heartbeat.protocol import valid_key_id

if TYPE_CHECKING:
    from heartbeat.config.server import ServerConfig

__all__ = ["check_server", "push_services"]


def check_server(config: ServerConfig, source: str) -> None:
    """Every cross-key rule, in a fixed order; the first broken one is the ConfigError."""
    _check_ports(config, source)
    _check_hosts(config, source)
    _check_users(config, source)
    _check_notify(config, source)
    _check_keys(config, source)
    _check_flapping(config, source)
    _check_status_pages(config, source)
    _check_store(config, source)


_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def _check_status_pages(config: ServerConfig, source: str) -> None:
    """Each slug can be a URL path segment; each page names some hosts."""
    for slug, page in config.status_pages.items():
        if not _SLUG.fullmatch(slug):
            raise ConfigError(source, f"status_pages.{slug}",
                              "a slug is 1-64 of a-z 0-9 _ - (it is the page's URL: "
                              "/status/<slug>)")
        if not page.hosts:
            raise ConfigError(source, f"status_pages.{slug}.hosts",
                              "name the hosts it shows (names or globs such as web*)")
        if not page.title.strip():
            raise ConfigError(source, f"status_pages.{slug}.title", "must not be empty")


def _check_ports(config: ServerConfig, source: str) -> None:
    """The TCP ports are distinct."""
    ports = {"hbd_port": config.hbd_port, "ws_port": config.ws_port,
             "wss_port": config.wss_port}
    seen: dict[int, str] = {}
    for key, port in ports.items():
        if port is None:
            continue
        if port in seen:
            raise ConfigError(source, key, f"port {port} is already used by {seen[port]}")
        seen[port] = key


def _check_hosts(config: ServerConfig, source: str) -> None:
    """The names under ``hosts:`` are host names; with ``dyndomains``, no two that get
    DNS records share a label (``web1`` and ``WEB1.lan`` would own one record)."""
    labels: dict[str, str] = {}
    for name, host in config.hosts.items():
        if not name or len(name) > 253 or not all(c.isalnum() or c in "._-" for c in name):
            raise ConfigError(source, f"hosts.{name}", "not a valid host name")
        label = dns_label(name)
        if not config.dyndomains or not host.dns or label is None:
            continue
        if label in labels:
            raise ConfigError(source, f"hosts.{name}",
                              f"its DNS label {label!r} is also hosts.{labels[label]}'s: each "
                              f"record <label>.<zone> belongs to one host (set dns: false on "
                              f"one of them)")
        labels[label] = name


def _check_users(config: ServerConfig, source: str) -> None:
    """User names are well formed; every name an access list uses is a user."""
    for name in config.users:
        if not USER_NAME.fullmatch(name):
            raise ConfigError(source, f"users.{name}",
                              "not a valid user name (1-64 of A-Z a-z 0-9 . _ @ -)")
    if not config.users:
        return
    known = set(config.users)
    if config.default_owner is not None and config.default_owner not in known:
        raise ConfigError(source, "default_owner", f"no user named {config.default_owner!r}")
    for host, settings in config.hosts.items():
        for key, names in (("owner", [settings.owner] if settings.owner else []),
                           ("managers", settings.managers), ("monitors", settings.monitors)):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ConfigError(source, f"hosts.{host}.{key}",
                                  f"no user named {unknown[0]!r} under users")


_PUSH_NEEDS: dict[str, tuple[str, ...]] = {
    "pushover": ("pushover.token", "pushover.user"),
    "mattermost": ("mattermost.url",),
    "signal": ("signal.number", "signal.recipients"),
}
_USER_ADDRESS = {"email": "email", "pushover": "pushover_user", "signal": "signal_number"}
_CHANNEL_NEEDS = {"pushover": "pushover.token", "mattermost": "mattermost.url",
                  "signal": "signal.number"}


def _is_set(config: ServerConfig, dotted: str) -> bool:
    section, key = dotted.split(".")
    return bool(getattr(getattr(config, section), key))


def push_services(config: ServerConfig) -> tuple[str, ...]:
    """The push services ``pushsrv`` selects: the one named, or with ``all`` each configured."""
    if config.pushsrv == "all":
        return tuple(service for service, needs in _PUSH_NEEDS.items()
                     if all(_is_set(config, needed) for needed in needs))
    return (config.pushsrv,) if config.pushsrv else ()


def _check_keys(config: ServerConfig, source: str) -> None:
    """Key ids that fit an envelope, secrets long enough, hosts naming keys that exist."""
    for key_id, secret in config.keys.items():
        if not valid_key_id(key_id):
            raise ConfigError(source, f"keys.{key_id}", "a key id is 1-64 of [A-Za-z0-9._-]")
        problem = key_problem(secret)
        if problem:
            raise ConfigError(source, f"keys.{key_id}", problem)
    for name, host in config.hosts.items():
        if host.key is not None and host.key not in config.keys:
            raise ConfigError(source, f"hosts.{name}.key", f"no key {host.key!r} under keys:")
        if host.require_signed and not config.keys:
            raise ConfigError(source, f"hosts.{name}.require_signed",
                              "signing needs at least one key under keys:")
    if config.require_signed and not config.keys:
        raise ConfigError(source, "require_signed", "signing needs at least one key under keys:")


def _check_notify(config: ServerConfig, source: str) -> None:
    """A notification route that could never deliver is a config error, not a runtime surprise."""
    if config.pushsrv in _PUSH_NEEDS:
        for needed in _PUSH_NEEDS[config.pushsrv]:
            if not _is_set(config, needed):
                raise ConfigError(source, "pushsrv", f"{config.pushsrv} needs {needed}")
    elif config.pushsrv == "all" and not push_services(config):
        raise ConfigError(source, "pushsrv", "all: no push service is configured")
    if config.email.username and config.email.password is None:
        raise ConfigError(source, "email.password", "needed with email.username")
    for name, user in config.users.items():
        for channel in user.notification_channels:
            key = f"users.{name}.notification_channels"
            address = _USER_ADDRESS.get(channel)
            if address and not getattr(user, address):
                raise ConfigError(source, key, f"{channel} needs users.{name}.{address}")
            section = _CHANNEL_NEEDS.get(channel)
            if section and not _is_set(config, section):
                raise ConfigError(source, key, f"{channel} needs {section}")


def _check_flapping(config: ServerConfig, source: str) -> None:
    """Flapping starts at a higher percent state change than it stops."""
    if config.flap_low_threshold > config.flap_high_threshold:
        raise ConfigError(source, "flap_low_threshold",
                          f"{config.flap_low_threshold} is above flap_high_threshold "
                          f"{config.flap_high_threshold}: flapping must stop below where it "
                          f"starts")


def _check_store(config: ServerConfig, source: str) -> None:
    """A PostgreSQL password file or node name means nothing without a PostgreSQL store."""
    for key in ("store_password_file", "node_name"):
        if getattr(config, key) is not None and config.store_url is None:
            raise ConfigError(source, key, "only used with store_url (a PostgreSQL store)")
