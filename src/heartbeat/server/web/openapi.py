"""The OpenAPI 3.1 description of ``/api/0``, served at ``/api/0/openapi.json``.

Written by hand next to the routes; a test walks Klein's URL map and this
document together so neither can gain an operation the other lacks. Request
body schemas are the very objects :mod:`heartbeat.server.web.schema` enforces.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any, Final

from heartbeat.server.web.schema import (
    ACCESS_BODY,
    ACK_BODY,
    COMMAND_BODY,
    KEY_CREATE_BODY,
    LOGIN_BODY,
    OWNER_BODY,
    POLICY_BODY,
    SILENCE_BODY,
    TOTP_CODE_BODY,
    UPGRADE_BODY,
    USER_CREATE_BODY,
    USER_UPDATE_BODY,
    WINDOW_BODY,
)

__all__ = ["document", "endpoints"]

_NUMBER_OR_NULL: Final = {"type": ["number", "null"]}
_STRING_OR_NULL: Final = {"type": ["string", "null"]}
_ROLE: Final = {"type": ["string", "null"], "enum": ["monitor", "manager", "owner", None]}
_COVERED: Final[dict[str, Any]] = {
    "in_maintenance": {"type": "boolean", "description": "a maintenance window covers it now"},
    "maintenance": {"type": "array", "items": {"type": "string"},
                    "description": "the ids of the open windows covering it"},
    "silenced_by": {"oneOf": [{"type": "null"}, {
        "type": "object", "properties": {"id": {"type": "string"}, "author": _STRING_OR_NULL,
                                         "comment": {"type": "string"},
                                         "end": {"type": "number"}},
        "required": ["id", "author", "comment", "end"]}]},
    "acknowledged": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Ack"}]},
    "markers": {"type": "array", "items": {"type": "object"},
                "description": "the same as tags for people: kind (maintenance, silenced, "
                               "acknowledged, flapping), text, by, until"},
}
_ROLES: Final = {
    "default_role": {**_ROLE, "description": "the role on every host that `roles` does not "
                     "name (owner for an admin and the default owner; null: none)"},
    "roles": {"type": "object", "additionalProperties": _ROLE,
              "description": "the hosts (seen or configured) where the role differs from "
                             "`default_role`; null: no role there"},
}

SCHEMAS: Final[dict[str, Any]] = {
    "Error": {
        "type": "object",
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
        "required": ["error", "detail"],
    },
    "Host": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "state": {"type": "string",
                      "description": "UP, DOWN, UNREACHABLE (silent behind a DOWN parent) or "
                                     "UNKNOWN; clients should show an unknown state as it is"},
            "addr": _STRING_OR_NULL,
            "port": {"type": ["integer", "null"]},
            "last_seen": _NUMBER_OR_NULL,
            "since": _NUMBER_OR_NULL,
            "first_seen": _NUMBER_OR_NULL,
            "interval": _NUMBER_OR_NULL,
            "rtt": _NUMBER_OR_NULL,
            "version": _STRING_OR_NULL,
            "boot_time": _NUMBER_OR_NULL,
            "down_reason": _STRING_OR_NULL,
            "watch": {"type": "boolean"},
            "plugins": {"type": "array", "items": {"type": "string"}},
            "pending_commands": {"type": "integer"},
            "signed": {"type": ["boolean", "null"]},
            "key_id": _STRING_OR_NULL,
            "description": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "latest_message": {"oneOf": [{"type": "null"}, {
                "type": "object", "properties": {"ts": {"type": "number"},
                                                 "message": {"type": "object"}},
                "required": ["ts", "message"]}]},
            "alerts": {"$ref": "#/components/schemas/LevelCounts"},
            "alert_level": {"type": ["string", "null"],
                            "enum": ["CRITICAL", "WARNING", "UNKNOWN", None]},
            "role": _ROLE,
            "parents": {"type": "array", "items": {"type": "string"}},
            "flapping": {"type": "boolean"},
            "recovering": {"oneOf": [{"type": "null"}, {"type": "object"}],
                           "description": "heartbeats in a row toward recover_after"},
            **_COVERED,
        },
        "required": ["name", "state", "addr", "last_seen", "since", "interval", "rtt",
                     "version", "watch", "description", "latest_message", "alerts",
                     "alert_level", "role", "in_maintenance", "silenced_by", "acknowledged",
                     "markers"],
    },
    "Command": {
        "type": "object",
        "properties": {
            "cmd_id": {"type": "string"},
            "kind": {"type": "string", "enum": ["CMD", "UPD"]},
            "queued": {"type": "number"},
            "attempts": {"type": "integer"},
            "by": _STRING_OR_NULL,
            "cmd": {"type": "string"},
            "args": {"type": "array", "items": {"type": "string"}},
            "version": {"type": "string"},
        },
        "required": ["cmd_id", "kind", "queued", "attempts", "by"],
    },
    "HostDetail": {
        "allOf": [
            {"$ref": "#/components/schemas/Host"},
            {"type": "object", "properties": {
                "pending": {"type": "array", "items": {"$ref": "#/components/schemas/Command"}},
                "results": {"type": "array", "items": {"type": "object"}},
            }, "required": ["pending", "results"]},
        ],
    },
    "HostList": {
        "type": "object",
        "properties": {
            "hosts": {"type": "array", "items": {"$ref": "#/components/schemas/Host"}},
            "next": {"type": ["string", "null"],
                     "description": "with limit: the after= of the next page; null on the last"},
            "total": {"type": "integer", "minimum": 0,
                      "description": "with limit: hosts matching the filters in all"},
        },
        "required": ["hosts"],
    },
    "Sample": {
        "type": "object",
        "properties": {"ts": {"type": "number"}, "data": {}},
        "required": ["ts", "data"],
    },
    "Plugins": {
        "type": "object",
        "properties": {
            "host": {"type": "string"},
            "plugins": {"type": "object",
                        "additionalProperties": {"$ref": "#/components/schemas/Sample"}},
        },
        "required": ["host", "plugins"],
    },
    "History": {
        "type": "object",
        "properties": {
            "host": {"type": "string"},
            "plugin": {"type": "string"},
            "samples": {"type": "array", "items": {"$ref": "#/components/schemas/Sample"}},
        },
        "required": ["host", "plugin", "samples"],
    },
    "Messages": {
        "type": "object",
        "properties": {"messages": {"type": "array", "items": {
            "type": "object",
            "properties": {"timestamp": {"type": "number"}, "datetime": {"type": "string"},
                           "source_ip": _STRING_OR_NULL,
                           "source_port": {"type": ["integer", "null"]},
                           "message": {"type": "object"}},
            "required": ["timestamp", "message"],
        }}, "complete": {
            "type": "boolean",
            "description": "false: the newest 64 MiB of the journal were searched without "
                           "finding `limit` messages, and older ones were not"}},
        "required": ["messages", "complete"],
    },
    "Status": {
        "type": "object",
        "properties": {
            "version": {"type": "string"},
            "started": {"type": "number"},
            "uptime": {"type": "number"},
            "hosts": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
        "required": ["version", "started", "uptime", "hosts"],
    },
    "Access": {
        "type": "object",
        "properties": {
            "host": {"type": "string"},
            "owner": _STRING_OR_NULL,
            "managers": {"type": "array", "items": {"type": "string"}},
            "monitors": {"type": "array", "items": {"type": "string"}},
            "source": {"type": "string", "enum": ["config", "api"]},
        },
        "required": ["host", "owner", "managers", "monitors", "source"],
        "additionalProperties": False,
    },
    "User": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "full_name": {"type": "string"},
            "avatar": _STRING_OR_NULL,
            "admin": {"type": "boolean"},
            "email": _STRING_OR_NULL,
            "notification_channels": {"type": "array", "items": {"type": "string"}},
            "pushover_user": _STRING_OR_NULL,
            "mattermost_user": _STRING_OR_NULL,
            "signal_number": _STRING_OR_NULL,
            "has_password": {"type": "boolean"},
            "source": {"type": "string", "enum": ["config", "api"]},
            "session": {"type": "object", "description": "after a change of one's own "
                        "password: the session that replaces the caller's",
                        "properties": {"token": {"type": "string"},
                                       "csrf_token": {"type": "string"}},
                        "required": ["token", "csrf_token"]},
            **_ROLES,
        },
        "required": ["name", "full_name", "admin", "notification_channels", "has_password"],
    },
    "Settings": {
        "type": "object",
        "properties": {
            "path": _STRING_OR_NULL,
            "keys": {"type": "array", "items": {
                "type": "object",
                "properties": {"key": {"type": "string"}, "value": {}, "default": {},
                               "changed": {"type": "boolean"}, "doc": {"type": "string"},
                               "unit": {"type": ["string", "null"],
                                        "enum": ["seconds", "bytes", None]},
                               "secret": {"type": "boolean"}},
                "required": ["key", "value", "default", "changed", "doc", "unit", "secret"]}},
        },
        "required": ["path", "keys"],
    },
    "UserList": {
        "type": "object",
        "properties": {"users": {"type": "array", "items": {"$ref": "#/components/schemas/User"}}},
        "required": ["users"],
    },
    "Me": {
        "type": "object",
        "properties": {
            "name": _STRING_OR_NULL,
            "admin": {"type": "boolean"},
            "auth": {"type": "string", "enum": ["none", "cookie", "bearer", "key"]},
            "authentication": {"type": "boolean"},
            "csrf_token": {"type": "string"},
            "session": {"type": "object", "properties": {
                "created": {"type": "number"}, "last_used": {"type": "number"},
                "idle_timeout": {"type": "number"}}},
            "api_key": {"$ref": "#/components/schemas/ApiKey"},
            "totp": {"type": "object"},
            "totp_enrolment_required": {"type": "boolean"},
            **_ROLES,
            "admins": {"type": "array", "description": "who can grant roles on every host",
                       "items": {"type": "object", "properties": {
                           "name": {"type": "string"}, "full_name": {"type": "string"},
                           "email": _STRING_OR_NULL}, "required": ["name", "full_name"]}},
        },
        "required": ["name", "admin", "auth", "authentication", "default_role", "roles",
                     "admins"],
    },
    "ApiKey": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "user": {"type": "string"},
            "scope": {"type": "string", "enum": ["ro", "rw"]},
            "created": {"type": "number"},
            "expires": _NUMBER_OR_NULL,
            "last_used": _NUMBER_OR_NULL,
            "last_address": _STRING_OR_NULL,
            "expired": {"type": "boolean"},
            "hint": {"type": "string"},
        },
        "required": ["id", "name", "user", "scope", "created", "expires", "last_used",
                     "expired", "hint"],
    },
    "Totp": {
        "type": "object",
        "properties": {
            "user": {"type": "string"},
            "enrolled": {"type": "boolean"},
            "enrolled_at": _NUMBER_OR_NULL,
            "recovery_codes_left": {"type": ["integer", "null"]},
            "required": {"type": "boolean"},
            "policy": {"type": "string", "enum": ["off", "privileged", "all"]},
            "recovery_codes": {"type": "array", "items": {"type": "string"},
                               "description": "after confirming: shown this once only"},
        },
        "required": ["user", "enrolled", "required", "policy"],
    },
    "TotpStart": {
        "type": "object",
        "properties": {
            "user": {"type": "string"},
            "secret": {"type": "string", "description": "base32, for typing into an app"},
            "uri": {"type": "string", "description": "otpauth:// URI"},
            "qr": {"type": "string", "description": "the URI as a QR code: an SVG data: URI"},
            "expires": {"type": "number"},
        },
        "required": ["user", "secret", "uri", "qr", "expires"],
    },
    "RecoveryCodes": {
        "type": "object",
        "properties": {"user": {"type": "string"},
                       "recovery_codes": {"type": "array", "items": {"type": "string"}}},
        "required": ["user", "recovery_codes"],
    },
    "AuthPolicy": {
        "type": "object",
        "properties": {"totp_required": {"type": "string", "enum": ["off", "privileged", "all"]},
                       "source": {"type": "string", "enum": ["config", "api"]}},
        "required": ["totp_required", "source"],
    },
    "Badge": {
        "type": "object",
        "properties": {"token": {"type": "string"},
                       "kind": {"type": "string", "enum": ["host", "page"]},
                       "target": {"type": "string"}, "created": {"type": "number"},
                       "url": {"type": "string", "description": "/badge/<token>.svg"}},
        "required": ["token", "kind", "target", "created", "url"],
    },
    "JobRun": {
        "type": "object",
        "properties": {"started": _NUMBER_OR_NULL, "ended": _NUMBER_OR_NULL,
                       "outcome": {"type": "string",
                                   "enum": ["success", "fail", "running", "unfinished"]},
                       "duration": _NUMBER_OR_NULL,
                       "exit_code": {"type": ["integer", "null"]},
                       "log": {"type": "string", "description": "its tail (runs only)"},
                       "source": _STRING_OR_NULL},
        "required": ["started", "ended", "outcome", "duration", "exit_code", "source"],
    },
    "Job": {
        "type": "object",
        "properties": {
            "name": {"type": "string"}, "host": _STRING_OR_NULL,
            "description": {"type": "string"},
            "schedule": {"type": "string", "description": "cron expression (zone), or "
                                                          "'every 1h 30m'"},
            "grace": {"type": "number"}, "max_runtime": {"type": "number"},
            "status": {"type": "string", "enum": ["new", "up", "running", "late", "failed"]},
            "level": {"type": "string", "enum": ["OK", "WARNING", "CRITICAL"]},
            "reason": {"type": "string"}, "created": {"type": "number"},
            "last_end": _NUMBER_OR_NULL, "last_success": _NUMBER_OR_NULL,
            "last_exit_code": {"type": ["integer", "null"]},
            "next_expected": {**_NUMBER_OR_NULL,
                              "description": "when the next run should have ended by"},
            "late_after": {**_NUMBER_OR_NULL, "description": "next_expected plus grace"},
            "running_since": _NUMBER_OR_NULL,
            "last_run": {"oneOf": [{"type": "null"},
                                   {"$ref": "#/components/schemas/JobRun"}]},
            "last_duration": _NUMBER_OR_NULL,
            "uuid": {**_STRING_OR_NULL,
                     "description": "the ping UUID: shown to managers of the host and up"},
            "ping_url": _STRING_OR_NULL,
            "runs": {"type": "array", "items": {"$ref": "#/components/schemas/JobRun"},
                     "description": "GET /api/0/jobs/<name> only: newest first"},
        },
        "required": ["name", "host", "schedule", "grace", "max_runtime", "status", "level",
                     "reason", "created", "last_end", "last_success", "next_expected",
                     "late_after", "running_since", "last_run", "uuid", "ping_url"],
    },
    "JobList": {
        "type": "object",
        "properties": {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                       "levels": {"type": "object",
                                  "additionalProperties": {"type": "integer"}}},
        "required": ["jobs", "levels"],
    },
    "StatusPages": {
        "type": "object",
        "properties": {"pages": {"type": "array", "items": {
            "type": "object",
            "properties": {"slug": {"type": "string"}, "title": {"type": "string"},
                           "description": {"type": "string"},
                           "hosts": {"type": "array", "items": {"type": "string"}},
                           "url": {"type": "string"}, "badge": _STRING_OR_NULL,
                           "summary": {"type": "object"}},
            "required": ["slug", "title", "hosts", "url", "badge", "summary"]}}},
        "required": ["pages"],
    },
    "ApiKeyList": {
        "type": "object",
        "properties": {"user": {"type": "string"},
                       "keys": {"type": "array", "items": {"$ref": "#/components/schemas/ApiKey"}}},
        "required": ["user", "keys"],
    },
    "NewApiKey": {
        "type": "object",
        "properties": {"token": {"type": "string", "description": "shown this once only"},
                       "key": {"$ref": "#/components/schemas/ApiKey"}},
        "required": ["token", "key"],
    },
    "Login": {
        "type": "object",
        "properties": {
            "token": {"type": "string"},
            "csrf_token": {"type": "string"},
            "user": {"oneOf": [{"$ref": "#/components/schemas/User"}, {"type": "null"}]},
            "idle_timeout": {"type": "number"},
            "totp_enrolment_required": {"type": "boolean"},
        },
        "required": ["token", "csrf_token", "user", "idle_timeout"],
    },
    "Index": {
        "type": "object",
        "properties": {
            "api": {"type": "integer"},
            "version": {"type": "string"},
            "authentication": {"type": "boolean"},
            "openapi": {"type": "string"},
            "endpoints": {"type": "array", "items": {"type": "string"}},
            "websocket": {"type": "string"},
        },
        "required": ["api", "version", "authentication", "endpoints"],
    },
    "LevelCounts": {
        "type": "object",
        "properties": {level: {"type": "integer"} for level in ("CRITICAL", "WARNING", "UNKNOWN")},
        "required": ["CRITICAL", "WARNING", "UNKNOWN"],
    },
    "Alert": {
        "type": "object",
        "description": "A problem: a host that is DOWN (kind host) or a metric past its "
                       "threshold (kind metric; stale while its host is not UP)",
        "properties": {
            "kind": {"type": "string", "enum": ["host", "metric"]},
            "host": {"type": "string"},
            "level": {"type": "string", "enum": ["CRITICAL", "WARNING", "UNKNOWN"]},
            "state": _STRING_OR_NULL,
            "reason": _STRING_OR_NULL,
            "metric_path": _STRING_OR_NULL,
            "value": {},
            "threshold_value": {},
            "message": {"type": "string"},
            "since": _NUMBER_OR_NULL,
            "last_notified": _NUMBER_OR_NULL,
            "stale": {"type": "boolean"},
            "flapping": {"type": "boolean", "description": "a metric whose level flaps: its "
                                                           "changes are not notified"},
            **_COVERED,
        },
        "required": ["kind", "host", "level", "state", "metric_path", "value",
                     "threshold_value", "message", "since", "stale", "markers",
                     "in_maintenance", "silenced_by", "acknowledged"],
    },
    "AlertList": {
        "type": "object",
        "properties": {
            "alerts": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
            "total": {"type": "integer",
                      "description": "problems matching the filters (past any limit)"},
            "summary": {"allOf": [{"$ref": "#/components/schemas/LevelCounts"}, {
                "type": "object", "properties": {
                    "stale": {"type": "integer"},
                    "hosts": {"type": "integer", "description": "current problems that "
                                                                "are hosts' own: hosts not up"}},
                "required": ["stale", "hosts"]}]},
        },
        "required": ["alerts", "total", "summary"],
    },
    "HostAlerts": {
        "type": "object",
        "properties": {
            "host": {"type": "string"},
            "alerts": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
        },
        "required": ["host", "alerts"],
    },
    "HostThresholds": {
        "type": "object",
        "properties": {
            "host": {"type": "string"},
            "profiles": {"type": "array", "items": {"type": "string"}},
            "renotify_interval": {"type": "number"},
            "thresholds": {"type": "object"},
        },
        "required": ["host", "profiles", "renotify_interval", "thresholds"],
    },
    "ThresholdConfig": {
        "type": "object",
        "properties": {
            "thresholds": {"type": "object"},
            "profiles": {"type": "object", "additionalProperties": {"type": "object"}},
            "hosts": {"type": "object", "additionalProperties": {
                "type": "array", "items": {"type": "string"}}},
            "renotify_interval": {"type": "number"},
        },
        "required": ["thresholds", "profiles", "hosts", "renotify_interval"],
    },
    "Ack": {
        "type": "object",
        "properties": {"by": _STRING_OR_NULL, "at": {"type": "number"},
                       "comment": {"type": "string"},
                       "level": {"type": "string", "description": "the level acknowledged: "
                                 "a change of level ends the acknowledgement"}},
        "required": ["by", "at", "comment", "level"],
    },
    "AckResult": {
        "allOf": [{"$ref": "#/components/schemas/Ack"}, {
            "type": "object",
            "properties": {"host": {"type": "string"},
                           "target": {"type": ["string", "null"],
                                      "description": "the metric path; null: the host's DOWN"},
                           "removed": {"type": "boolean"}},
            "required": ["host", "target"]}],
    },
    "MaintenanceWindow": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "hosts": {"type": "array", "items": {"type": "string"}},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"type": "string", "enum": ["once", "recurring"]},
            "start": _NUMBER_OR_NULL, "end": _NUMBER_OR_NULL,
            "cron": _STRING_OR_NULL, "duration": {"type": "number"},
            "timezone": {"type": "string"}, "comment": {"type": "string"},
            "author": _STRING_OR_NULL, "created": {"type": "number"},
            "source": {"type": "string", "enum": ["config", "api"]},
            "active": {"type": "boolean"},
            "current": {"oneOf": [{"type": "null"}, {
                "type": "object", "properties": {"start": {"type": "number"},
                                                 "end": {"type": "number"}},
                "required": ["start", "end"]}]},
            "next_start": _NUMBER_OR_NULL, "next_change": _NUMBER_OR_NULL,
        },
        "required": ["id", "hosts", "tags", "kind", "duration", "timezone", "comment",
                     "author", "source", "active", "current", "next_start"],
    },
    "MaintenanceList": {
        "type": "object",
        "properties": {"windows": {"type": "array", "items": {
            "$ref": "#/components/schemas/MaintenanceWindow"}}},
        "required": ["windows"],
    },
    "Silence": {
        "type": "object",
        "properties": {
            "id": {"type": "string"}, "host": {"type": "string"},
            "metric": {"type": "string"}, "start": {"type": "number"},
            "end": {"type": "number"}, "author": _STRING_OR_NULL,
            "comment": {"type": "string"}, "created": {"type": "number"},
            "ended_by": _STRING_OR_NULL,
            "state": {"type": "string", "enum": ["pending", "active", "expired"]},
        },
        "required": ["id", "host", "metric", "start", "end", "author", "comment", "state"],
    },
    "SilenceList": {
        "type": "object",
        "properties": {"silences": {"type": "array", "items": {
            "$ref": "#/components/schemas/Silence"}}},
        "required": ["silences"],
    },
    "Queued": {
        "type": "object",
        "properties": {"host": {"type": "string"},
                       "command": {"$ref": "#/components/schemas/Command"}},
        "required": ["host", "command"],
    },
}

_REASONS: Final = {
    400: "Bad request: a malformed query argument or body (`bad_request`, `bad_json`, "
         "`bad_text`, `invalid_body`, `unknown_user`)",
    401: "Not logged in, or the token or session has ended (`unauthenticated`), "
         "or a failed login (`invalid_credentials`, `totp_required`, `invalid_totp`)",
    403: "Logged in but the role is not enough (`forbidden`), a change sent by a browser "
         "from another site or a cookie-authenticated change without CSRF proof (`csrf`), a "
         "change with a read-only API key (`read_only_key`), an API key where a login is "
         "needed (`key_not_allowed`), a session that must enrol a second factor first "
         "(`totp_enrolment_required`), or a first user created from elsewhere than the "
         "server itself (`first_user_not_local`)",
    404: "No such host, or a host the caller holds no role on; no such user or plugin "
         "(`not_found`)",
    409: "The request conflicts with the current state (`not_leader`: a change this "
         "server does not take while another server sharing its store leads)",
    413: "The body is larger than http_max_body (`body_too_large`)",
    415: "The body is not sent as application/json (`unsupported_media_type`)",
    421: "The Host header names a name not in http_hosts (`unknown_host`): DNS rebinding guard",
    429: "Too many failed logins for this user name or address (`too_many_attempts`), or "
         "too many passwords being hashed for changes (`hashing_busy`); see Retry-After",
    503: "The feature is switched off in the configuration; for a change, the store cannot "
         "write it just now (`store_unavailable`: nothing changed; see Retry-After)",
}


def _json(schema: str | dict[str, Any], description: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _op(
    summary: str,
    ok: tuple[int, str | dict[str, Any]],
    errors: tuple[int, ...] = (),
    *,
    role: str | None = "any logged-in user",
    body: dict[str, Any] | None = None,
    example: dict[str, Any] | None = None,
    body_required: bool = True,
    params: list[dict[str, Any]] | None = None,
    tag: str,
) -> dict[str, Any]:
    status, schema = ok
    statuses = set(errors)
    if role is not None:
        statuses.add(401)
    if body is not None:
        statuses |= {400, 413, 415}
    responses = {str(status): _json(schema, "Success")}
    for code in sorted(statuses):
        responses[str(code)] = _json("Error", _REASONS[code])
    if 429 in statuses:
        responses["429"]["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "description": f"Role needed: {role}." if role else "Public: no login needed.",
        "responses": responses,
    }
    if role is None:
        operation["security"] = []
    if body is not None:
        media: dict[str, Any] = {"schema": body}
        if example is not None:
            media["examples"] = {"example": {"value": example}}
        operation["requestBody"] = {"required": body_required,
                                    "content": {"application/json": media}}
    if params:
        operation["parameters"] = params
    return operation


def _path(name: str, description: str, example: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1}, "example": example}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


HOST = _path("name", "the host's name", "web1")
USER = _path("user", "the user's name", "bob")
KEY = _path("key_id", "the API key's id", "3f9a1c2b")
WINDOW = _path("window_id", "the window's id: a number, or its name in the config", "1")
MONITOR = "monitor on the host (manager, owner and admin include it)"
MANAGER = "manager on the host (owner and admin include it)"
OWNER = "owner of the host, or admin"
ADMIN = "admin"


def _paths() -> dict[str, dict[str, Any]]:
    return {
        "/api/0": {"get": _op("Index: version and endpoints", (200, "Index"), role=None,
                              tag="meta")},
        "/api/0/openapi.json": {"get": _op("This document", (200, {"type": "object"}),
                                           role=None, tag="meta")},
        "/api/0/auth/login": {"post": _op(
            "Log in: a bearer token and the session cookie", (200, "Login"), (401, 409, 429),
            role=None, body=LOGIN_BODY, tag="auth",
            example={"username": "alice", "password": "secret"})},
        "/api/0/auth/logout": {"post": _op(
            "End the session of this token or cookie", (200, {
                "type": "object", "properties": {"logged_out": {"type": "boolean"}},
                "required": ["logged_out"]}), (403,), tag="auth")},
        "/api/0/me": {"get": _op("Who am I: user, session, CSRF token, roles", (200, "Me"),
                                 tag="auth")},
        "/api/0/status": {"get": _op("Server status and counters", (200, "Status"),
                                     tag="meta")},
        "/api/0/config": {"get": _op(
            "The server's configuration, every key with its default; secrets masked",
            (200, "Settings"), (403, 503), role=ADMIN, tag="meta")},
        "/api/0/hosts": {"get": _op(
            "Hosts the caller holds a role on, by name; a page of them with limit",
            (200, "HostList"), (400,), tag="hosts", params=[
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 5000},
                       "hosts in one page; the answer adds next and total (without it: "
                       "every host)"),
                _query("after", {"type": "string"},
                       "start after this name: the next of the previous page"),
                _query("state", {"type": "string"},
                       "only hosts in these states: UP, DOWN, UNREACHABLE, UNKNOWN "
                       "(comma-separated)"),
                _query("alerting", {"type": "string"},
                       "only hosts whose worst active alert is at one of these levels: "
                       "CRITICAL, WARNING, UNKNOWN (comma-separated)"),
                _query("q", {"type": "string"},
                       "only hosts with this text in their name, address or description "
                       "(any case)")])},
        "/api/0/hosts/{name}": {
            "parameters": [HOST],
            "get": _op("One host, its queued commands and recent results",
                       (200, "HostDetail"), (404,), role=MONITOR, tag="hosts"),
            "delete": _op("Drop the host (it comes back as new if it reports again)",
                          (200, {"type": "object", "properties": {"removed": {"type": "string"}},
                                 "required": ["removed"]}), (403, 404), role=OWNER,
                          tag="hosts"),
        },
        "/api/0/hosts/{name}/plugins": {
            "parameters": [HOST],
            "get": _op("Latest data of every plugin", (200, "Plugins"), (404,), role=MONITOR,
                       tag="hosts")},
        "/api/0/hosts/{name}/plugins/{plugin}": {
            "parameters": [HOST, _path("plugin", "the plugin's name", "cpu_monitor")],
            "get": _op("History of one plugin, newest first", (200, "History"), (400, 404),
                       role=MONITOR, tag="hosts", params=[_query(
                           "limit", {"type": "integer", "minimum": 1, "maximum": 10000,
                                     "default": 50}, "samples to return"),
                           _query("since", {"type": "number"},
                                  "only samples received at or after this Unix time")])},
        "/api/0/messages": {"get": _op(
            "Recent journaled messages, newest first, of visible hosts", (200, "Messages"),
            (400, 404, 503), tag="hosts", params=[
                _query("host", {"type": "string"}, "only this host's messages"),
                _query("types", {"type": "string"},
                       "only these message types: HTB, BOOT, SHUT, MSG, PLG, RES "
                       "(comma-separated)"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 5000,
                                 "default": 100}, "messages to return")])},
        "/api/0/alerts": {"get": _op(
            "Problems of visible hosts (DOWN hosts and threshold alerts), worst first, and "
            "a summary", (200, "AlertList"), (400, 503), tag="alerts", params=[
                _query("level", {"type": "string"},
                       "only these levels: CRITICAL, WARNING, UNKNOWN (comma-separated)"),
                _query("kind", {"type": "string"},
                       "only these kinds: host, metric (comma-separated)"),
                _query("limit", {"type": "integer", "minimum": 0, "maximum": 5000},
                       "only the first N problems (0: the counts alone); without it, all")])},
        "/api/0/hosts/{name}/alerts": {
            "parameters": [HOST],
            "get": _op("The host's problems: itself if DOWN, and its threshold alerts",
                       (200, "HostAlerts"), (404, 503),
                       role=MONITOR, tag="alerts")},
        "/api/0/hosts/{name}/thresholds": {
            "parameters": [HOST],
            "get": _op("The threshold rules in effect for the host after its profiles",
                       (200, "HostThresholds"), (404, 503), role=MONITOR, tag="alerts")},
        "/api/0/thresholds": {"get": _op(
            "The threshold configuration: base rules, profiles, which hosts use which",
            (200, "ThresholdConfig"), (503,), tag="alerts")},
        "/api/0/hosts/{name}/commands": {
            "parameters": [HOST],
            "post": _op("Queue a named command (CMD) for the host's next heartbeat",
                        (202, "Queued"), (403, 404, 409), role=MANAGER, body=COMMAND_BODY,
                        example={"cmd": "uptime", "args": []}, tag="actions")},
        "/api/0/hosts/{name}/upgrade": {
            "parameters": [HOST],
            "post": _op("Queue a self-update (UPD) for the host's next heartbeat",
                        (202, "Queued"), (403, 404, 409), role=MANAGER, body=UPGRADE_BODY,
                        example={"version": "1.4.0"}, body_required=False, tag="actions")},
        "/api/0/hosts/{name}/dns": {
            "parameters": [HOST],
            "post": _op("Update the host's DNS records now", (202, {
                "type": "object", "properties": {"host": {"type": "string"},
                                                 "dns": {"type": "string"}},
                "required": ["host", "dns"]}), (403, 404, 409, 503), role=MANAGER,
                tag="actions")},
        "/api/0/hosts/{name}/access": {
            "parameters": [HOST],
            "get": _op("Who holds which role on the host", (200, "Access"), (403, 404),
                       role=OWNER, tag="access"),
            "put": _op("Replace the host's access list (wins over the config until reset)",
                       (200, "Access"), (403, 404), role=OWNER, body=ACCESS_BODY,
                       example={"owner": "alice", "managers": ["bob"], "monitors": []},
                       tag="access"),
            "delete": _op("Reset the host's access list to the config's", (200, "Access"),
                          (403, 404), role=OWNER, tag="access"),
        },
        "/api/0/hosts/{name}/owner": {
            "parameters": [HOST],
            "post": _op("Transfer ownership of the host", (200, "Access"), (403, 404),
                        role=OWNER, body=OWNER_BODY, example={"owner": "bob"},
                        tag="access")},
        "/api/0/users": {
            "get": _op("Every user", (200, "UserList"), (403,), role=ADMIN, tag="users"),
            "post": _op("Create a user (kept in the store)", (201, "User"), (403, 409, 429),
                        role=ADMIN, body=USER_CREATE_BODY, tag="users", example={
                            "name": "carol", "full_name": "Carol Example",
                            "password": "a long passphrase", "email": "carol@example.com",
                            "notification_channels": ["email"]}),
        },
        "/api/0/users/{user}": {
            "parameters": [USER],
            "get": _op("One user", (200, "User"), (403, 404), role=ADMIN, tag="users"),
            "put": _op("Change a user's fields (a user may change their own, but not "
                       "the admin flag; their own password with current_password, and "
                       "the session is replaced)", (200, "User"), (403, 404, 409, 429),
                       role="admin, or the user themself", body=USER_UPDATE_BODY,
                       example={"full_name": "Bob Example"}, tag="users"),
            "delete": _op("Delete a user and end their sessions",
                          (200, {"type": "object", "properties": {"deleted": {"type": "string"}},
                                 "required": ["deleted"]}), (403, 404, 409), role=ADMIN,
                          tag="users"),
        },
        "/api/0/users/{user}/keys": {
            "parameters": [USER],
            "get": _op("The user's API keys (never their tokens)", (200, "ApiKeyList"),
                       (403, 404, 409), role="the user themself, or admin (not with a key)",
                       tag="keys"),
            "post": _op("Make an API key: its token is in this answer only", (201, "NewApiKey"),
                        (403, 404, 409), role="the user themself (not with a key)",
                        body=KEY_CREATE_BODY, tag="keys",
                        example={"name": "prometheus", "scope": "ro", "expires": None}),
        },
        "/api/0/jobs": {
            "get": _op("The cron jobs the caller may see: level, next expected time, last run",
                       (200, "JobList"), (503,), tag="jobs")},
        "/api/0/jobs/{name}": {
            "parameters": [_path("name", "the job's name", "backup")],
            "get": _op("One cron job with its runs (durations, exit codes, logs), newest first",
                       (200, "Job"), (400, 404, 503),
                       role="monitor on the job's host (a job without one: its default owner)",
                       params=[_query("limit", {"type": "integer", "minimum": 1,
                                                "maximum": 200}, "runs at most (default 50)")],
                       tag="jobs")},
        "/api/0/status-pages": {
            "get": _op("The public status pages: their URLs, badges and how they stand",
                       (200, "StatusPages"), (503,), tag="status pages")},
        "/api/0/status-pages/{slug}/badge": {
            "parameters": [_path("slug", "the page's slug", "public")],
            "post": _op("A new badge token for the page (the old one stops working)",
                        (201, "Badge"), (403, 404, 503), role=ADMIN, tag="status pages")},
        "/api/0/hosts/{name}/badge": {
            "parameters": [HOST],
            "get": _op("The host's badge", (200, "Badge"), (403, 404, 503), role=OWNER,
                       tag="status pages"),
            "post": _op("Make the host's badge (a new token, replacing any)", (201, "Badge"),
                        (403, 404, 503), role=OWNER, tag="status pages"),
            "delete": _op("Revoke the host's badge",
                          (200, {"type": "object", "properties": {"revoked": {"type": "string"}},
                                 "required": ["revoked"]}), (403, 404, 503), role=OWNER,
                          tag="status pages"),
        },
        "/api/0/users/{user}/totp": {
            "parameters": [USER],
            "get": _op("Whether the user has a second factor (TOTP) and must",
                       (200, "Totp"), (403, 404, 409),
                       role="the user themself, or admin (not with a key)", tag="totp"),
            "post": _op("Start enrolling a second factor: a secret and its QR code",
                        (201, "TotpStart"), (403, 404, 409),
                        role="the user themself (not with a key)", tag="totp"),
            "delete": _op("Remove the second factor (the user sends a current or recovery "
                          "code as code; an admin needs none)", (200, "Totp"),
                          (403, 404, 409), role="the user themself, or admin (not with a key)",
                          body=TOTP_CODE_BODY, body_required=False, tag="totp",
                          example={"code": "123456"}),
        },
        "/api/0/users/{user}/totp/confirm": {
            "parameters": [USER],
            "post": _op("Confirm the enrolment with a code from the app: ten recovery codes, "
                        "shown once", (200, "Totp"), (403, 404, 409),
                        role="the user themself (not with a key)", body=TOTP_CODE_BODY,
                        tag="totp", example={"code": "123456"}),
        },
        "/api/0/users/{user}/totp/recovery": {
            "parameters": [USER],
            "post": _op("Ten new recovery codes (the old ones stop working), for a current "
                        "code", (200, "RecoveryCodes"), (403, 404, 409),
                        role="the user themself (not with a key)", body=TOTP_CODE_BODY,
                        tag="totp", example={"code": "123456"}),
        },
        "/api/0/auth/policy": {
            "get": _op("Who must use a second factor", (200, "AuthPolicy"), tag="auth"),
            "put": _op("Set who must use a second factor (wins over totp_required in the "
                       "config until reset)", (200, "AuthPolicy"), (403,),
                       role="admin (not with a key)", body=POLICY_BODY, tag="auth",
                       example={"totp_required": "privileged"}),
            "delete": _op("Reset to the config's totp_required", (200, "AuthPolicy"), (403,),
                          role="admin (not with a key)", tag="auth"),
        },
        "/api/0/maintenance": {
            "get": _op("Maintenance windows covering hosts the caller sees (all for admins)",
                       (200, "MaintenanceList"), (503,), tag="operations"),
            "post": _op("Make a maintenance window: no notices for its hosts while it is open",
                        (201, "MaintenanceWindow"), (403, 409, 503),
                        role="manager of every host it names (by name), or admin (any "
                             "names, globs, tags)", body=WINDOW_BODY, tag="operations",
                        example={"hosts": ["web1"], "start": "2026-12-24T18:00",
                                 "duration": "2h", "timezone": "Europe/Berlin",
                                 "comment": "kernel update"}),
        },
        "/api/0/maintenance/{window_id}": {
            "parameters": [WINDOW],
            "get": _op("One maintenance window", (200, "MaintenanceWindow"), (404, 503),
                       tag="operations"),
            "put": _op("Replace a window made through the API (same id)",
                       (200, "MaintenanceWindow"), (403, 404, 409, 503),
                       role="manager of every host it names, or admin", body=WINDOW_BODY,
                       tag="operations", example={"hosts": ["web1"], "cron": "0 3 * * sun",
                                                  "duration": "1h", "comment": "patching"}),
            "delete": _op("Delete a window made through the API (an open one ends now)",
                          (200, {"type": "object", "properties": {"deleted": {"type": "string"}},
                                 "required": ["deleted"]}), (403, 404, 409, 503),
                          role="manager of every host it names, or admin", tag="operations"),
        },
        "/api/0/silences": {
            "get": _op("Silences (pending, active, recently expired) of hosts the caller sees",
                       (200, "SilenceList"), (503,), tag="operations"),
            "post": _op("Silence the notices of a host (glob) and metric (glob) for a while",
                        (201, "Silence"), (403, 409, 503),
                        role="manager of the host (by name), or admin (any glob)",
                        body=SILENCE_BODY, tag="operations",
                        example={"host": "db1", "metric": "disk_monitor.*", "duration": "2h",
                                 "comment": "disk swap"}),
        },
        "/api/0/silences/{silence_id}": {
            "parameters": [_path("silence_id", "the silence's id", "1")],
            "delete": _op("End a silence now (it stays listed, expired, with who ended it)",
                          (200, "Silence"), (403, 404, 409, 503),
                          role="manager of the host, or admin", tag="operations"),
        },
        "/api/0/hosts/{name}/alerts/{metric}/ack": {
            "parameters": [HOST, _path("metric", "the alert's metric path",
                                       "cpu_monitor.cpu_percent")],
            "post": _op("Acknowledge an active alert: its reminders stop until its level "
                        "changes", (201, "AckResult"), (403, 404, 409, 503), role=MANAGER,
                        body=ACK_BODY, tag="operations", example={"comment": "on it"}),
            "delete": _op("Take the acknowledgement back", (200, "AckResult"),
                          (403, 404, 409, 503), role=MANAGER, tag="operations"),
        },
        "/api/0/hosts/{name}/ack": {
            "parameters": [HOST],
            "post": _op("Acknowledge a DOWN (or UNREACHABLE) host until its state changes",
                        (201, "AckResult"), (403, 404, 409, 503), role=MANAGER, body=ACK_BODY,
                        tag="operations", example={"comment": "rebooting it"}),
            "delete": _op("Take the acknowledgement back", (200, "AckResult"),
                          (403, 404, 409, 503), role=MANAGER, tag="operations"),
        },
        "/api/0/users/{user}/keys/{key_id}": {
            "parameters": [USER, KEY],
            "delete": _op("Revoke an API key at once",
                          (200, {"type": "object", "properties": {"revoked": {"type": "string"}},
                                 "required": ["revoked"]}), (403, 404, 409),
                          role="the user themself, or admin (not with a key)", tag="keys"),
        },
    }


def _with_csrf(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every change may be refused as another site's (403) or when the store cannot write
    it (503), every request when its Host is not an allowed name (421)."""
    for item in paths.values():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "delete"):
                continue
            responses = operation["responses"]
            if method != "get" and "403" not in responses:
                responses["403"] = _json("Error", _REASONS[403])
            if method != "get" and "503" not in responses:
                responses["503"] = _json("Error", _REASONS[503])
            responses["421"] = _json("Error", _REASONS[421])
            operation["responses"] = dict(sorted(responses.items()))
    return paths


@cache
def _document(version: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "heartbeat API",
            "version": version,
            "description": "Hosts, plugin data, messages, actions and users of a heartbeat "
                           "server. With users configured, log in with POST "
                           "/api/0/auth/login and send `Authorization: Bearer <token>` (or the "
                           "session cookie plus `X-CSRF-Token` on changes). Errors are "
                           '`{"error": "<code>", "detail": "..."}`.',
        },
        "servers": [{"url": "/"}],
        "paths": _with_csrf(_paths()),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "cookieAuth": {"type": "apiKey", "in": "cookie", "name": "hb_session"},
            },
        },
        "security": [{"bearerAuth": []}, {"cookieAuth": []}],
    }


def document(version: str) -> dict[str, Any]:
    return copy.deepcopy(_document(version))


def endpoints() -> list[str]:
    """``METHOD /path`` of every operation, for the API index."""
    return [f"{method.upper()} {path}" for path, item in _paths().items()
            for method in item if method != "parameters"]
