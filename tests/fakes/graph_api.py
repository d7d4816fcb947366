"""A fake Meta Graph API on loopback: the Send API for Messenger/Instagram
(`POST /{version}/{page}/messages`) and WhatsApp Cloud API
(`POST /{version}/{phone_number_id}/messages`), answering with Meta's JSON,
checking the bearer token, recording calls, and failing on request
(429 with Retry-After, 5xx, or a permanent Graph error)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from tests.fakes.http import json_server


@dataclass
class GraphCall:
    path: str
    body: dict[str, Any]
    at: float


@dataclass
class FakeGraph:
    token: str = "EAAB-test-token"
    calls: list[GraphCall] = field(default_factory=list)
    failures: list[tuple[int, int, str]] = field(default_factory=list)  # status, code, msg
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def fail_next(self, count: int, status: int = 429, code: int = 613,
                  message: str = "Calls to this api have exceeded the rate limit.") -> None:
        with self.lock:
            self.failures += [(status, code, message)] * count

    def sent_to(self, recipient: str) -> list[dict[str, Any]]:
        """Message bodies sent to one customer, in arrival order."""
        with self.lock:
            out = []
            for call in self.calls:
                body = call.body
                if (body.get("recipient") or {}).get("id") == recipient or \
                        body.get("to") == recipient:
                    out.append(body)
            return out

    def answer(self, path: str, auth: str, body: dict[str, Any]
               ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if auth != f"Bearer {self.token}":
            return 401, {"error": {"message": "Invalid OAuth access token.", "code": 190,
                                   "type": "OAuthException"}}, {}
        with self.lock:
            if self.failures:
                status, code, message = self.failures.pop(0)
                headers = {"Retry-After": "1"} if status == 429 else {}
                return status, {"error": {"message": f"({code}) {message}", "code": code,
                                          "type": "OAuthException"}}, headers
            self.calls.append(GraphCall(path, body, time.monotonic()))
            n = next(self._ids)
        if body.get("messaging_product") == "whatsapp":
            return 200, {"messaging_product": "whatsapp",
                         "contacts": [{"input": body.get("to"), "wa_id": body.get("to")}],
                         "messages": [{"id": f"wamid.OUT{n}"}]}, {}
        return 200, {"recipient_id": (body.get("recipient") or {}).get("id"),
                     "message_id": f"m_OUT{n}"}, {}


def serve(fake: FakeGraph) -> tuple[ThreadingHTTPServer, str]:
    def route(path: str, headers: Mapping[str, str], raw: bytes
              ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if not path.endswith("/messages"):
            return 404, {"error": {"message": "Unknown path", "code": 803}}, {}
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        return fake.answer(path, headers.get("Authorization", ""), body)

    return json_server(route)
