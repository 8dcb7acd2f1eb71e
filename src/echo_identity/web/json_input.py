"""JSON request bodies that hostile bytes cannot turn into a 500.

Every JSON body Echo reads goes through :func:`parse_json`. It refuses, with a 400 and a
stable code, what ``json.loads`` would accept but a later step would choke on:

- bytes that are not UTF-8, and ``NaN``/``Infinity`` or numbers too large for a float;
- nesting deeper than ``max_depth`` (checked before parsing, so a 100k-deep body costs one
  regular-expression scan, never a ``RecursionError``);
- NUL characters and lone UTF-16 surrogates (``"\\ud800"``) in any key or string: PostgreSQL
  cannot store the first, and no encoder can write the second.

Errors (both HTTP 400)::

    InvalidJsonError      invalid_json
    └── JsonTooDeepError  json_too_deep
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from echo_identity.errors import EchoError

MAX_DEPTH = 32
# A JSON string literal (escapes included), removed before brackets are counted.
_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class InvalidJsonError(EchoError):
    code = "invalid_json"
    status = 400
    description = "The body is not valid JSON."


class JsonTooDeepError(InvalidJsonError):
    code = "json_too_deep"
    description = f"The JSON body is nested more than {MAX_DEPTH} levels deep."


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON ``text`` (strings ignored)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING_LITERAL.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_json(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of ``raw``; raises :class:`InvalidJsonError` or
    :class:`JsonTooDeepError` (see the module docstring for what is refused)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise InvalidJsonError("The body is not UTF-8.") from None
    if nesting_depth(text) > max_depth:
        raise JsonTooDeepError(f"The JSON body is nested more than {max_depth} levels deep.")
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise InvalidJsonError() from None
    if _has_unstorable_text(value):
        raise InvalidJsonError("The JSON body contains a NUL character or a lone surrogate.")
    return value


def _has_unstorable_text(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False
