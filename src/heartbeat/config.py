"""Configuration: the canonical defaults and the loader that checks them.

Each section is a frozen dataclass; a field's type and ``check`` metadata are
the only definition of what a key accepts, so the defaults, the validation and
the documentation cannot drift apart. Pure code: YAML text in, a
:class:`ServerConfig` or a one-line :class:`ConfigError` out.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import shlex
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

import yaml

from heartbeat.protocol import valid_host_name, valid_key_id

__all__ = [
    "SECRET_MASK",
    "SERVER_DEFAULTS",
    "USER_NAME",
    "AgentConfig",
    "ConfigError",
    "EmailConfig",
    "HostConfig",
    "MattermostConfig",
    "PushoverConfig",
    "ServerConfig",
    "SignalConfig",
    "UserConfig",
    "default_config_path",
    "load_agent_config",
    "load_config",
    "load_server_config",
    "masked",
    "parse_config",
    "parse_section",
    "push_services",
    "settings_view",
]

T = TypeVar("T")
_DNS_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
Check = Callable[[Any], "str | None"]


class ConfigError(ValueError):
    """A configuration problem, worded as one line naming the file and the key."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        where = f"{source}: {key}" if key else source
        super().__init__(_one_line(f"{where}: {problem}"))
        self.source = source
        self.key = key
        self.problem = problem


