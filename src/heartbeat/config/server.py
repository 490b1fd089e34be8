"""The server's schema: every key of the server config, its type, its default, its checks.

Each section is a frozen dataclass declared with :func:`~heartbeat.config.loader.option`;
``SERVER_DEFAULTS`` is derived from it. The checks of single keys are here or
in checks.py; those that span several keys are in server_checks.py. Loading a
server config for running it goes through ``heartbeat.server.settings``, which
also builds the threshold rule book. Pure code.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from heartbeat.config.checks import (
    each,
    host_pattern_problem,
    http_url,
    network_problem,
    not_negative,
    one_of,
    port_number,
    positive,
)
from heartbeat.config.loader import option
from heartbeat.config.server_checks import check_server

__all__ = [
    "SERVER_DEFAULTS",
    "EmailConfig",
    "HostConfig",
    "JobConfig",
    "MattermostConfig",
    "MetricsConfig",
    "PushoverConfig",
    "ServerConfig",
    "SignalConfig",
    "StatusPageConfig",
    "UserConfig",
]

_DNS_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _password_hash(value: Any) -> str | None:
    from heartbeat.passwords import parse_hash  # noqa: PLC0415 - config stays importable alone

    try:
        parse_hash(value)
    except ValueError as e:
        return str(e)
    return None


def _nsupdate_server(value: Any) -> str | None:
    parts = value.split()
    if len(parts) == 1 or (
            len(parts) == 2 and parts[1].isdigit() and port_number(int(parts[1])) is None):
        return None
    return f"must be 'host' or 'host port', got {value!r:.60}"


def _store_url(value: Any) -> str | None:
    from urllib.parse import parse_qs, urlsplit  # noqa: PLC0415 - only for this check

    try:
        url = urlsplit(value)
        password = url.password
    except ValueError as e:
        return f"not a URL: {e}"
    if url.scheme not in ("postgresql", "postgres"):
        return f"must be a postgresql:// URL, got {url.scheme or value!r:.60}"
    if password is not None or "password" in parse_qs(url.query):
        return ("holds a password: put it in store_password_file or the libpq environment "
                "(PGPASSWORD, ~/.pgpass), never in the config /settings shows")
    return None


def _domain_name(value: Any) -> str | None:
    labels = value.rstrip(".").split(".")
    if len(value) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in labels):
        return None
    return f"not a valid domain name: {value!r:.60}"


def _percent(value: Any) -> str | None:
    return None if 0 <= value <= 100 else f"must be a percentage from 0 to 100, got {value}"


@dataclass(frozen=True)
class HostConfig:
    """Per-host settings under ``hosts:``."""

    watch: bool = option(True, doc="false silences every notification for this host")
    owner: str | None = option(None, doc="user who owns the host (default: default_owner)")
    managers: list[str] = option([], doc="users who may queue commands, DNS, upgrades")
    monitors: list[str] = option([], doc="users who may view the host")
    threshold_config: str | list[str] | None = option(
        None, doc="named threshold profile(s) applied left to right over 'default'"
    )
    dns: bool = option(True, doc="false opts this host out of dynamic DNS")
    interval: float | None = option(
        None, positive, doc="expected heartbeat interval, overriding the one the host sends"
    )
    require_signed: bool | None = option(None, doc="per-host override of require_signed")
    key: str | None = option(None, doc="id of the shared key (under keys:) this host signs with")
    description: str = option("", doc="free text shown in the UI")
    tags: list[str] = option([], doc="labels to group and filter hosts by in the UI")
    parents: list[str] = option(
        [], doc="hosts this one is reached through: silent behind a down parent is UNREACHABLE")
    recover_after: int | None = option(
        None, positive, doc="good heartbeats (and samples) in a row before UP (and OK)")


@dataclass(frozen=True)
class UserConfig:
    """A user under ``users:``."""

    full_name: str = option("")
    avatar: str | None = option(None)
    password: str | None = option(
        None, _password_hash, secret=True,
        doc="pbkdf2:sha256:<iterations>$<salt>$<hash> from `heartbeat passwd NAME`")
    admin: bool = option(False)
    email: str | None = option(None)
    notification_channels: list[str] = option(
        [], each(one_of("email", "pushover", "mattermost", "signal"))
    )
    pushover_user: str | None = option(None, doc="this user's Pushover user key", secret=True)
    signal_number: str | None = option(None, doc="this user's Signal number")
    mattermost_user: str | None = option(
        None, doc="this user's Mattermost name: messages go to @name (else the webhook channel)"
    )


@dataclass(frozen=True)
class EmailConfig:
    """SMTP delivery under ``email:``."""

    smtp_host: str = option("localhost")
    smtp_port: int = option(25, port_number)
    tls: str = option("starttls", one_of("none", "starttls", "tls"),
                      doc="starttls: required STARTTLS; tls: implicit TLS (port 465); none")
    username: str | None = option(None, doc="SMTP login; none: no AUTH")
    password: str | None = option(None, secret=True)
    from_addr: str = option("heartbeat@localhost")
    to: list[str] = option([], doc="recipients of every notification")
    ca_file: str | None = option(None, doc="CA bundle that signs the SMTP server's certificate")


@dataclass(frozen=True)
class PushoverConfig:
    """Pushover delivery under ``pushover:``."""

    token: str | None = option(None, secret=True)
    user: str | None = option(None, secret=True, doc="the Pushover user or group key")
    url: str = option("https://api.pushover.net/1/messages.json", http_url)


@dataclass(frozen=True)
class MattermostConfig:
    """Mattermost incoming-webhook delivery under ``mattermost:``."""

    url: str | None = option(None, http_url, secret=True,
                             doc="the incoming webhook URL (a secret)")
    channel: str | None = option(None, doc="channel override (default: the webhook's own)")
    username: str | None = option("heartbeat", doc="poster name override")


@dataclass(frozen=True)
class SignalConfig:
    """signal-cli REST API delivery under ``signal:``."""

    url: str = option("http://localhost:8080", http_url, doc="signal-cli REST API base URL")
    number: str | None = option(None, doc="the registered number messages are sent from")
    recipients: list[str] = option([], doc="numbers or group ids that get every notification")


@dataclass(frozen=True)
class StatusPageConfig:
    """A public status page under ``status_pages.<slug>``: ``/status/<slug>``."""

    title: str = option("Status", doc="the page's heading and its badge's label")
    hosts: list[str] = option(
        [], doc="host names or globs (web*, db?, *.example.com) whose name and state it shows")
    description: str = option("", doc="a line of text under the title")


@dataclass(frozen=True)
class JobConfig:
    """A cron job under ``jobs.<name>``: pinged at ``/ping/<uuid>`` (docs/JOBS.md)."""

    schedule: str | None = option(
        None, doc="5-field cron expression (or @daily...) of when runs are due")
    timezone: str | None = option(
        None, doc="IANA time zone of schedule (default: timezone, else this machine's)")
    period: float | str | None = option(
        None, doc="instead of schedule: a run is due this long after the last (90, 1h, 1d)")
    grace: float | str = option(
        "1h", doc="how late a run may end before the job is late (seconds or 5m, 1h...)")
    max_runtime: float | str | None = option(
        None, doc="a started run not ended within this is running too long (default: grace)")
    uuid: str | None = option(
        None, secret=True,
        doc="the job's ping UUID (the secret of its URLs); none: one is made and kept")
    host: str | None = option(
        None, doc="the host it runs on: that host's access, routing and maintenance apply")
    description: str = option("", doc="free text shown in the API and UI")


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus exposition at ``GET /metrics`` under ``metrics:``."""

    enabled: bool = option(False, doc="serve GET /metrics on hbd_port")
    allow: list[str] = option(
        [], each(network_problem),
        doc="addresses or networks that may scrape without credentials")
    max_series: int = option(100000, positive, doc="plugin metric series per scrape at most")


