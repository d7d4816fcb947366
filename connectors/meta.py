"""What Messenger, Instagram and WhatsApp share: Meta's webhook checks, the Graph API
client, and the messaging windows.

- `GET` verification: `hub.mode=subscribe`, `hub.verify_token`, echo `hub.challenge`.
- `X-Hub-Signature-256: sha256=<hex>`: HMAC-SHA256 of the raw body with the app
  secret; fixed algorithm, constant-time comparison, 401 on mismatch (never 200).
- Windows: replies are free within 24 h of the customer's last message; Messenger
  and Instagram let a human agent answer until 7 days with the HUMAN_AGENT tag;
  bot replies never use a tag. A send refused for a closed window also expires
  the conversation's satisfaction survey: none of its questions can go out.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import survey
from parley.bot.storage import off_loop
from parley.connectors.base import DeliveryFailed, ParleyInput
from parley.connectors.outbound import Retryable
from parley.connectors.requests import RejectedRequest

DEFAULT_GRAPH = "https://graph.facebook.com"
GRAPH_VERSION = "v19.0"
STANDARD_WINDOW = timedelta(hours=24)
HUMAN_AGENT_WINDOW = timedelta(days=7)
# Graph error codes that mean "slow down" (app, user, page, per-thread limits).
RATE_LIMIT_CODES = {4, 17, 32, 613, 80006, 80007, 130429, 131048, 131056}


def generate_signature(raw_body: bytes, app_secret: str) -> str:
    """The header value Meta sends; public so tests sign requests the same way."""
    digest = hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(raw_body: bytes, headers: Mapping[str, str], app_secret: str) -> bool:
    sent = headers.get("x-hub-signature-256") or ""
    if not app_secret or not sent.startswith("sha256="):
        return False
    return hmac.compare_digest(sent.encode(), generate_signature(raw_body, app_secret).encode())


def challenge(args: Mapping[str, str], verify_token: str) -> str | None:
    """The hub.challenge to echo when the subscription request is ours, else None."""
    mode, token = args.get("hub.mode"), args.get("hub.verify_token") or ""
    if mode != "subscribe" or not verify_token:
        return None
    if not hmac.compare_digest(token.encode(), verify_token.encode()):
        return None
    return args.get("hub.challenge") or ""


@dataclass(frozen=True)
class Window:
    """Whether a message may be sent now, and how."""

    allowed: bool
    tag: str | None = None  # "HUMAN_AGENT" for a late human reply
    reason: str = ""


def window(last_customer_at: datetime | None, now: datetime, human: bool,
           human_agent_tag: bool) -> Window:
    if last_customer_at is None:
        return Window(False, reason="the customer has not written to us")
    age = now - last_customer_at
    if age <= STANDARD_WINDOW:
        return Window(True)
    if human and human_agent_tag and age <= HUMAN_AGENT_WINDOW:
        return Window(True, tag="HUMAN_AGENT")
    if human and human_agent_tag:
        return Window(False, reason="more than 7 days since the customer last wrote")
    return Window(False, reason="more than 24 hours since the customer last wrote")


async def outside_window(conversation: str, reason: str) -> DeliveryFailed:
    """The refusal for a send after the window closed; the survey asking in this
    conversation (if any) expires with it, so no later question is queued either."""
    await off_loop(survey.expire_open, conversation)
    return DeliveryFailed(reason)


class MetaError(Exception):
    """A permanent Graph API refusal, with Meta's own code and message."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(f"({code}) {message}")
        self.status, self.code, self.message = status, code, message


class GraphClient:
    """POSTs to the Graph API with the token in a header (never in URLs or logs)."""

    def __init__(self, access_token: str, base_url: str = DEFAULT_GRAPH,
                 version: str = GRAPH_VERSION) -> None:
        self._client = httpx.AsyncClient(
            base_url=f"{base_url.rstrip('/')}/{version}",
            headers={"Authorization": f"Bearer {access_token}"}, timeout=30)

    async def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await self._client.post(path, json=payload)
        except httpx.TransportError as exc:
            raise Retryable(f"graph: {exc.__class__.__name__}") from exc
        if resp.status_code < 300:
            return resp.json()
        try:
            error = resp.json().get("error") or {}
        except ValueError:
            error = {}
        code, message = error.get("code"), str(error.get("message") or resp.reason_phrase)
        if resp.status_code == 429 or resp.status_code >= 500 or code in RATE_LIMIT_CODES:
            retry_after = resp.headers.get("retry-after")
            raise Retryable(f"graph {resp.status_code}: {message}",
                            float(retry_after) if retry_after else None)
        raise MetaError(resp.status_code, code, message)

    async def aclose(self) -> None:
        await self._client.aclose()


class MetaInput(ParleyInput):
    """Meta's webhook checks for Messenger, Instagram and WhatsApp: the GET
    subscription challenge, and the signature over the raw body (401)."""

    app_secret: str
    verify_token: str

    def verify(self, request: Request) -> None:
        if not verify_signature(request.body or b"", request.headers, self.app_secret):
            raise RejectedRequest(401, "X-Hub-Signature-256 missing or wrong")

    def refusal(self, error: Exception) -> str:
        if isinstance(error, MetaError):
            return f"Meta refused it: {error}"
        return super().refusal(error)

    def add_routes(self, hook: Blueprint) -> None:
        @hook.route("/webhook", methods=["GET"])
        async def subscribe(request: Request) -> HTTPResponse:
            answer = challenge({k: request.args.get(k) or "" for k in request.args},
                               self.verify_token)
            if answer is None:
                return response.json({"error": "verify token missing or wrong"}, status=403)
            return response.text(answer)