def _one_line(text: str) -> str:
    """``text`` with control characters escaped: a key read from YAML may hold a newline."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _port(value: Any) -> str | None:
    return None if 1 <= value <= 65535 else f"port {value} is out of range 1-65535"


def _positive(value: Any) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value}"


def _not_negative(value: Any) -> str | None:
    return None if value >= 0 else f"must not be negative, got {value}"


def _fraction(value: Any) -> str | None:
    return None if 0 <= value < 1 else f"must be a fraction in [0, 1), got {value}"


def _password_hash(value: Any) -> str | None:
    from heartbeat.passwords import parse_hash  # noqa: PLC0415 - config stays importable alone

    try:
        parse_hash(value)
    except ValueError as e:
        return str(e)
    return None


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        if value in choices:
            return None
        return f"must be one of {', '.join(choices)}, got {value!r}"

    return check


def _http_url(value: Any) -> str | None:
    if value.startswith(("http://", "https://")) and len(value) > len("https://"):
        return None
    return f"must be an http:// or https:// URL, got {value!r:.60}"


def _nsupdate_server(value: Any) -> str | None:
    parts = value.split()
    if len(parts) == 1 or (len(parts) == 2 and parts[1].isdigit() and _port(int(parts[1])) is None):
        return None
    return f"must be 'host' or 'host port', got {value!r:.60}"


def _domain_name(value: Any) -> str | None:
    labels = value.rstrip(".").split(".")
    if len(value) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in labels):
        return None
    return f"not a valid domain name: {value!r:.60}"


def _each(check: Check) -> Check:
    def each(values: Any) -> str | None:
        for value in values:
            problem = check(value)
            if problem:
                return problem
        return None

    return each


def _opt(default: Any = None, check: Check | None = None, doc: str = "", *,
         secret: bool = False) -> Any:
    """A field with a default, an optional extra check and a one-line description.

    ``secret`` marks a value that is never shown back (the settings page, the API).
    """
    meta = {"check": check, "doc": doc, "secret": secret}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class HostConfig:
    """Per-host settings under ``hosts:``."""

    watch: bool = _opt(True, doc="false silences every notification for this host")
    owner: str | None = _opt(None, doc="user who owns the host (default: default_owner)")
    managers: list[str] = _opt([], doc="users who may queue commands, DNS, upgrades")
    monitors: list[str] = _opt([], doc="users who may view the host")
    threshold_config: str | list[str] | None = _opt(
        None, doc="named threshold profile(s) applied left to right over 'default'"
    )
    dns: bool = _opt(True, doc="false opts this host out of dynamic DNS")
    interval: float | None = _opt(
        None, _positive, doc="expected heartbeat interval, overriding the one the host sends"
    )
    require_signed: bool | None = _opt(None, doc="per-host override of require_signed")
    key: str | None = _opt(None, doc="id of the shared key (under keys:) this host signs with")
    description: str = _opt("", doc="free text shown in the UI")


@dataclass(frozen=True)
class UserConfig:
    """A user under ``users:``."""

    full_name: str = _opt("")
    avatar: str | None = _opt(None)
    password: str | None = _opt(
        None, _password_hash, secret=True,
        doc="pbkdf2:sha256:<iterations>$<salt>$<hash> from `heartbeat passwd NAME`")
    admin: bool = _opt(False)
    email: str | None = _opt(None)
    notification_channels: list[str] = _opt(
        [], _each(_one_of("email", "pushover", "mattermost", "signal"))
    )
    pushover_user: str | None = _opt(None, doc="this user's Pushover user key", secret=True)
    signal_number: str | None = _opt(None, doc="this user's Signal number")
    mattermost_user: str | None = _opt(
        None, doc="this user's Mattermost name: messages go to @name (else the webhook channel)"
    )


@dataclass(frozen=True)
class EmailConfig:
    """SMTP delivery under ``email:``."""

    smtp_host: str = _opt("localhost")
    smtp_port: int = _opt(25, _port)
    tls: str = _opt("starttls", _one_of("none", "starttls", "tls"),
                    doc="starttls: required STARTTLS; tls: implicit TLS (port 465); none")
    username: str | None = _opt(None, doc="SMTP login; none: no AUTH")
    password: str | None = _opt(None, secret=True)
    from_addr: str = _opt("heartbeat@localhost")
    to: list[str] = _opt([], doc="recipients of every notification")
    ca_file: str | None = _opt(None, doc="CA bundle that signs the SMTP server's certificate")


@dataclass(frozen=True)
class PushoverConfig:
    """Pushover delivery under ``pushover:``."""

    token: str | None = _opt(None, secret=True)
    user: str | None = _opt(None, secret=True, doc="the Pushover user or group key")
    url: str = _opt("https://api.pushover.net/1/messages.json", _http_url)


@dataclass(frozen=True)
class MattermostConfig:
    """Mattermost incoming-webhook delivery under ``mattermost:``."""

    url: str | None = _opt(None, _http_url, secret=True,
                           doc="the incoming webhook URL (a secret)")
    channel: str | None = _opt(None, doc="channel override (default: the webhook's own)")
    username: str | None = _opt("heartbeat", doc="poster name override")


@dataclass(frozen=True)
class SignalConfig:
    """signal-cli REST API delivery under ``signal:``."""

    url: str = _opt("http://localhost:8080", _http_url, doc="signal-cli REST API base URL")
    number: str | None = _opt(None, doc="the registered number messages are sent from")
    recipients: list[str] = _opt([], doc="numbers or group ids that get every notification")


@dataclass(frozen=True)
class ServerConfig:
    """Every server key, its type and its default (``SERVER_DEFAULTS`` is derived)."""

    REPLACED_KEYS: ClassVar[dict[str, str]] = {
        "pickfile": "replaced by state_dir: the folder of the SQLite store"}
    """Keys of the old hbd's config (same ~/.hb.yaml) that ours replaced, and by what."""

    # Heartbeat ingest (UDP)
    hb_host: str = _opt("::", doc="UDP bind address; '::' is dual-stack IPv4+IPv6")
    hb_port: int = _opt(50003, _port, doc="UDP port for heartbeats")
    interval: float = _opt(30.0, _positive, doc="heartbeat interval assumed when a host sends none")
    grace: float = _opt(40.0, _not_negative, doc="seconds past interval before a host is DOWN")
    max_inflated: int = _opt(262144, _positive, doc="largest inflated datagram accepted (bytes)")
    max_depth: int = _opt(16, _positive, doc="deepest JSON nesting accepted")
    udp_rcvbuf: int = _opt(4 * 1024 * 1024, _not_negative, doc="UDP socket receive buffer")
    monitor_interval: float = _opt(1.0, _positive, doc="how often hosts are checked for expiry")
    command_attempts: int = _opt(5, _positive, doc="sends of a queued CMD/UPD before it fails")
    hosts: dict[str, HostConfig] = _opt({}, doc="per-host settings")

    # HTTP API, pages and WebSocket
    hbd_host: str = _opt("127.0.0.1", doc="bind address for HTTP and WebSocket")
    hbd_port: int = _opt(50004, _port, doc="HTTP port (API, pages, /ws)")
    ws_port: int | None = _opt(50005, _port, doc="plain WebSocket port; null disables")
    wss_port: int | None = _opt(None, _port, doc="TLS WebSocket port; null disables")
    cert_path: str = _opt("/usr/local/etc/ssl/")
    wss_pem: str = _opt("fullchain.pem")
    wss_key: str = _opt("privkey.pem")
    templates_dir: str | None = _opt(None, doc="override the packaged page templates")
    http_max_body: int = _opt(1024 * 1024, _positive, doc="largest HTTP request body (bytes)")
    http_idle_timeout: float = _opt(60.0, _positive, doc="idle HTTP connections are closed")
    http_request_timeout: float = _opt(
        30.0, _positive, doc="a request's headers and body must arrive within this (s)")
    http_max_connections: int = _opt(
        512, _positive, doc="open HTTP and WebSocket connections at most, all ports together")
    http_max_connections_per_ip: int = _opt(
        64, _positive, doc="open connections at most from one address")

    # State and journal
    state_dir: str = _opt("/var/lib/heartbeat", doc="SQLite store directory")
    store_flush_interval: float = _opt(0.5, _positive, doc="store write batch period (s)")
    history_retention: float = _opt(7 * 86400.0, _positive, doc="plugin history kept (s)")
    history_max_samples: int = _opt(10000, _positive, doc="PLG messages kept in history per host")
    logfile: str | None = _opt(None, doc="also write the server log to this file")
    journal_enabled: bool = _opt(True)
    journal_dir: str = _opt("/var/log/heartbeat")
    journal_file: str = _opt("messages.journal")
    journal_max_size: int = _opt(104857600, _positive, doc="rotate past this size (bytes)")
    journal_max_backups: int = _opt(10, _not_negative, doc="rotated files kept")
    journal_flush_interval: float = _opt(0.5, _positive, doc="journal buffer flush period (s)")

    # Users and sessions
    users: dict[str, UserConfig] = _opt({})
    default_owner: str | None = _opt(None, doc="owner of hosts without one (else first admin)")
    session_idle_timeout: float = _opt(7 * 86400.0, _positive, doc="idle session expiry (s)")
    login_free_attempts: int = _opt(
        5, _positive, doc="failed logins per user or address before each costs a delay")
    login_max_delay: float = _opt(300.0, _positive, doc="longest login backoff (s)")

    # Thresholds (validated in heartbeat.server.thresholds)
    thresholds: dict[str, Any] = _opt({})
    threshold_configs: dict[str, Any] = _opt({})
    threshold_renotify_interval: float = _opt(3600.0, _not_negative)

    # Notifications
    pushsrv: str | None = _opt(None, _one_of("pushover", "mattermost", "signal", "all"))
    email: EmailConfig = _opt(EmailConfig())
    pushover: PushoverConfig = _opt(PushoverConfig())
    mattermost: MattermostConfig = _opt(MattermostConfig())
    signal: SignalConfig = _opt(SignalConfig())
    notify_burst: int = _opt(10, _positive, doc="events per window before a digest is sent")
    notify_window: float = _opt(30.0, _positive, doc="digest window (s)")
    notify_timeout: float = _opt(15.0, _positive, doc="per-send timeout (s)")
    notify_retries: int = _opt(4, _not_negative, doc="retries after a failed send")
    notify_queue_limit: int = _opt(1000, _positive, doc="queued sends per channel")

    # Dynamic DNS
    dyndomains: list[str] = _opt([], _each(_domain_name), doc="zones that get <host>.<zone>")
    nsupdate_bin: str = _opt("/usr/bin/nsupdate")
    nsupdate_server: str | None = _opt(
        None, _nsupdate_server, doc="'host' or 'host port' for nsupdate's server"
    )
    nsupdate_key: str | None = _opt(None, doc="TSIG key file passed to nsupdate -k")
    dns_ttl: int = _opt(60, _positive, doc="TTL of the records written (s)")
    dns_timeout: float = _opt(10.0, _positive, doc="a hung nsupdate is killed after this (s)")
    dns_retries: int = _opt(5, _not_negative, doc="retries after a failed nsupdate")

    # Signing and limits
    keys: dict[str, str] = _opt({}, secret=True, doc="shared keys by id for signed datagrams")
    require_signed: bool = _opt(False)
    sign_window: float = _opt(120.0, _positive, doc="accepted clock skew of signed datagrams (s)")
    max_hosts: int = _opt(10000, _positive, doc="new unknown hosts accepted per hour")
    max_unconfigured_hosts: int = _opt(
        50000, _positive, doc="hosts not under hosts: held at most (configured ones always)")
    max_plugins: int = _opt(100, _positive, doc="distinct plugin names kept per host")
    max_plugin_bytes: int = _opt(
        512 * 1024 * 1024, _positive,
        doc="plugin data held for unconfigured hosts, as bytes of the PLG texts it came from")
    source_rate: float = _opt(
        1000.0, _positive, doc="datagrams/s accepted from one address (IPv6: one /64)")

    def check(self, source: str) -> None:
        """Rules that span several keys (run by the loader after each key is checked)."""
        ports = {"hbd_port": self.hbd_port, "ws_port": self.ws_port, "wss_port": self.wss_port}
        seen: dict[int, str] = {}
        for key, port in ports.items():
            if port is None:
                continue
            if port in seen:
                raise ConfigError(source, key, f"port {port} is already used by {seen[port]}")
            seen[port] = key
        for name in self.hosts:
            if not name or len(name) > 253 or not all(c.isalnum() or c in "._-" for c in name):
                raise ConfigError(source, f"hosts.{name}", "not a valid host name")
        _check_users(self, source)
        _check_notify(self, source)
        _check_keys(self, source)


