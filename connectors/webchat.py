"""The demo web chat: a page served by the Rasa server and a JSON webhook behind it.

Lets a newcomer talk to the bot with no platform account. Register it in
credentials.yml as `parley.connectors.webchat.WebChatInput:`. A post is stored in
the inbox and answered with the bot's replies once the worker has them; agent
replies reach the page through a long-poll on `/updates`.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from importlib import resources
from typing import Any

from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import conversations, inbox
from parley.bot.settings import load_settings
from parley.bot.storage import off_loop
from parley.connectors import gate, shapes
from parley.connectors.base import ParleyInput
from parley.connectors.requests import DEFAULT_MAX_BODY, RejectedRequest

CHANNEL = "webchat"
SENDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TEXT = 4096
LONG_POLL_SECONDS = 20.0
POLL_INTERVAL = 0.1
ANSWER_WAIT = 25.0  # seconds a post waits for the bot's answer


def conversation_id(sender: str) -> str:
    """Namespace ids by channel so two platforms' ids never collide."""
    return f"{CHANNEL}:{sender}"


def parse_sender(value: object) -> str:
    if not isinstance(value, str) or not SENDER_ID.fullmatch(value):
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


class WebChatInput(ParleyInput):
    """Open to anyone who has the page: its conversations are its own (`webchat:`
    ids), and they go through the inbox and the gate like every platform's."""

    delivery = "sync"
    max_body_bytes = DEFAULT_MAX_BODY

    @classmethod
    def name(cls) -> str:
        return CHANNEL

    def verify(self, request: Request) -> None:
        """The demo page needs no secret."""

    def check(self, payload: dict[str, Any]) -> None:
        shapes.check_webchat(payload)

    def parse(self, payload: dict[str, Any]) -> list[gate.Inbound]:
        sender, text = parse_message(payload)
        return [gate.Inbound(f"{self.name()}:{sender}", text,
                             display_name=f"Web visitor {sender[-4:]}")]

    async def answer(self, request: Request, items: list[gate.Inbound]) -> HTTPResponse:
        """The bot's replies in the answer, as Rasa's REST channel gives them; if the
        turn takes longer than ANSWER_WAIT, 202 and the page gets them from /updates."""
        [message_id] = await self.store(items)
        assert message_id is not None  # no platform ids here: never a redelivery
        conv_id = items[0].conversation_id
        if not await self.workers.wait_finished(message_id, ANSWER_WAIT):
            return response.json([], status=202)
        replies = await off_loop(inbox.replies_to, message_id)
        return response.json([{"recipient_id": conv_id, **r} for r in replies])

    def add_routes(self, hook: Blueprint) -> None:
        self.add_updates(hook)
        page = resources.files("parley.connectors").joinpath("webchat.html").read_text(
            "utf-8").replace("{{brand}}", html.escape(load_settings().brand or "Chat"))

        @hook.route("/", methods=["GET"])
        async def chat_page(_request: Request) -> HTTPResponse:
            return response.html(page)

    def add_updates(self, hook: Blueprint) -> None:
        @hook.route("/updates", methods=["GET"])
        async def updates(request: Request) -> HTTPResponse:
            """Long-poll for what we said after a cursor (agent replies, notices, and
            answers that outlived their request)."""
            try:
                self.verify(request)
                conv_id = f"{self.name()}:{parse_sender(request.args.get('sender'))}"
                after_raw = request.args.get("after")
                after = int(after_raw) if after_raw is not None else None
            except RejectedRequest as rejected:
                return rejected.as_response()
            except ValueError:
                return response.json({"error": "'after' must be an integer"}, status=400)
            if after is None:  # first call: where the conversation stands now
                cursor = await off_loop(conversations.latest_message_id, conv_id)
                return response.json({"cursor": cursor, "messages": []})
            deadline = time.monotonic() + LONG_POLL_SECONDS
            while True:
                lines = await off_loop(conversations.pushed_after, conv_id, after)
                if lines or time.monotonic() >= deadline:
                    cursor = max([after, *(line.id for line in lines)])
                    return response.json({"cursor": cursor,
                                          "messages": [as_reply(conv_id, m) for m in lines]})
                await asyncio.sleep(POLL_INTERVAL)
