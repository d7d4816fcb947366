"""A fake Meta Graph API on loopback: the Send API for Messenger/Instagram
(`POST /{version}/{page}/messages`) and WhatsApp Cloud API
(`POST /{version}/{phone_number_id}/messages`), answering with Meta's JSON,
checking the bearer token, recording calls, and failing on request
(429 with Retry-After, 5xx, or a permanent Graph error).

Buttons are held to Meta's documented limits, refused with Meta's error as the
real API would: WhatsApp reply buttons (1-3, unique titles up to 20 characters,
ids up to 256), list messages (a button label up to 20, at most 10 rows, titles
up to 24, ids up to 200, unique), interactive bodies up to 1024 characters;
Messenger quick replies (at most 13, titles up to 20, payloads up to 1000).
`whatsapp_choice` and `messenger_choice` play the customer tapping one of them:
the webhook payload Meta would POST."""

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
    message_id: str = ""  # what Meta answered with


def _too_long(value: Any, limit: int) -> bool:
    return not isinstance(value, str) or not value or len(value) > limit


def _bad_whatsapp(body: dict[str, Any]) -> str | None:
    """Why the Cloud API would refuse this interactive message (code 131009), or None."""
    if body.get("type") != "interactive":
        return None
    interactive = body.get("interactive") or {}
    if _too_long((interactive.get("body") or {}).get("text"), 1024):
        return "interactive body text must be 1 to 1024 characters"
    action = interactive.get("action") or {}
    if interactive.get("type") == "button":
        replies = [b.get("reply") or {} for b in action.get("buttons") or []]
        titles = [r.get("title") for r in replies]
        if not 1 <= len(replies) <= 3 or len(set(titles)) != len(titles):
            return "reply buttons: 1 to 3, with unique titles"
        if any(_too_long(r.get("title"), 20) or _too_long(r.get("id"), 256) for r in replies):
            return "reply button title over 20 or id over 256 characters"
    elif interactive.get("type") == "list":
        rows = [r for section in action.get("sections") or [] for r in section.get("rows") or []]
        if _too_long(action.get("button"), 20):
            return "list button label must be 1 to 20 characters"
        if not 1 <= len(rows) <= 10 or len({r.get("id") for r in rows}) != len(rows):
            return "list: 1 to 10 rows with unique ids"
        if any(_too_long(r.get("title"), 24) or _too_long(r.get("id"), 200) for r in rows):
            return "list row title over 24 or id over 200 characters"
    else:
        return f"unsupported interactive type {interactive.get('type')!r}"
    return None


def _bad_messenger(body: dict[str, Any]) -> str | None:
    """Why the Send API would refuse these quick replies (code 100), or None."""
    quick = (body.get("message") or {}).get("quick_replies")
    if quick is None:
        return None
    if not 1 <= len(quick) <= 13:
        return "quick_replies: 1 to 13"
    if any(_too_long(q.get("title"), 20) or _too_long(q.get("payload"), 1000) for q in quick):
        return "quick reply title over 20 or payload over 1000 characters"
    return None


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
            whatsapp = body.get("messaging_product") == "whatsapp"
            refused = _bad_whatsapp(body) if whatsapp else _bad_messenger(body)
            if refused is not None:
                code = 131009 if whatsapp else 100
                return 400, {"error": {"message": f"(#{code}) Parameter value is not valid: "
                                                  f"{refused}", "code": code,
                                       "type": "OAuthException"}}, {}
            n = next(self._ids)
            message_id = f"wamid.OUT{n}" if whatsapp else f"m_OUT{n}"
            self.calls.append(GraphCall(path, body, time.monotonic(), message_id))
        if whatsapp:
            return 200, {"messaging_product": "whatsapp",
                         "contacts": [{"input": body.get("to"), "wa_id": body.get("to")}],
                         "messages": [{"id": message_id}]}, {}
        return 200, {"recipient_id": (body.get("recipient") or {}).get("id"),
                     "message_id": message_id}, {}

    def _last_with_choices(self, recipient: str) -> GraphCall:
        with self.lock:
            for call in reversed(self.calls):
                body = call.body
                if recipient in {body.get("to"), (body.get("recipient") or {}).get("id")} \
                        and (body.get("type") == "interactive"
                             or (body.get("message") or {}).get("quick_replies")):
                    return call
        raise AssertionError(f"nothing with buttons was sent to {recipient}")

    def whatsapp_choice(self, user: str, title: str, message_id: str) -> dict[str, Any]:
        """The webhook Meta POSTs when `user` taps the reply button or list row whose
        title contains `title` in the last interactive message sent to them."""
        call = self._last_with_choices(user)
        interactive = call.body["interactive"]
        if interactive["type"] == "button":
            options = [b["reply"] for b in interactive["action"]["buttons"]]
        else:
            options = [r for s in interactive["action"]["sections"] for r in s["rows"]]
        chosen = next((o for o in options if title in o["title"]), None)
        if chosen is None:
            raise AssertionError(f"no option {title!r} in {[o['title'] for o in options]}")
        kind = "button_reply" if interactive["type"] == "button" else "list_reply"
        return {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{
            "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550000000", "phone_number_id": "PNID"},
                "contacts": [{"profile": {"name": "Kerry"}, "wa_id": user}],
                "messages": [{"from": user, "id": message_id, "timestamp": str(int(time.time())),
                              "context": {"from": "15550000000", "id": call.message_id},
                              "type": "interactive", "interactive": {
                                  "type": kind, kind: {"id": chosen["id"],
                                                       "title": chosen["title"]}}}]}}]}]}

    def messenger_choice(self, user: str, title: str, mid: str,
                         webhook_object: str = "page") -> dict[str, Any]:
        """The webhook Meta POSTs when `user` taps the quick reply whose title
        contains `title`: the title as text, the payload beside it."""
        call = self._last_with_choices(user)
        quick = call.body["message"]["quick_replies"]
        chosen = next((q for q in quick if title in q["title"]), None)
        if chosen is None:
            raise AssertionError(f"no quick reply {title!r} in {[q['title'] for q in quick]}")
        return {"object": webhook_object, "entry": [{"id": "PAGE", "time": int(time.time()),
                                                     "messaging": [{
            "sender": {"id": user}, "recipient": {"id": "PAGE"},
            "timestamp": int(time.time() * 1000),
            "message": {"mid": mid, "text": chosen["title"],
                        "quick_reply": {"payload": chosen["payload"]}}}]}]}


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
