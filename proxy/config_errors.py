"""Config errors as sentences that name their full path: ``keys.team-a.rpm: expected
`int` >= 1``, ``auth: 'maybe' is not one of: keys, none``.

msgspec reports a path only up to the first map (``$.keys[...].rpm``), none inside a
tagged union, and enumerations without their values; this module converts the
offending entry again on its own to find the key, and reads the allowed values from
the type itself so they never drift from it.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from typing import Any

import msgspec

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_REASONS = (
    (re.compile(r"^Object contains unknown field (`.*`)$"), r"unknown field \1"),
    (
        re.compile(r"^Object missing required field (`.*`)$"),
        r"missing required field \1",
    ),
)


def _strip(tp: Any) -> Any:
    """The type under ``Annotated`` and ``X | None``."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
    return tp


def _child(tp: Any, segment: str) -> Any:
    """The type of ``segment`` (a field name or ``[...]``) inside ``tp``; None if unknown."""
    tp = _strip(tp)
    if segment == "[...]" or segment.startswith("["):
        args = typing.get_args(tp)
        return args[-1] if args else None
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return typing.get_type_hints(tp, include_extras=True).get(segment)
    return None


def _segments(path: str) -> list[str]:
    return re.findall(r"\[[^\]]*\]|[^.\[]+", path)


def _allowed(tp: Any) -> list[str] | None:
    tp = _strip(tp)
    # The config's enumerations are all Literals.
    if typing.get_origin(tp) is typing.Literal:
        return [str(v) for v in typing.get_args(tp)]
    return None


def _reason(message: str, tp: Any) -> str:
    enum_value = re.match(r"^Invalid enum value (.*)$", message)
    allowed = _allowed(tp)
    if enum_value and allowed is not None:
        return f"{enum_value.group(1)} is not one of: {', '.join(allowed)}"
    for pattern, replacement in _REASONS:
        if pattern.match(message):
            return pattern.sub(replacement, message)
    return message[:1].lower() + message[1:]


def describe(exc: msgspec.ValidationError, raw: Any, tp: Any, prefix: str = "") -> str:
    """``path: reason`` for an error from ``msgspec.convert(raw, tp)``; ``prefix`` is
    the dotted path of ``raw`` inside the whole config."""
    text = str(exc).replace("\n", " ")
    found = _AT.search(text)
    message = text[: found.start()] if found else text
    segments = _segments(found.group("path")) if found else []
    path = [prefix] if prefix else []
    for segment in segments:
        if segment == "[...]" and isinstance(raw, Mapping):
            # msgspec hides the key: convert each entry alone to find the bad one.
            item_type = _child(tp, segment)
            for key, value in raw.items():
                try:
                    msgspec.convert(value, item_type)
                except msgspec.ValidationError as inner:
                    path.append(str(key))
                    return describe(inner, value, item_type, ".".join(path))
            break
        path.append(segment)
        tp = _child(tp, segment)
        raw = raw.get(segment) if isinstance(raw, Mapping) else None
    where = ".".join(path).replace(".[", "[")
    reason = _reason(message, tp)
    return f"{where}: {reason}" if where else reason


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
