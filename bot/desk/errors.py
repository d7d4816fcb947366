"""Request validation for the desk API: every bad input is a 4xx with a reason.

Whatever field it is in, a JSON body is refused whole if the database could not
store it or a handler could not walk it: bytes that are not UTF-8, NaN/Infinity,
integers beyond signed 64 bits, strings with NUL or lone surrogates (PostgreSQL
stores neither, SQLite takes no lone surrogates), nesting deeper than any desk
body needs. The same rules as the webhooks' (`parley.connectors.requests`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

from sanic.request import Request

MAX_DEPTH = 32  # desk bodies nest a few levels (a reply's `custom` payload); room to spare
INT64 = range(-(2**63), 2**63)
MAX_ID = 2**31 - 1  # row ids are INTEGER columns (32-bit on PostgreSQL)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_ID_TEXT = re.compile(r"[0-9]{1,10}")


class BadRequest(Exception):
    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def _refuse(reason: str) -> NoReturn:
    raise BadRequest(reason)


def _no_constant(name: str) -> NoReturn:
    _refuse(f"body holds {name}, which JSON does not allow")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        _refuse("body holds a number too large for a float")
    return value


def _int64(literal: str) -> int:
    # Longer than "-9223372036854775808" cannot fit: refused before int() runs into
    # Python's limit on digits.
    value = int(literal) if len(literal) <= 20 else None
    if value is None or value not in INT64:
        _refuse("body holds an integer beyond signed 64 bits")
    return value


def unstorable(text: str) -> str | None:
    """Why the database cannot store `text` (NUL, lone surrogate), or None if it can."""
    bad = _UNSTORABLE.search(text)
    if bad is None:
        return None
    return "contains a NUL character" if bad.group() == "\x00" else \
        "contains a lone surrogate (invalid Unicode)"


def _check_tree(payload: dict[str, Any]) -> None:
    """Depth and storable strings everywhere, without recursion of our own."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)) and depth > MAX_DEPTH:
            _refuse(f"body nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            for key, value in node.items():
                if problem := unstorable(key):
                    _refuse(f"a key in the body {problem}")
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
        elif isinstance(node, str) and (problem := unstorable(node)):
            _refuse(f"a string in the body {problem}")


def body_json(request: Request) -> dict[str, Any]:
    try:
        payload = json.loads((request.body or b"").decode("utf-8"),
                             parse_constant=_no_constant, parse_float=_finite_float,
                             parse_int=_int64)
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest(f"body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # UnicodeDecodeError is one
        raise BadRequest("body must be JSON (UTF-8)") from None
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    _check_tree(payload)
    return payload


def text_field(payload: dict[str, Any], key: str, max_len: int) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"'{key}' must be non-empty text")
    if len(value) > max_len:
        raise BadRequest(f"'{key}' is {len(value)} characters; the limit is {max_len}", 413)
    return value


def row_id(value: Any) -> int | None:
    """`value` if it can be the id of a row (an int, not a bool, 1 to MAX_ID), else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        return None
    return value


def row_id_text(text: str | None) -> int | None:
    """An id from a query string: ASCII digits only (str.isdigit() also takes '²')."""
    if text is None or not _ID_TEXT.fullmatch(text):
        return None
    return row_id(int(text))
