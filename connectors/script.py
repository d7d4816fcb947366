"""A scripting channel for operators: the web chat's JSON API behind a token.

Replaces Rasa's `rest` channel, which reaches Rasa for any sender id and so around
the gate. Conversations are `script:<sender>`: a script can never speak as a
Telegram or web chat customer, and it goes through the inbox and the gate like
every other channel. Off unless configured:

    parley.connectors.script.ScriptInput:      # /webhooks/script/webhook
      token: ${PARLEY_SCRIPT_TOKEN}          # sent as `Authorization: Bearer <token>`
"""

from __future__ import annotations

import hmac
from typing import Any

from sanic import Blueprint
from sanic.request import Request

from parley.connectors.requests import RejectedRequest
from parley.connectors.webchat import WebChatInput

MIN_TOKEN = 16


class ScriptInput(WebChatInput):
    @classmethod
    def name(cls) -> str:
        return "script"

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> ScriptInput:
        token = str((credentials or {}).get("token") or "")
        if len(token) < MIN_TOKEN:
            raise ValueError(f"script needs a 'token' of at least {MIN_TOKEN} characters "
                             "in credentials")
        return cls(token)

    def __init__(self, token: str) -> None:
        self.token = token

    def verify(self, request: Request) -> None:
        sent = request.headers.get("authorization") or ""
        if not hmac.compare_digest(sent.encode(), f"Bearer {self.token}".encode()):
            raise RejectedRequest(401, "Authorization: Bearer <token> missing or wrong")

    def add_routes(self, hook: Blueprint) -> None:
        self.add_updates(hook)  # no page: scripts only
