"""The generic typed loader: YAML text in, a frozen dataclass or one :class:`ConfigError` out.

A schema is a frozen dataclass whose fields are declared with :func:`option`:
a field's type annotation and its ``check`` are the only definition of what a
key accepts, so the defaults, the validation and the documentation cannot drift
apart. After each key is checked, the loader runs the dataclass's own
``check(source)`` if it has one (rules that span several keys). Every problem is
one line naming the file and the key. Pure code; the schemas are server.py and
agent.py beside this module.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import field
from pathlib import Path
from typing import Any, Final, TypeVar, Union

import yaml

from heartbeat.garbage import collector_paused

__all__ = [
    "Check",
    "ConfigError",
    "default_config_path",
    "load_config",
    "option",
    "parse_config",
    "parse_section",
]

T = TypeVar("T")
Check = Callable[[Any], "str | None"]
"""A key's extra check: the converted value in, what is wrong with it (or None) out."""


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



def option(default: Any = None, check: Check | None = None, doc: str = "", *,
           secret: bool = False) -> Any:
    """A field with a default, an optional extra check and a one-line description.

    ``secret`` marks a value that is never shown back (the settings page, the API).
    """
    meta = {"check": check, "doc": doc, "secret": secret}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


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
        raise ConfigError(source, key, f"expected {_describe(tp)}, got {_shown(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(source, key, f"expected a finite number, got {_shown(value)}")
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
    raise ConfigError(source, key, f"expected {_describe(tp)}, got {_shown(value)}")


@functools.cache
def _schema(cls: type[Any]) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """The annotations and fields of a schema class, worked out once per class: a
    ``hosts:`` section of 10,000 hosts otherwise asked ``typing`` for them 10,000
    times (a sixth of the load)."""
    return (typing.get_type_hints(cls),
            {f.name: f for f in dataclasses.fields(typing.cast(Any, cls))})


def _build(cls: type[T], data: Mapping[str, Any], prefix: str, source: str) -> T:
    hints, fields = _schema(typing.cast(Any, cls))
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


def _duplicate_key(node: yaml.Node, path: str = "") -> tuple[str, int, int] | None:
    """The first key given twice in one mapping of ``node``: (dotted key, line, first line).

    YAML itself keeps the last of two equal keys without a word, so a second
    ``users:`` or ``require_signed:`` lower in a file would silently replace the
    first. Keys are compared as the text they are written as (``1`` and ``"1"``
    are one key once loaded); ``<<`` merges are YAML's own overriding and pass.
    """
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            line = key.start_mark.line + 1
            dotted = f"{path}.{key.value}" if path else str(key.value)
            if key.value in seen:
                return dotted, line, seen[key.value]
            seen[key.value] = line
            found = _duplicate_key(value, dotted)
            if found is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for n, item in enumerate(node.value):
            found = _duplicate_key(item, f"{path}[{n}]")
            if found is not None:
                return found
    return None


_STR_TAG: Final = "tag:yaml.org,2002:str"


class _SafeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's safe loader where PyYAML was built with it (its wheels are): the same
    documents and nodes, read some ten times as fast, which a ``hosts:`` section of a
    fleet's inventory needs (10,000 hosts took 5 s to read in Python). A string is
    its node's value, as PyYAML's constructor makes it, without the constructor's
    bookkeeping: most of a config's nodes are strings."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node.tag == _STR_TAG and type(node) is yaml.ScalarNode:
            return node.value
        return super().construct_object(node, deep)


def _load_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` that refuses a key given twice in one mapping (ConfigError)."""
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicate = _duplicate_key(node)
        if duplicate is not None:
            key, line, first = duplicate
            raise ConfigError(source, key, f"given twice (lines {first} and {line}); "
                              "keep one")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _shown(value: Any) -> str:
    """``value`` for an error message: its repr cut at 60 characters; an integer too long
    for Python to print (over 4,300 digits) by its size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 14000:
        return f"an integer of {value.bit_length()} bits"
    return f"{value!r:.60}"


def parse_config(cls: type[T], text: str, source: str) -> T:
    """Parse YAML ``text`` into ``cls``; ``source`` names the file in errors.

    A key given twice in one mapping is an error naming it (YAML would keep the last).
    """
    try:
        with collector_paused():  # what reading makes is all kept
            data = _load_yaml(text, source)
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
    except ConfigError:
        raise
    except ValueError as e:  # PyYAML reading an integer of more digits than Python allows
        problem = ("an integer of more digits than Python reads (4,300)"
                   if "integer string conversion" in str(e)
                   else f"a value that cannot be read: {e}")
        raise ConfigError(source, "", problem[:120]) from None


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

