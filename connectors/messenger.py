"""Facebook Messenger and Instagram DMs (one Meta module, two channels).

    parley.connectors.messenger.MessengerInput:      # /webhooks/messenger/webhook
      page_access_token: ${META_PAGE_TOKEN}
      app_secret: ${META_APP_SECRET}
      verify_token: ${META_VERIFY_TOKEN}
      app_id: ${META_APP_ID}                # tells our own echoes from a person's
    parley.connectors.messenger.InstagramInput:      # /webhooks/instagram/webhook (same keys)

Echoes of messages a person sent from Meta's own inbox, and messages arriving on
the standby channel (another app holds the thread), make the conversation
human-owned: the bot goes quiet until the desk hands it back.
"""

from __future__ import annotations

import logging
from typing import Any

from parley.bot import conversations, handoff
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

logger = logging.getLogger(__name__)
LIMITS = Limits(per_second=40, per_conversation=5, conversation_burst=5)
IGNORED = ("delivery", "read", "reaction", "optin", "referral", "account_linking",
           "pass_thread_control", "take_thread_control", "request_thread_control")


class Platform:
    """Messenger's settings; Instagram differs in name and object. Their limits are
    CHANNELS[channel], the table the reply checks use."""

    channel = "messenger"
    webhook_object = "page"


class InstagramPlatform(Platform):
    channel = "instagram"
    webhook_object = "instagram"


def parse(payload: dict[str, Any], platform: type[Platform], app_id: str = ""
          ) -> tuple[list[gate.Inbound], list[tuple[str, str]]]:
    """(customer messages to route, (conversation, text) a person sent from the
    platform's inbox or while another app holds the thread)."""
    if payload.get("object") != platform.webhook_object:
        raise RejectedRequest(400, f"expected object '{platform.webhook_object}'")
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise RejectedRequest(400, "'entry' must be a list")
    inbound: list[gate.Inbound] = []
    human: list[tuple[str, str]] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise RejectedRequest(400, "each entry must be an object")
        for event in entry.get("messaging") or []:  # every event, never only the first
            _event(event, platform, app_id, inbound, human, standby=False)
        for event in entry.get("standby") or []:
            _event(event, platform, app_id, inbound, human, standby=True)
    return inbound, human


def _event(event: Any, platform: type[Platform], app_id: str, inbound: list[gate.Inbound],
           human: list[tuple[str, str]], standby: bool) -> None:
    if not isinstance(event, dict) or not isinstance(event.get("sender"), dict):
        raise RejectedRequest(400, "a messaging event needs a 'sender'")
    sender = str(event["sender"].get("id") or "")
    message, postback = event.get("message"), event.get("postback")
    if isinstance(message, dict) and message.get("is_echo"):
        recipient = str((event.get("recipient") or {}).get("id") or "")
        if str(message.get("app_id") or "") != str(app_id) and message.get("text"):
            human.append((f"{platform.channel}:{recipient}", str(message["text"])))
        return  # our own echo: a loop guard, never answered
    if isinstance(message, dict):
        text = (message.get("quick_reply") or {}).get("payload") or message.get("text")
        if not text:
            logger.debug("ignored %s message without text", platform.channel)
            return
        item = gate.Inbound(f"{platform.channel}:{sender}", str(text),
                            platform_message_id=str(message.get("mid") or ""),
                            metadata={"standby": standby})
    elif isinstance(postback, dict) and postback.get("payload"):
        mid = postback.get("mid") or f"postback-{sender}-{event.get('timestamp')}"
        item = gate.Inbound(f"{platform.channel}:{sender}", str(postback["payload"]),
                            platform_message_id=str(mid), metadata={"standby": standby})
    elif any(key in event for key in IGNORED):
        logger.debug("ignored %s event", platform.channel)
        return
    else:
        logger.debug("ignored unknown %s event with keys %s", platform.channel, sorted(event))
        return
    if not item.platform_message_id:
        raise RejectedRequest(400, "a message needs its 'mid'")
    inbound.append(item)


