"""Bounds on the free-form values of a request: text and JSON, checked before anything is
written.

Every string and JSON value a client sends ends up in a database row, in events and in a
provider's request. Some values no database driver can store: NUL (PostgreSQL's text
cannot hold it), lone surrogates (not UTF-8), integers beyond signed 64 bits, non-finite
numbers, nesting deeper than an encoder goes. Refused here, each is the userError of its own
field; let through, it would fail the INSERT of every job batched with it.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from gql_media.errors import ErrorCode, UserError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# NUL, and UTF-16 surrogates: a str decoded from JSON holds one only when it was unpaired
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f\s]")


def _invalid(field: str, message: str) -> UserError:
    return UserError(ErrorCode.INVALID_ARGUMENT, message, field)


def unstorable(text: str) -> str | None:
    """What in ``text`` no database can store, or None."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    return "a NUL character" if found.group() == "\x00" else "an unpaired UTF-16 surrogate"


def text_problem(field: str, value: str | None, max_chars: int | None = None) -> UserError | None:
    """The problem of a free-form string input, or None (also for a missing one)."""
    if value is None:
        return None
    if max_chars is not None and len(value) > max_chars:
        return _invalid(field, f"{field} is longer than {max_chars} characters")
    what = unstorable(value)
    if what is not None:
        return _invalid(field, f"{field} contains {what}")
    return None


def name_problem(field: str, value: str | None, max_chars: int) -> UserError | None:
    """The problem of a name-like input (a key, a group): text of 1 to ``max_chars``
    characters, or None when it is fine or missing."""
    problem = text_problem(field, value, max_chars)
    if problem is None and value is not None and not value:
        problem = _invalid(field, f"{field} must be 1 to {max_chars} characters")
    return problem


def url_problem(field: str, value: str | None, max_chars: int) -> UserError | None:
    """The problem of a URL input: bounded text without spaces or control characters."""
    problem = text_problem(field, value, max_chars)
    if problem is None and value is not None and _CONTROL_OR_SPACE.search(value):
        problem = _invalid(field, f"{field} contains a space or a control character")
    return problem


def json_problem(field: str, value: Any, *, max_bytes: int, max_depth: int) -> UserError | None:
    """The first problem of a JSON input, with the path of the value at fault (``extra.a.0``):
    nested deeper than ``max_depth`` containers, longer than ``max_bytes`` bytes encoded, a
    string (or key) that cannot be stored, an integer outside signed 64 bits or a number
    that is not finite. Walks without recursion, and stops early once over the size."""
    stack: list[tuple[str, Any, int]] = [(field, value, 0)]
    size = 0  # a lower bound of the encoded size, to stop a huge value early
    while stack and size <= max_bytes:  # (checked once more below, exactly)
        path, item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= max_depth:
                return _invalid(path, f"{field} is nested deeper than {max_depth} levels")
            size += len(item) + 1  # brackets and commas; then each key, quoted, and a colon
            if isinstance(item, dict):
                size += sum(len(key) + 3 for key in item if isinstance(key, str))
            if size > max_bytes:
                break
            problem = _children(path, item, depth + 1, stack)
        else:
            problem = _scalar_problem(path, item)
            size += len(item) + 2 if isinstance(item, str) else 1
        if problem is not None:
            return problem
    if size > max_bytes or len(orjson.dumps(value)) > max_bytes:
        return _invalid(field, f"{field} is larger than {max_bytes} bytes as JSON")
    return None


def _children(
    path: str, item: dict[Any, Any] | list[Any], depth: int, stack: list[tuple[str, Any, int]]
) -> UserError | None:
    """Put the children of a container on ``stack``; the problem of a key, if any."""
    if isinstance(item, list):
        stack.extend((f"{path}.{i}", child, depth) for i, child in enumerate(item))
        return None
    for key, child in item.items():
        if not isinstance(key, str):
            return _invalid(path, f"{path} has a key that is not a string")
        what = unstorable(key)
        if what is not None:
            return _invalid(path, f"a key in {path} contains {what}")
        stack.append((f"{path}.{key}", child, depth))
    return None


def _scalar_problem(path: str, item: Any) -> UserError | None:
    if isinstance(item, str):
        what = unstorable(item)
        return None if what is None else _invalid(path, f"{path} contains {what}")
    if isinstance(item, bool) or item is None:
        return None
    if isinstance(item, int):
        if INT64_MIN <= item <= INT64_MAX:
            return None
        return _invalid(path, f"{path} is an integer outside signed 64 bits")
    if isinstance(item, float):
        return None if math.isfinite(item) else _invalid(path, f"{path} is not a finite number")
    return _invalid(path, f"{path} is not a JSON value")
