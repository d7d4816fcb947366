"""Request validation for the desk API: every bad input is a 4xx with a reason.

Whatever field it is in, a JSON body is refused whole if the database could not
store it or a handler could not walk it: bytes that are not UTF-8, NaN/Infinity,
integers beyond signed 64 bits, strings with NUL or lone surrogates (PostgreSQL
stores neither, SQLite takes no lone surrogates), nesting deeper than any desk
body needs. The rules are `parley.bot.strict_json`, the same as the webhooks'.
"""

from __future__ import annotations

import re
from typing import Any

from sanic.request import Request

from parley.bot import strict_json

MAX_DEPTH = 32  # desk bodies nest a few levels (a reply's `custom` payload); room to spare
MAX_ID = 2**31 - 1  # row ids are INTEGER columns (32-bit on PostgreSQL)
_ID_TEXT = re.compile(r"[0-9]{1,10}")


class BadRequest(Exception):
    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def body_json(request: Request) -> dict[str, Any]:
    try:
        payload = strict_json.loads((request.body or b"").decode("utf-8"), MAX_DEPTH)
    except strict_json.UnsafeJSON as exc:
        raise BadRequest(exc.reason) from None
    except ValueError:  # UnicodeDecodeError is one
        raise BadRequest("body must be JSON (UTF-8)") from None
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
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