class Meta:
    """The outbound side for one page: shared by the Rasa channel and the push worker."""

    def __init__(self, platform: type[Platform], token: str, page_id: str = "me",
                 graph_base_url: str = DEFAULT_GRAPH, version: str = GRAPH_VERSION) -> None:
        self.platform = platform
        self.channel = platform.channel
        self.shows = CHANNELS[platform.channel]
        self.page_id = page_id
        self.graph = GraphClient(token, graph_base_url, version)
        self.sender = Sender(LIMITS)

    def payloads(self, recipient: str, message: dict[str, Any], tag: str | None
                 ) -> list[dict[str, Any]]:
        base: dict[str, Any] = {"recipient": {"id": recipient},
                                "messaging_type": "MESSAGE_TAG" if tag else "RESPONSE"}
        if tag:
            base["tag"] = tag
        shows = self.shows
        chunks = split_text(message.get("text") or "", shows.text_limit)
        buttons = (message.get("buttons") or [])[: shows.max_buttons]  # as quick replies
        out = []
        for i, chunk in enumerate(chunks):
            body: dict[str, Any] = {"text": chunk}
            if buttons and i == len(chunks) - 1:
                body["quick_replies"] = [
                    {"content_type": "text", "title": str(b["title"])[: shows.button_title_limit],
                     "payload": str(b["payload"])[: shows.button_id_limit]} for b in buttons]
            out.append({**base, "message": body})
        if message.get("image"):
            out.append({**base, "message": {"attachment": {
                "type": "image", "payload": {"url": message["image"], "is_reusable": True}}}})
        return out

    async def deliver(self, conversation: str, message: dict[str, Any], human: bool = False
                      ) -> None:
        recipient = conversation.split(":", 1)[1]
        last = await off_loop(conversations.last_customer_at, conversation)
        allowed = window(last, utcnow(), human, human_agent_tag=True)
        if not allowed.allowed:
            raise await outside_window(conversation, f"not sent: {allowed.reason}")
        calls = [lambda p=p: self.graph.post(f"/{self.page_id}/messages", p)
                 for p in self.payloads(recipient, message, allowed.tag)]
        await self.sender.send_all(conversation, calls)


class MessengerInput(MetaInput):
    platform: type[Platform] = Platform

    @classmethod
    def name(cls) -> str:
        return cls.platform.channel

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> MessengerInput:
        c = credentials or {}
        missing = [k for k in ("page_access_token", "app_secret", "verify_token") if not c.get(k)]
        if missing:
            raise ValueError(f"{cls.platform.channel} needs {', '.join(missing)} in credentials")
        return cls(str(c["page_access_token"]), str(c["app_secret"]), str(c["verify_token"]),
                   app_id=str(c.get("app_id") or ""), page_id=str(c.get("page_id") or "me"),
                   graph_base_url=str(c.get("graph_base_url") or DEFAULT_GRAPH),
                   max_body_bytes=int(c.get("max_body_bytes") or DEFAULT_MAX_BODY))

    def __init__(self, token: str, app_secret: str, verify_token: str, app_id: str = "",
                 page_id: str = "me", graph_base_url: str = DEFAULT_GRAPH,
                 max_body_bytes: int = DEFAULT_MAX_BODY) -> None:
        self.meta = Meta(self.platform, token, page_id, graph_base_url)
        self.app_secret = app_secret
        self.verify_token = verify_token
        self.app_id = app_id
        self.max_body_bytes = max_body_bytes

    def check(self, payload: dict[str, Any]) -> None:
        shapes.check_meta(payload, self.platform.webhook_object)

    def parse(self, payload: dict[str, Any]) -> list[gate.Inbound]:
        return parse(payload, self.platform, self.app_id)[0]

    async def inbound(self, payload: dict[str, Any]) -> list[gate.Inbound]:
        """A person answering from Meta's inbox, or another app holding the thread,
        makes the conversation human-owned before its messages are stored."""
        items, human = parse(payload, self.platform, self.app_id)
        where = f"{self.platform.channel} inbox"
        for conv, text in human:
            await off_loop(handoff.hold_externally, conv, where, text)
        for item in items:
            if item.metadata.get("standby"):
                await off_loop(handoff.hold_externally, item.conversation_id, where)
        return items

    async def deliver(self, send: Send) -> None:
        await self.meta.deliver(send.conversation_id, send.message, human=send.author == "agent")


class InstagramInput(MessengerInput):
    platform = InstagramPlatform
