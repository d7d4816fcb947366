"""Request validation for the desk API: every bad input is a 4xx with a reason."""

from __future__ import annotations

import json
from typing import Any

from sanic.request import Request


class BadRequest(Exception):
    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def body_json(request: Request) -> dict[str, Any]:
    try:
        payload = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body must be JSON") from None
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
