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

from typing import Any

from sanic import response
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import strict_json
from parley.bot.strict_json import INT64, unstorable  # noqa: F401  (shapes, tests use them)

DEFAULT_MAX_BODY = 64 * 1024
# Real payloads nest about 15 levels (a Messenger template echo); 32 leaves room.
MAX_DEPTH = 32


class RejectedRequest(Exception):
    """A request we refuse, with the status and the reason the caller sees."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def as_response(self) -> HTTPResponse:
        return response.json({"error": self.reason}, status=self.status)


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
        payload = strict_json.loads(text, max_depth)
    except strict_json.UnsafeJSON as exc:
        raise RejectedRequest(400, exc.reason) from None
    except ValueError as exc:
        raise RejectedRequest(400, f"body is not valid JSON ({exc.__class__.__name__})") \
            from None
    except Exception as exc:  # the promise: a 4xx, never a stack trace
        raise RejectedRequest(400, f"body could not be read ({exc.__class__.__name__})") \
            from None
    if not isinstance(payload, dict):
        raise RejectedRequest(400, "body must be a JSON object")
    return payload
