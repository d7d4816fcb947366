"""Reading webhook bodies safely: size limit, JSON, shape, with clear 4xx reasons.

Every connector answers bad input the same way: a JSON `{"error": reason}` with
400 (malformed) or 413 (too large), never a stack trace.

What no platform sends and nothing downstream can hold is refused here for the
whole body, whichever field it is in: bytes that are not UTF-8, NaN/Infinity,
integers beyond signed 64 bits, strings with NUL or lone surrogates (PostgreSQL
stores neither, in text or JSON columns), and nesting deep enough to exhaust the
recursion of whatever walks the payload later. Field types are `shapes`' job.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

from sanic import response
from sanic.request import Request
from sanic.response import HTTPResponse

DEFAULT_MAX_BODY = 64 * 1024
# Real payloads nest about 15 levels (a Messenger template echo); 32 leaves room.
MAX_DEPTH = 32
INT64 = range(-(2**63), 2**63)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class RejectedRequest(Exception):
    """A request we refuse, with the status and the reason the caller sees."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def as_response(self) -> HTTPResponse:
        return response.json({"error": self.reason}, status=self.status)


def unstorable(text: str) -> str | None:
    """Why a database cannot store `text` (NUL, lone surrogate), or None if it can.

    A decoded str holds surrogate code points only unpaired: JSON's escaped
    pairs become one character."""
    bad = _UNSTORABLE.search(text)
    if bad is None:
        return None
    if bad.group() == "\x00":
        return "contains a NUL character"
    return "contains a lone surrogate (invalid Unicode)"


def read_json_object(request: Request, max_bytes: int = DEFAULT_MAX_BODY,
                     max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The body as a JSON object, or RejectedRequest saying what is wrong with it.
    Raises nothing else, whatever the body."""
    body = request.body or b""
    if len(body) > max_bytes:
        raise RejectedRequest(413, f"body is {len(body)} bytes; the limit is {max_bytes}")
    if not body:
        raise RejectedRequest(400, "body is empty; expected a JSON object")
    try:
        # Strict UTF-8: json.loads(bytes) would also take UTF-16/32 and, through
        # "surrogatepass", encoded surrogates.
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RejectedRequest(400, "body is not valid UTF-8") from None
    try:
        payload = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float,
                             parse_int=_int64)
    except RejectedRequest:
        raise
    except RecursionError:
        raise RejectedRequest(400, f"body nests deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise RejectedRequest(400, f"body is not valid JSON ({exc.__class__.__name__})") \
            from None
    except Exception as exc:  # the promise: a 4xx, never a stack trace
        raise RejectedRequest(400, f"body could not be read ({exc.__class__.__name__})") \
            from None
    if not isinstance(payload, dict):
        raise RejectedRequest(400, "body must be a JSON object")
    _check_tree(payload, max_depth)
    return payload


def _refuse(reason: str) -> NoReturn:
    raise RejectedRequest(400, reason)


def _no_constant(name: str) -> NoReturn:
    _refuse(f"body holds {name}, which JSON does not allow")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        _refuse(f"body holds a number too large for a float ({literal[:24]})")
    return value


def _int64(literal: str) -> int:
    # Longer than "-9223372036854775808" cannot fit: refused before int() runs
    # into Python's 4300-digit limit.
    value = int(literal) if len(literal) <= 20 else None
    if value is None or value not in INT64:
        _refuse("body holds an integer beyond signed 64 bits")
    return value


def _check_tree(payload: dict[str, Any], max_depth: int) -> None:
    """Depth and storable strings everywhere, without recursion of our own."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)) and depth > max_depth:
            _refuse(f"body nests deeper than {max_depth} levels")
        if isinstance(node, dict):
            for key, value in node.items():
                if problem := unstorable(key):
                    _refuse(f"a key in the body {problem}")
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
        elif isinstance(node, str) and (problem := unstorable(node)):
            _refuse(f"a string in the body {problem}")
