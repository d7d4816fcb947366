"""A fake Telegram Bot API server on loopback that speaks the documented wire format.

python-telegram-bot is pointed at it through `base_url`. It records every call,
answers like the Bot API (`{"ok": true, "result": …}`), and can be told to fail
the next calls with 429 (with `parameters.retry_after`) or 5xx. An inline keyboard
Telegram would refuse (a button without text, `callback_data` outside 1-64 bytes)
gets Telegram's 400. `press` plays the customer tapping an inline button of a
message it sent: the `callback_query` update Telegram would POST to the webhook.

A benchmark in another process reads what arrived, and when (`time.monotonic()`,
one clock for every process on the machine): GET `/_calls` for every message sent
so far, or GET `/_calls?after=N&wait=S` to long-poll for the calls after the first
N (a cursor: the answer's `next`), waiting up to S seconds for one.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.http import json_server, stop

__all__ = ["FakeTelegram", "serve", "stop"]

BOT_USER = {"id": 999, "is_bot": True, "first_name": "Northwind", "username": "northwind_bot"}


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float
    message_id: int | None = None  # what a sendMessage answered with


def _bad_keyboard(params: dict[str, Any]) -> str | None:
    """Telegram's refusal of an inline keyboard, as its 400 describes it, or None."""
    markup = params.get("reply_markup")
    if isinstance(markup, str):
        markup = json.loads(markup)
    for row in (markup or {}).get("inline_keyboard") or []:
        for button in row:
            if not button.get("text"):
                return "Bad Request: text buttons are unallowed in the inline keyboard"
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= 64:
                return "Bad Request: BUTTON_DATA_INVALID"
    return None