def _argv(value: Any) -> str | None:
    if not (value if isinstance(value, list) else str(value).strip()):
        return "must name a program (it is empty)"
    if isinstance(value, str):
        try:
            shlex.split(value)
        except ValueError as e:  # an unclosed quote: checked here, not on the first UPD
            return f"cannot be split into words: {e}"
    return None


def _each_argv(value: Any) -> str | None:
    for name, argv in value.items():
        if not argv:
            return f"{name}: must name a program (an empty list was given)"
    return None


@dataclass(frozen=True)
class AgentConfig:
    """Every agent key (``~/.hbc.yaml``), its type and its default."""

    REPLACED_KEYS: ClassVar[dict[str, str]] = {
        "server": "name the server on the command line: twistd heartbeat-agent SERVER"}

    hb_port: int = _opt(50003, _port, doc="the servers' UDP port")
    interval: float = _opt(30.0, _positive, doc="seconds between heartbeats")
    name: str | None = _opt(None, doc="the name this host reports (default: its short name)")
    plugins: dict[str, dict[str, Any]] = _opt(
        {}, doc="per plugin options {NAME: {interval, enabled, timeout, ...}}")
    plugin_dirs: list[str] = _opt([], doc="directories whose *.py files are custom plugins")
    allowed_commands: dict[str, list[str]] = _opt(
        {}, _each_argv, doc="CMD allow-list: name -> argv; server args are appended")
    command_timeout: float = _opt(60.0, _positive, doc="seconds before a CMD is killed")
    update_command: list[str] | str | None = _opt(
        None, _argv, doc="argv run on UPD (a string is split, never run by a shell)")
    update_timeout: float = _opt(900.0, _positive, doc="seconds before the update is killed")
    max_datagram: int = _opt(1400, _positive, doc="PLG datagram size target (bytes)")
    batch_delay: float = _opt(1.0, _not_negative, doc="seconds results wait to share a PLG")
    resolve_interval: float = _opt(600.0, _positive, doc="seconds between re-resolving servers")
    key: str | None = _opt(None, secret=True,
                           doc="shared key: sign every datagram, verify the server's replies")
    key_file: str | None = _opt(None, doc="a file holding the shared key (instead of key)")
    key_id: str | None = _opt(None, doc="the key's id under the server's keys:")
    sign_window: float = _opt(
        120.0, _positive, doc="accepted clock difference of the server's signed replies (s)")

    def check(self, source: str) -> None:
        """Rules beyond each key's type (run by the loader)."""
        if self.name is not None and not valid_host_name(self.name):
            raise ConfigError(source, "name", f"not a valid host name: {self.name!r:.60}")
        if self.key is not None and self.key_file is not None:
            raise ConfigError(source, "key_file", "give key or key_file, not both")
        if (self.key is not None or self.key_file is not None) and self.key_id is None:
            raise ConfigError(source, "key_id", "required with key or key_file: the id the "
                                                "server knows the key by")
        if self.key_id is not None and not valid_key_id(self.key_id):
            raise ConfigError(source, "key_id", "a key id is 1-64 of [A-Za-z0-9._-]")
        if self.key_id is not None and self.key is None and self.key_file is None:
            raise ConfigError(source, "key", "key_id needs key or key_file")
        problem = key_problem(self.key) if self.key is not None else None
        if problem:
            raise ConfigError(source, "key", problem)


