"""The demo web chat: a page served by the Rasa server and a JSON webhook behind it.

Lets a newcomer talk to the bot with no platform account. Register it in
credentials.yml as `parley.connectors.webchat.WebChatInput:`. Agent replies reach the
page through a long-poll on `/updates`.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import conversations
from parley.bot.settings import load_settings
from parley.connectors import gate
from parley.connectors.requests import RejectedRequest, read_json_object

CHANNEL = "webchat"
SENDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TEXT = 4096
LONG_POLL_SECONDS = 20.0
POLL_INTERVAL = 0.1


def conversation_id(sender: str) -> str:
    """Namespace ids by channel so two platforms' ids never collide."""
    return f"{CHANNEL}:{sender}"


def parse_sender(value: object) -> str:
    if not isinstance(value, str) or not SENDER_ID.match(value):
        raise RejectedRequest(
            400, "'sender' must be 1-64 characters of letters, digits, '-' or '_'"
        )
    return value


def parse_message(payload: dict[str, Any]) -> tuple[str, str]:
    """(sender, text) from `{"sender": …, "message": …}`, or RejectedRequest."""
    sender = parse_sender(payload.get("sender"))
    text = payload.get("message")
    if not isinstance(text, str) or not text.strip():
        raise RejectedRequest(400, "'message' must be a non-empty string")
    if len(text) > MAX_TEXT:
        raise RejectedRequest(413, f"'message' is {len(text)} characters; the limit is {MAX_TEXT}")
    return sender, text


def as_reply(conv_id: str, line: conversations.TranscriptLine) -> dict[str, Any]:
    return {"id": line.id, "recipient_id": conv_id, "author": line.author,
            "text": line.text, **(line.payload or {})}


class WebChatOutput(CollectingOutputChannel):
    """Collects replies for the HTTP answer, under our channel's name so writers'
    `channel: webchat` variants apply."""

    @classmethod
    def name(cls) -> str:
        return CHANNEL


class WebChatInput(InputChannel):
    @classmethod
    def name(cls) -> str:
        return CHANNEL

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> Blueprint:
        page = resources.files("parley.connectors").joinpath("webchat.html").read_text(
            "utf-8").replace("{{brand}}", html.escape(load_settings().brand or "Chat"))
        hook = Blueprint("webchat_webhook", __name__)

        @hook.route("/", methods=["GET"])
        async def chat_page(_request: Request) -> HTTPResponse:
            return response.html(page)

        @hook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            try:
                sender, text = parse_message(read_json_object(request))
            except RejectedRequest as rejected:
                return rejected.as_response()
            conv_id = conversation_id(sender)
            name = f"Web visitor {sender[-4:]}"
            decision = await asyncio.to_thread(
                gate.accept, gate.Inbound(conv_id, text, display_name=name))
            if decision.route != "bot":
                return response.json([{"recipient_id": conv_id, **r} for r in decision.replies])
            collector = WebChatOutput()
            await on_new_message(UserMessage(text, collector, conv_id, input_channel=CHANNEL,
                                             metadata={"display_name": name}))
            extra = await asyncio.to_thread(gate.after_bot, conv_id, collector.messages)
            return response.json(collector.messages
                                 + [{"recipient_id": conv_id, **r} for r in extra])

        @hook.route("/updates", methods=["GET"])
        async def updates(request: Request) -> HTTPResponse:
            """Long-poll for pushed messages (agent replies, notices) after a cursor."""
            try:
                conv_id = conversation_id(parse_sender(request.args.get("sender")))
                after_raw = request.args.get("after")
                after = int(after_raw) if after_raw is not None else None
            except RejectedRequest as rejected:
                return rejected.as_response()
            except ValueError:
                return response.json({"error": "'after' must be an integer"}, status=400)
            if after is None:  # first call: where the conversation stands now
                cursor = await asyncio.to_thread(conversations.latest_message_id, conv_id)
                return response.json({"cursor": cursor, "messages": []})
            deadline = time.monotonic() + LONG_POLL_SECONDS
            while True:
                lines = await asyncio.to_thread(conversations.pushed_after, conv_id, after)
                if lines or time.monotonic() >= deadline:
                    cursor = max([after, *(line.id for line in lines)])
                    return response.json({"cursor": cursor,
                                          "messages": [as_reply(conv_id, m) for m in lines]})
                await asyncio.sleep(POLL_INTERVAL)

        return hook
