"""WhatsApp Cloud API.

    parley.connectors.whatsapp.WhatsAppInput:         # /webhooks/whatsapp/webhook
      access_token: ${WHATSAPP_TOKEN}
      phone_number_id: ${WHATSAPP_PHONE_NUMBER_ID}
      app_secret: ${META_APP_SECRET}
      verify_token: ${META_VERIFY_TOKEN}

Buttons become reply buttons or, with more options, a list message; their counts and
lengths are CHANNELS["whatsapp"], the table the reply checks use. Outside the 24-hour
customer-service window free text is refused: a template message is needed.
"""

from __future__ import annotations

import logging
from typing import Any

from parley.bot import conversations
from parley.bot.outbox import Send
from parley.bot.responses.channels import CHANNELS
from parley.bot.storage import off_loop, utcnow
from parley.connectors import gate, shapes
from parley.connectors.meta import (
    DEFAULT_GRAPH,
    GRAPH_VERSION,
    GraphClient,
    MetaInput,
    outside_window,
    window,
)
from parley.connectors.outbound import Limits, Sender
from parley.connectors.requests import DEFAULT_MAX_BODY, RejectedRequest
from parley.connectors.text import split_text

CHANNEL = "whatsapp"
SHOWS = CHANNELS[CHANNEL]  # the limits the reply checks hold replies to
LIMITS = Limits(per_second=70, per_conversation=5, conversation_burst=5)
logger = logging.getLogger(__name__)


def parse(payload: dict[str, Any]) -> list[gate.Inbound]:
    """Customer messages in one webhook call; statuses and other fields are ignored."""
    if payload.get("object") != "whatsapp_business_account":
        raise RejectedRequest(400, "expected object 'whatsapp_business_account'")
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise RejectedRequest(400, "'entry' must be a list")
    inbound = []
    for entry in entries:
        for change in (entry or {}).get("changes") or []:
            value = (change or {}).get("value") or {}
            if change.get("field") != "messages":
                continue
            names = {c.get("wa_id"): (c.get("profile") or {}).get("name", "")
                     for c in value.get("contacts") or []}
            for message in value.get("messages") or []:  # every one, not only the first
                item = _message(message, names)
                if item is not None:
                    inbound.append(item)
    return inbound


def _message(message: Any, names: dict[str, str]) -> gate.Inbound | None:
    if not isinstance(message, dict) or not message.get("from") or not message.get("id"):
        raise RejectedRequest(400, "a message needs 'from' and 'id'")
    kind = message.get("type")
    if kind == "text":
        text = (message.get("text") or {}).get("body")
    elif kind == "interactive":
        reply = message.get("interactive") or {}
        text = (reply.get("button_reply") or reply.get("list_reply") or {}).get("id")
    elif kind == "button":  # a template's quick-reply button
        text = (message.get("button") or {}).get("payload")
    else:
        logger.debug("ignored WhatsApp %s message", kind)
        return None
    if not text:
        return None
    sender = str(message["from"])
    return gate.Inbound(f"{CHANNEL}:{sender}", str(text), platform_message_id=str(message["id"]),
                        display_name=names.get(sender, ""))


LIST_BUTTON = "☰"


def payloads(to: str, message: dict[str, Any]) -> list[dict[str, Any]]:
    base = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to}
    buttons = message.get("buttons") or []
    text = message.get("text") or ""
    out: list[dict[str, Any]] = []
    if buttons:
        # An interactive body holds less than a text message: the rest goes first, as text.
        chunks = split_text(text, SHOWS.buttons_text_limit) or [" "]
        out += [{**base, "type": "text", "text": {"body": c}} for c in chunks[:-1]]
        body = {"text": chunks[-1]}
        if len(buttons) <= SHOWS.max_buttons:
            interactive = {"type": "button", "body": body, "action": {"buttons": [
                {"type": "reply", "reply": {"id": str(b["payload"])[: SHOWS.button_id_limit],
                                            "title": str(b["title"])[: SHOWS.button_title_limit]}}
                for b in buttons]}}
        else:
            interactive = {"type": "list", "body": body, "action": {
                # No words of ours: the list's button is a symbol in every language
                # (the reply's own text says what to choose), one untitled section.
                "button": LIST_BUTTON, "sections": [{"rows": [
                    {"id": str(b["payload"])[: SHOWS.list_id_limit],
                     "title": str(b["title"])[: SHOWS.list_title_limit]}
                    for b in buttons[: SHOWS.list_rows]]}]}}
        out.append({**base, "type": "interactive", "interactive": interactive})
    else:
        out += [{**base, "type": "text", "text": {"body": c}}
                for c in split_text(text, SHOWS.text_limit)]
    if message.get("image"):
        out.append({**base, "type": "image", "image": {"link": message["image"]}})
    return out


class WhatsApp:
    channel = CHANNEL

    def __init__(self, token: str, phone_number_id: str, graph_base_url: str = DEFAULT_GRAPH,
                 version: str = GRAPH_VERSION) -> None:
        self.phone_number_id = phone_number_id
        self.graph = GraphClient(token, graph_base_url, version)
        self.sender = Sender(LIMITS)

    async def deliver(self, conversation: str, message: dict[str, Any], human: bool = False
                      ) -> None:
        last = await off_loop(conversations.last_customer_at, conversation)
        allowed = window(last, utcnow(), human, human_agent_tag=False)
        if not allowed.allowed:
            raise await outside_window(conversation, f"not sent: {allowed.reason}; WhatsApp "
                                                     "needs an approved template message")
        to = conversation.split(":", 1)[1]
        calls = [lambda p=p: self.graph.post(f"/{self.phone_number_id}/messages", p)
                 for p in payloads(to, message)]
        await self.sender.send_all(conversation, calls)


class WhatsAppInput(MetaInput):
    @classmethod
    def name(cls) -> str:
        return CHANNEL

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> WhatsAppInput:
        c = credentials or {}
        needed = ("access_token", "phone_number_id", "app_secret", "verify_token")
        missing = [k for k in needed if not c.get(k)]
        if missing:
            raise ValueError(f"whatsapp needs {', '.join(missing)} in credentials")
        return cls(str(c["access_token"]), str(c["phone_number_id"]), str(c["app_secret"]),
                   str(c["verify_token"]), str(c.get("graph_base_url") or DEFAULT_GRAPH),
                   int(c.get("max_body_bytes") or DEFAULT_MAX_BODY))

    def __init__(self, token: str, phone_number_id: str, app_secret: str, verify_token: str,
                 graph_base_url: str = DEFAULT_GRAPH,
                 max_body_bytes: int = DEFAULT_MAX_BODY) -> None:
        self.whatsapp = WhatsApp(token, phone_number_id, graph_base_url)
        self.app_secret = app_secret
        self.verify_token = verify_token
        self.max_body_bytes = max_body_bytes

    def check(self, payload: dict[str, Any]) -> None:
        shapes.check_whatsapp(payload)

    def parse(self, payload: dict[str, Any]) -> list[gate.Inbound]:
        return parse(payload)

    async def deliver(self, send: Send) -> None:
        await self.whatsapp.deliver(send.conversation_id, send.message,
                                    human=send.author == "agent")