@dataclass(frozen=True)
class ServerConfig:
    """Every server key, its type and its default (``SERVER_DEFAULTS`` is derived)."""

    REPLACED_KEYS: ClassVar[dict[str, str]] = {
        "pickfile": "replaced by state_dir: the folder of the SQLite store"}
    """Keys of the old hbd's config (same ~/.hb.yaml) that ours replaced, and by what."""

    # Heartbeat ingest (UDP)
    hb_host: str = option("::", doc="UDP bind address; '::' is dual-stack IPv4+IPv6")
    hb_port: int = option(50003, port_number, doc="UDP port for heartbeats")
    interval: float = option(
        30.0, positive, doc="heartbeat interval assumed when a host sends none (s)")
    grace: float = option(
        40.0, not_negative, doc="silence past the interval before a host is DOWN (s)")
    max_inflated: int = option(262144, positive, doc="largest inflated datagram accepted (bytes)")
    max_depth: int = option(16, positive, doc="deepest JSON nesting accepted")
    udp_rcvbuf: int = option(4 * 1024 * 1024, not_negative, doc="UDP socket receive buffer (bytes)")
    monitor_interval: float = option(
        1.0, positive, doc="how often hosts are checked for expiry (s)")
    command_attempts: int = option(5, positive, doc="sends of a queued CMD/UPD before it fails")
    hosts: dict[str, HostConfig] = option({}, doc="per-host settings")

    # HTTP API, pages and WebSocket
    hbd_host: str = option("127.0.0.1", doc="bind address for HTTP and WebSocket")
    hbd_port: int = option(50004, port_number, doc="HTTP port (API, pages, /ws)")
    ws_port: int | None = option(50005, port_number, doc="plain WebSocket port; null disables")
    wss_port: int | None = option(None, port_number, doc="TLS WebSocket port; null disables")
    cert_path: str = option("/usr/local/etc/ssl/", doc="folder of the TLS files for wss_port")
    wss_pem: str = option("fullchain.pem", doc="certificate chain in cert_path (PEM, leaf first)")
    wss_key: str = option("privkey.pem", doc="private key in cert_path (PEM)")
    templates_dir: str | None = option(None, doc="override the packaged page templates")
    http_max_body: int = option(1024 * 1024, positive, doc="largest HTTP request body (bytes)")
    http_idle_timeout: float = option(
        60.0, positive, doc="idle HTTP connections are closed after this (s)")
    http_request_timeout: float = option(
        30.0, positive, doc="a request's headers and body must arrive within this (s)")
    http_max_connections: int = option(
        512, positive, doc="open HTTP and WebSocket connections at most, all ports together")
    http_max_connections_per_ip: int = option(
        64, positive, doc="open connections at most from one address")
    http_hosts: list[str] = option(
        ["localhost"], each(host_pattern_problem),
        doc="names browsers may reach the HTTP ports by (Host), besides IP addresses; "
            "*.domain for any name under it, * for any")
    trusted_proxies: list[str] = option(
        [], each(network_problem),
        doc="reverse proxies (addresses or networks) whose X-Forwarded-For names the client")
    metrics: MetricsConfig = option(MetricsConfig(), doc="Prometheus exposition at /metrics")
    status_pages: dict[str, StatusPageConfig] = option(
        {}, doc="public status pages (no login): /status/<slug> with the hosts' names and states")
    jobs: dict[str, JobConfig] = option(
        {}, doc="cron jobs that ping /ping/<uuid> or send JOB datagrams (docs/JOBS.md)")
    ping_rate: float = option(
        10.0, positive, doc="job pings/s accepted from one address over HTTP (IPv6: one /64)")

    # State and journal
    state_dir: str = option("/var/lib/heartbeat", doc="SQLite store directory")
    store_url: str | None = option(
        None, _store_url, doc="a PostgreSQL store shared by servers, postgresql://user@host/db "
        "(docs/HA.md); unset: the SQLite store in state_dir")
    store_password_file: str | None = option(
        None, doc="file holding the PostgreSQL password (else libpq's PGPASSWORD, ~/.pgpass)")
    node_name: str | None = option(
        None, doc="this server's name among those sharing a PostgreSQL store "
        "(default: its host name and hbd_port)")
    leader_interval: float = option(
        1.0, positive, doc="with store_url: how often a server tries to become the leader, "
        "or checks it still is (s)")
    store_retry_cap: float = option(
        30.0, positive, doc="longest wait (s) between two tries of a store that failed "
        "(the wait doubles from 1 s)")
    store_flush_interval: float = option(0.5, positive, doc="store write batch period (s)")
    history_retention: float = option(7 * 86400.0, positive, doc="plugin history kept (s)")
    history_max_samples: int = option(10000, positive, doc="PLG messages kept in history per host")
    history_max_host_bytes: int = option(
        32 * 1024 * 1024, positive, doc="bytes of PLG text (inflated) kept in history per host")
    history_max_bytes: int = option(
        2 * 1024 * 1024 * 1024, positive,
        doc="bytes of PLG text (inflated) kept in history in all (an equal share per host)")
    logfile: str | None = option(None, doc="also write the server log to this file")
    journal_enabled: bool = option(True, doc="write every received message to the journal")
    journal_dir: str = option("/var/log/heartbeat", doc="journal directory")
    journal_file: str = option("messages.journal", doc="journal file name in journal_dir")
    journal_max_size: int = option(104857600, positive, doc="rotate past this size (bytes)")
    journal_max_backups: int = option(10, not_negative, doc="rotated files kept")
    journal_flush_interval: float = option(0.5, positive, doc="journal buffer flush period (s)")

    # Users and sessions
    users: dict[str, UserConfig] = option({}, doc="users and their passwords; none: no login")
    default_owner: str | None = option(None, doc="owner of hosts without one (else first admin)")
    session_idle_timeout: float = option(7 * 86400.0, positive, doc="idle session expiry (s)")
    login_free_attempts: int = option(
        5, positive, doc="failed logins per user or address before each costs a delay")
    login_max_delay: float = option(300.0, positive, doc="longest login backoff (s)")
    totp_required: str = option(
        "off", one_of("off", "privileged", "all"),
        doc="who must use a second factor (TOTP): off, privileged (admins, owners and "
            "managers) or all; admins change it in the API")

    # Thresholds (validated in heartbeat.server.thresholds)
    thresholds: dict[str, Any] = option({}, doc="threshold rules over the built-in ones")
    threshold_configs: dict[str, Any] = option({}, doc="named threshold profiles hosts pick")
    threshold_renotify_interval: float = option(
        3600.0, not_negative, doc="reminder of an ongoing alert after this; 0: none (s)")

    # Operations: maintenance windows, dependencies, flapping (docs/OPERATIONS.md)
    maintenance: list[dict[str, Any]] = option(
        [], doc="planned windows during which hosts notify nobody (checked by the server)")
    timezone: str | None = option(
        None, doc="time zone of maintenance windows and silences naming none (default: "
                  "this machine's)")
    flap_detection: bool = option(
        True, doc="hold the notices of a host state or metric that changes too often")
    flap_low_threshold: float = option(
        20.0, _percent, doc="percent state change at or below which flapping stops")
    flap_high_threshold: float = option(
        30.0, _percent, doc="percent state change at or above which flapping starts")

    # Notifications
    pushsrv: str | None = option(None, one_of("pushover", "mattermost", "signal", "all"),
                                 doc="push channels used besides e-mail")
    email: EmailConfig = option(EmailConfig(), doc="SMTP server and recipients of notices")
    pushover: PushoverConfig = option(PushoverConfig(), doc="Pushover application and user")
    mattermost: MattermostConfig = option(MattermostConfig(), doc="Mattermost incoming webhook")
    signal: SignalConfig = option(SignalConfig(), doc="signal-cli REST API and recipients")
    notify_burst: int = option(10, positive, doc="events per window before a digest is sent")
    notify_window: float = option(30.0, positive, doc="digest window (s)")
    notify_timeout: float = option(15.0, positive, doc="per-send timeout (s)")
    notify_retries: int = option(4, not_negative, doc="retries after a failed send")
    notify_queue_limit: int = option(1000, positive, doc="queued sends per channel")

    # Dynamic DNS
    dyndomains: list[str] = option([], each(_domain_name), doc="zones that get <host>.<zone>")
    nsupdate_bin: str = option("/usr/bin/nsupdate", doc="the nsupdate program")
    nsupdate_server: str | None = option(
        None, _nsupdate_server, doc="'host' or 'host port' for nsupdate's server"
    )
    nsupdate_key: str | None = option(None, doc="TSIG key file passed to nsupdate -k")
    dns_ttl: int = option(60, positive, doc="TTL of the records written (s)")
    dns_timeout: float = option(10.0, positive, doc="a hung nsupdate is killed after this (s)")
    dns_retries: int = option(5, not_negative, doc="retries after a failed nsupdate")

    # Signing and limits
    keys: dict[str, str] = option({}, secret=True, doc="shared keys by id for signed datagrams")
    require_signed: bool = option(False, doc="drop unsigned datagrams (see keys)")
    sign_window: float = option(120.0, positive, doc="accepted clock skew of signed datagrams (s)")
    max_hosts: int = option(10000, positive, doc="new unknown hosts accepted per hour")
    max_unconfigured_hosts: int = option(
        50000, positive, doc="hosts not under hosts: held at most (configured ones always)")
    max_plugins: int = option(100, positive, doc="distinct plugin names kept per host")
    max_plugin_bytes: int = option(
        512 * 1024 * 1024, positive,
        doc="plugin data kept for unconfigured hosts, as the PLG texts it came from (bytes)")
    source_rate: float = option(
        1000.0, positive,
        doc="datagrams/s accepted from one address (an IPv6 /64: 64 times that)")

    def check(self, source: str) -> None:
        """Rules that span several keys (server_checks.py; run by the loader)."""
        check_server(self, source)


SERVER_DEFAULTS: dict[str, Any] = dataclasses.asdict(ServerConfig())
"""The canonical defaults, as plain data (derived: ServerConfig is the definition)."""
