"""JSON bodies a database can store and a handler can walk: one rule set for the
webhooks (`parley.connectors.requests`) and the desk (`parley.bot.desk.errors`).

Refused, whichever field they are in: NaN/Infinity, floats that overflow,
integers beyond signed 64 bits, strings or keys with NUL or lone surrogates
(PostgreSQL stores neither, SQLite takes no lone surrogates), and nesting deeper
than `max_depth`. Each caller turns an `UnsafeJSON` into its own 4xx.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

INT64 = range(-(2**63), 2**63)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class UnsafeJSON(ValueError):
    """Valid or not, JSON we will not take; `reason` is what the sender is told."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _refuse(reason: str) -> NoReturn:
    raise UnsafeJSON(reason)


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


def loads(text: str, max_depth: int) -> Any:
    """`text` parsed; UnsafeJSON for what the rules refuse, ValueError if it is not
    JSON at all."""
    try:
        payload = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float,
                             parse_int=_int64)
    except RecursionError:
        raise UnsafeJSON(f"body nests deeper than {max_depth} levels") from None
    problem = tree_problem(payload, max_depth)
    if problem is not None:
        raise UnsafeJSON(problem)
    return payload


def tree_problem(payload: Any, max_depth: int) -> str | None:
    """What is wrong deep inside a parsed body (depth, unstorable strings), or None;
    without recursion of our own."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)) and depth > max_depth:
            return f"body nests deeper than {max_depth} levels"
        if isinstance(node, dict):
            for key, value in node.items():
                if problem := unstorable(key):
                    return f"a key in the body {problem}"
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
        elif isinstance(node, str) and (problem := unstorable(node)):
            return f"a string in the body {problem}"
    return None