@dataclass
class FakeTelegram:
    token: str = "123456:TEST-token"
    calls: list[Call] = field(default_factory=list)
    failures: list[tuple[str, int, int]] = field(default_factory=list)  # method, status, retry
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=lambda: itertools.count(1000))
    pending_updates: list[dict[str, Any]] = field(default_factory=list)  # for getUpdates
    blocked_chats: set[int] = field(default_factory=set)  # users who blocked the bot
    arrived: threading.Condition = field(init=False, repr=False)  # notified on every call

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    def fail_next(self, method: str, count: int, status: int = 429, retry_after: int = 1) -> None:
        with self.lock:
            self.failures += [(method, status, retry_after)] * count

    def sent(self, method: str = "sendMessage") -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method]

    def calls_after(self, after: int, wait: float = 0.0,
                    method: str = "sendMessage") -> tuple[int, list[Call]]:
        """The `method` calls among those recorded after the first `after` (waiting up
        to `wait` seconds for any call to arrive), and the cursor to ask with next."""
        with self.lock:
            if wait > 0:
                self.arrived.wait_for(lambda: len(self.calls) > after, wait)
            return len(self.calls), [c for c in self.calls[after:] if c.method == method]

    def keyboard(self, chat: int) -> tuple[Call, list[dict[str, Any]]]:
        """The last message sent to `chat` that has an inline keyboard, and its buttons."""
        for call in reversed(self.sent()):
            markup = call.params.get("reply_markup")
            if int(call.params["chat_id"]) == chat and markup:
                markup = json.loads(markup) if isinstance(markup, str) else markup
                return call, [b for row in markup["inline_keyboard"] for b in row]
        raise AssertionError(f"no message with buttons was sent to chat {chat}")

    def press(self, chat: int, title: str, update_id: int) -> dict[str, Any]:
        """The update Telegram POSTs when the customer taps the button whose text
        contains `title` on the last keyboard sent to them: a `callback_query`
        carrying that button's `callback_data` and the message it belongs to."""
        call, buttons = self.keyboard(chat)
        button = next((b for b in buttons if title in b["text"]), None)
        if button is None:
            raise AssertionError(f"no button {title!r} in {[b['text'] for b in buttons]}")
        user = {"id": chat, "is_bot": False, "first_name": "Maria"}
        markup = call.params["reply_markup"]
        return {"update_id": update_id, "callback_query": {
            "id": f"{chat}{update_id}", "from": user, "chat_instance": f"ci{chat}",
            "data": button["callback_data"],
            "message": {"message_id": call.message_id, "date": int(time.time()),
                        "chat": {"id": chat, "type": "private", "first_name": "Maria"},
                        "from": BOT_USER, "text": call.params.get("text", ""),
                        "reply_markup": json.loads(markup) if isinstance(markup, str)
                        else markup}}}

    def answer(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            for i, (m, status, retry_after) in enumerate(self.failures):
                if m == method:
                    del self.failures[i]
                    if status == 429:
                        return 429, {"ok": False, "error_code": 429,
                                     "description": f"Too Many Requests: retry after {retry_after}",
                                     "parameters": {"retry_after": retry_after}}
                    return status, {"ok": False, "error_code": status,
                                    "description": "Bad Gateway"}
            refused = _bad_keyboard(params) if method == "sendMessage" else None
            message_id = next(self._ids) if method in {"sendMessage", "sendPhoto"} else None
            if refused is None:
                self.calls.append(Call(method, params, time.monotonic(), message_id))
                self.arrived.notify_all()
        if refused is not None:
            return 400, {"ok": False, "error_code": 400, "description": refused}
        if method == "getMe":
            return 200, {"ok": True, "result": BOT_USER}
        if method in {"sendMessage", "sendPhoto"}:
            chat = int(params["chat_id"])
            if chat in self.blocked_chats:
                return 403, {"ok": False, "error_code": 403,
                             "description": "Forbidden: bot was blocked by the user"}
            return 200, {"ok": True, "result": {
                "message_id": message_id, "date": int(time.time()),
                "chat": {"id": chat, "type": "private"}, "from": BOT_USER,
                **({"text": params.get("text", "")} if method == "sendMessage" else {})}}
        if method in {"answerCallbackQuery", "setWebhook", "deleteWebhook"}:
            return 200, {"ok": True, "result": True}
        if method == "getUpdates":
            with self.lock:
                offset = int(params.get("offset") or 0)
                updates = [u for u in self.pending_updates if u["update_id"] >= offset]
                self.pending_updates = updates
            return 200, {"ok": True, "result": updates}
        return 404, {"ok": False, "error_code": 404, "description": "Not Found: method"}


def _params(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    if "json" in headers.get("Content-Type", ""):
        return json.loads(body or b"{}")
    raw = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    out: dict[str, Any] = {}
    for key, value in raw.items():  # PTB JSON-encodes nested values in form fields
        try:
            out[key] = json.loads(value) if value[:1] in "[{" else value
        except ValueError:
            out[key] = value
    return out


def serve(fake: FakeTelegram) -> tuple[ThreadingHTTPServer, str]:
    def route(path: str, headers: Mapping[str, str], body: bytes
              ) -> tuple[int, dict[str, Any], dict[str, str]]:
        prefix = f"/bot{fake.token}/"
        if path == "/_calls":  # not Telegram's: lets a benchmark in another process read them
            return 200, {"calls": [c.__dict__ for c in fake.sent()]}, {}
        if path.startswith("/_calls?"):  # the same, after a cursor, long-polled
            query = parse_qs(urlsplit(path).query)
            after = int(query.get("after", ["0"])[0])
            wait = min(30.0, float(query.get("wait", ["0"])[0]))
            cursor, calls = fake.calls_after(after, wait)
            return 200, {"next": cursor, "calls": [c.__dict__ for c in calls]}, {}
        if not path.startswith(prefix):
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}, {}
        status, payload = fake.answer(path[len(prefix):], _params(headers, body))
        return status, payload, {}

    server, url = json_server(route)
    report = server.handle_error

    def handle_error(request: Any, client_address: Any) -> None:
        # A benchmark that stops long-polling hangs up on a pending /_calls: expected.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            report(request, client_address)

    server.handle_error = handle_error  # type: ignore[method-assign]
    return server, url


if __name__ == "__main__":  # its own process, so load on a benchmark's client can't delay it
    server, url = serve(FakeTelegram())
    print(url, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    stop(server)
