"""Request bodies: read within a size limit, parsed as JSON, checked against a schema.

The schemas here are JSON Schema (the subset :func:`problems` understands) and
are the same objects the served OpenAPI document shows, so what the document
promises is exactly what the server enforces.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from twisted.web.iweb import IRequest

from heartbeat.config.checks import USER_NAME
from heartbeat.passwords import MAX_LENGTH, MIN_LENGTH
from heartbeat.server.web.errors import ApiError
from heartbeat.text import text_problem

__all__ = [
    "ACCESS_BODY",
    "ACK_BODY",
    "COMMAND_BODY",
    "KEY_CREATE_BODY",
    "LOGIN_BODY",
    "OWNER_BODY",
    "POLICY_BODY",
    "SILENCE_BODY",
    "TOTP_CODE_BODY",
    "UPGRADE_BODY",
    "USER_CREATE_BODY",
    "USER_UPDATE_BODY",
    "WINDOW_BODY",
    "problems",
    "read_json",
]

USER_NAME_SCHEMA: Final[dict[str, Any]] = {
    "type": "string", "pattern": f"^{USER_NAME.pattern}$", "maxLength": 64}
_NAMES: Final[dict[str, Any]] = {"type": "array", "items": USER_NAME_SCHEMA, "maxItems": 1000}
_TEXT: Final[dict[str, Any]] = {"type": "string", "maxLength": 1000}
_OPTIONAL_TEXT: Final[dict[str, Any]] = {"type": ["string", "null"], "maxLength": 1000}

LOGIN_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "minLength": 1, "maxLength": 64},
        "password": {"type": "string", "minLength": 1, "maxLength": MAX_LENGTH},
        "totp": {"type": "string", "minLength": 1, "maxLength": 64},
    },
    "required": ["username", "password"],
    "additionalProperties": False,
}

ACCESS_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "owner": {"type": ["string", "null"], "pattern": f"^{USER_NAME.pattern}$",
                  "maxLength": 64},
        "managers": _NAMES,
        "monitors": _NAMES,
    },
    "required": ["owner", "managers", "monitors"],
    "additionalProperties": False,
}

OWNER_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"owner": USER_NAME_SCHEMA},
    "required": ["owner"],
    "additionalProperties": False,
}

COMMAND_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "cmd": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$", "maxLength": 64},
        "args": {"type": "array", "items": {"type": "string", "maxLength": 1024},
                 "maxItems": 32},
    },
    "required": ["cmd"],
    "additionalProperties": False,
}

UPGRADE_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"version": {"type": "string", "pattern": "^[A-Za-z0-9_.+-]{1,64}$",
                               "maxLength": 64}},
    "additionalProperties": False,
}

_CHANNELS: Final[dict[str, Any]] = {
    "type": "array", "maxItems": 4,
    "items": {"type": "string", "enum": ["email", "pushover", "mattermost", "signal"]},
}
_USER_FIELDS: Final[dict[str, Any]] = {
    "full_name": _TEXT,
    "avatar": _OPTIONAL_TEXT,
    "password": {"type": "string", "minLength": MIN_LENGTH, "maxLength": MAX_LENGTH},
    "admin": {"type": "boolean"},
    "email": _OPTIONAL_TEXT,
    "notification_channels": _CHANNELS,
    "pushover_user": _OPTIONAL_TEXT,
    "mattermost_user": _OPTIONAL_TEXT,
    "signal_number": _OPTIONAL_TEXT,
}
USER_CREATE_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"name": USER_NAME_SCHEMA, **_USER_FIELDS},
    "required": ["name"],
    "additionalProperties": False,
}
USER_UPDATE_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {**_USER_FIELDS, "current_password": {"type": "string", "minLength": 1,
                                                        "maxLength": MAX_LENGTH}},
    "additionalProperties": False,
}

KEY_CREATE_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 64},
        "scope": {"type": "string", "enum": ["ro", "rw"]},
        "expires": {"type": ["number", "null"]},
    },
    "required": ["name", "scope"],
    "additionalProperties": False,
}

def _one_text(name: str, max_length: int) -> dict[str, Any]:
    """A body of one required, non-empty text field."""
    return {"type": "object",
            "properties": {name: {"type": "string", "minLength": 1, "maxLength": max_length}},
            "required": [name], "additionalProperties": False}


TOTP_CODE_BODY: Final[dict[str, Any]] = _one_text("code", 64)

POLICY_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"totp_required": {"type": "string", "enum": ["off", "privileged", "all"]}},
    "required": ["totp_required"],
    "additionalProperties": False,
}

_INSTANT: Final[dict[str, Any]] = {
    "type": ["number", "string"], "maxLength": 64,
    "description": "Unix seconds, or ISO 8601 (without an offset: a wall time in timezone)"}
_DURATION: Final[dict[str, Any]] = {
    "type": ["number", "string"], "maxLength": 64,
    "description": "seconds, or text such as 90, 45s, 2h, 1h30m, 1d"}
_ZONE: Final[dict[str, Any]] = {
    "type": "string", "minLength": 1, "maxLength": 64,
    "description": "an IANA time zone such as Europe/Berlin (default: the server's timezone)"}

WINDOW_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "description": "One-off: start and end (or duration); recurring: cron and duration. "
                   "Non-admins name hosts they manage, by name (no globs or tags).",
    "properties": {
        "hosts": {"type": "array", "maxItems": 1000, "description": "names or globs (web*)",
                  "items": {"type": "string", "minLength": 1, "maxLength": 253}},
        "tags": {"type": "array", "maxItems": 100, "description": "hosts.<name>.tags",
                 "items": {"type": "string", "minLength": 1, "maxLength": 64}},
        "start": _INSTANT,
        "end": _INSTANT,
        "duration": _DURATION,
        "cron": {"type": "string", "minLength": 1, "maxLength": 200,
                 "description": "5 fields: minute hour day-of-month month day-of-week"},
        "timezone": _ZONE,
        "comment": {"type": "string", "maxLength": 1000},
    },
    "additionalProperties": False,
}

SILENCE_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "description": "From start (default: now) to end, or for duration. Non-admins silence "
                   "hosts they manage, by name.",
    "properties": {
        "host": {"type": "string", "minLength": 1, "maxLength": 500,
                 "description": "a host name or glob"},
        "metric": {"type": "string", "minLength": 1, "maxLength": 500,
                   "description": "a metric path glob (default *: every notice of the host, "
                                  "its DOWN included)"},
        "start": _INSTANT,
        "end": _INSTANT,
        "duration": _DURATION,
        "timezone": _ZONE,
        "comment": {"type": "string", "minLength": 1, "maxLength": 1000},
    },
    "required": ["host", "comment"],
    "additionalProperties": False,
}

ACK_BODY: Final[dict[str, Any]] = _one_text("comment", 1000)

_TYPES: Final[dict[str, Any]] = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
}


def _is(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def problems(value: Any, schema: dict[str, Any], where: str = "body") -> list[str]:
    """What is wrong with ``value`` under ``schema``, each naming its place; [] if nothing."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            return [f"{where}: must be {' or '.join(kinds)}"]
    if value is None:
        return []
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: must be one of {', '.join(map(str, schema['enum']))}"]
    found: list[str] = []
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            found.append(f"{where}: must have at least {schema['minLength']} characters")
        if len(value) > schema.get("maxLength", len(value)):
            found.append(f"{where}: must have at most {schema['maxLength']} characters")
        pattern = schema.get("pattern")
        if pattern is not None and not re.search(pattern, value):
            found.append(f"{where}: must match {pattern}")
    elif isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            found.append(f"{where}: must have at most {schema['maxItems']} items")
        items = schema.get("items")
        if items is not None:
            for i, item in enumerate(value):
                found.extend(problems(item, items, f"{where}[{i}]"))
    elif isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                found.append(f"{where}.{key}: is required")
        for key, item in value.items():
            if key in properties:
                found.extend(problems(item, properties[key], f"{where}.{key}"))
            elif schema.get("additionalProperties", True) is False:
                found.append(f"{where}.{key}: is not a known field")
    return found


def read_json(request: IRequest, schema: dict[str, Any], max_body: int,
              empty: Any = None) -> Any:
    """The request's JSON body checked against ``schema``; ``empty`` if none and allowed.

    Errors: 413 body_too_large, 415 unsupported_media_type, 400 bad_json, bad_text
    (the text policy of ``heartbeat.text``, as for datagrams) or invalid_body with
    every problem named.
    """
    raw = request.content.read(max_body + 1) if request.content is not None else b""
    if len(raw) > max_body:
        raise ApiError(413, "body_too_large", f"the body is larger than {max_body} bytes")
    if not raw.strip():
        if empty is not None:
            return empty
        raise ApiError(400, "bad_json", "a JSON body is required")
    content_type = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       "send the body as JSON with Content-Type: application/json")
    try:
        value = json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "bad_json", "the body is not UTF-8") from None
    except ValueError as e:
        raise ApiError(400, "bad_json", f"the body is not JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, "bad_json", "the body is nested too deeply") from None
    bad_text = text_problem(value)
    if bad_text is not None:
        raise ApiError(400, "bad_text", f"the body cannot be stored: {bad_text}")
    found = problems(value, schema)
    if found:
        raise ApiError(400, "invalid_body", "; ".join(found[:10]))
    return value