SERVER_DEFAULTS: dict[str, Any] = dataclasses.asdict(ServerConfig())
"""The canonical defaults, as plain data (derived: ServerConfig is the definition)."""

_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _describe(tp: Any) -> str:
    if tp in _TYPE_WORDS:
        return _TYPE_WORDS[tp]
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0]).removeprefix('a ')}s"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (Union, types.UnionType):
        words = [_describe(a) for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(words) + (" or null" if type(None) in typing.get_args(tp) else "")
    return "a value"


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in that shape."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        for option in typing.get_args(tp):
            if option is type(None):
                continue
            try:
                return _convert(option, value, key, source)
            except ConfigError:
                continue
        raise ConfigError(source, key, f"expected {_describe(tp)}, got {value!r:.60}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
            if not math.isfinite(number):
                raise ConfigError(source, key, f"expected a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    elif origin is list:
        if isinstance(value, list):
            (item,) = typing.get_args(tp)
            return [_convert(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    elif origin is dict:
        if value is None:
            return {}
        if isinstance(value, dict):
            _, item = typing.get_args(tp)
            return {
                str(k): _convert(item, {} if v is None and item is not Any else v,
                                 f"{key}.{k}", source)
                for k, v in value.items()
            }
    elif dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if isinstance(value, dict):
            return _build(typing.cast(type[Any], tp), value, f"{key}.", source)
    raise ConfigError(source, key, f"expected {_describe(tp)}, got {value!r:.60}")


def _build(cls: type[T], data: Mapping[str, Any], prefix: str, source: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls))}
    values: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            replaced = getattr(cls, "REPLACED_KEYS", {})
            if key in replaced:
                hint = f" ({replaced[key]})"
            raise ConfigError(source, f"{prefix}{key}", f"unknown key{hint}")
        converted = _convert(hints[key], value, f"{prefix}{key}", source)
        check = fields[key].metadata.get("check")
        if check is not None and converted is not None:
            problem = check(converted)
            if problem:
                raise ConfigError(source, f"{prefix}{key}", problem)
        values[key] = converted
    built = cls(**values)
    check_all = getattr(built, "check", None)
    if check_all is not None:
        check_all(source)
    return built


def parse_section(cls: type[T], data: Mapping[str, Any], source: str, prefix: str = "") -> T:
    """Check an already-parsed mapping against ``cls`` (errors name ``prefix`` + key).

    For sections whose shape is only known at run time, such as an agent
    plugin's options under ``plugins.NAME.``.
    """
    return _build(cls, data, prefix, source)


def parse_config(cls: type[T], text: str, source: str) -> T:
    """Parse YAML ``text`` into ``cls``; ``source`` names the file in errors."""
    try:
        data = yaml.safe_load(text)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(source, "", "the top level must be a mapping of keys")
        return _build(cls, data, "", source)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(source, "", f"{where}: not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(source, "", "nested too deeply to be a configuration") from None


def load_config(cls: type[T], path: str | os.PathLike[str] | None) -> T:
    """Read ``path`` (None: built-in defaults) into ``cls``."""
    if path is None:
        return cls()
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(source, "", f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    return parse_config(cls, text, source)


def default_config_path(name: str, home: Path | None = None) -> Path | None:
    """``~/<name>`` if it exists, else None (built-in defaults)."""
    candidate = (home or Path.home()) / name
    return candidate if candidate.exists() else None


USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
"""A user name: what ``users:``, access lists, logins and the API's paths accept."""


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


MIN_KEY_LENGTH = 16


def key_problem(secret: str) -> str | None:
    """What is wrong with a shared key's secret, or None."""
    if len(secret.encode("utf-8")) < MIN_KEY_LENGTH:
        return (f"too short: use at least {MIN_KEY_LENGTH} characters "
                f"(e.g. the output of 'openssl rand -hex 32')")
    return None


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


def load_server_config(path: str | os.PathLike[str] | None) -> ServerConfig:
    """Load and check a server config; ``None`` gives the built-in defaults."""
    return load_config(ServerConfig, path)


def load_agent_config(path: str | os.PathLike[str] | None) -> AgentConfig:
    """Load and check an agent config; ``None`` gives the built-in defaults."""
    return load_config(AgentConfig, path)


SECRET_MASK = "********"
"""What a secret shows as; an unset secret stays null, so "not set" is still visible."""


def _mask(value: Any) -> Any:
    if value is None or value == "":
        return value
    if isinstance(value, dict):  # e.g. keys: the ids are names, the values secrets
        return {str(k): SECRET_MASK for k in value}
    return SECRET_MASK


def masked(value: Any) -> Any:
    """A config value as plain JSON-able data with every ``secret`` field masked."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            out[f.name] = _mask(item) if f.metadata.get("secret") else masked(item)
        return out
    if isinstance(value, dict):
        return {str(k): masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v) for v in value]
    return value


def settings_view(config: ServerConfig) -> list[dict[str, Any]]:
    """Every server key in declaration order: its value and default (masked), doc, secret.

    What the settings page shows: ``changed`` says the value is not the default.
    """
    defaults = ServerConfig()
    rows = []
    for f in dataclasses.fields(ServerConfig):
        value, default = getattr(config, f.name), getattr(defaults, f.name)
        secret = bool(f.metadata.get("secret"))
        rows.append({
            "key": f.name,
            "value": _mask(value) if secret else masked(value),
            "default": _mask(default) if secret else masked(default),
            "changed": value != default,
            "doc": f.metadata.get("doc", ""),
            "secret": secret,
        })
    return rows
