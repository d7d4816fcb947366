"""Reading webhook bodies safely: size limit, JSON, shape, with clear 4xx reasons.

Every connector answers bad input the same way: a JSON `{"error": reason}` with
400 (malformed) or 413 (too large), never a stack trace.
"""

from __future__ import annotations

import json
from typing import Any

from sanic import response
from sanic.request import Request
from sanic.response import HTTPResponse

DEFAULT_MAX_BODY = 64 * 1024


class RejectedRequest(Exception):
    """A request we refuse, with the status and the reason the caller sees."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def as_response(self) -> HTTPResponse:
        return response.json({"error": self.reason}, status=self.status)


def read_json_object(request: Request, max_bytes: int = DEFAULT_MAX_BODY) -> dict[str, Any]:
    """The body as a JSON object, or RejectedRequest saying what is wrong with it."""
    body = request.body or b""
    if len(body) > max_bytes:
        raise RejectedRequest(413, f"body is {len(body)} bytes; the limit is {max_bytes}")
    if not body:
        raise RejectedRequest(400, "body is empty; expected a JSON object")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RejectedRequest(400, f"body is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict):
        raise RejectedRequest(400, "body must be a JSON object")
    return payload
