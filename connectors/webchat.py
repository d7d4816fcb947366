"""The demo web chat: a page served by the Rasa server and a JSON webhook behind it.

Lets a newcomer talk to the bot with no platform account. Register it in
credentials.yml as `connectors.webchat.WebChatInput:`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.requests import RejectedRequest, read_json_object

CHANNEL = "webchat"
SENDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TEXT = 4096


def conversation_id(sender: str) -> str:
    """Namespace ids by channel so two platforms' ids never collide."""
    return f"{CHANNEL}:{sender}"


def parse_message(payload: dict[str, Any]) -> tuple[str, str]:
    """(sender, text) from `{"sender": …, "message": …}`, or RejectedRequest."""
    sender = payload.get("sender")
    text = payload.get("message")
    if not isinstance(sender, str) or not SENDER_ID.match(sender):
        raise RejectedRequest(
            400, "'sender' must be 1-64 characters of letters, digits, '-' or '_'"
        )
    if not isinstance(text, str) or not text.strip():
        raise RejectedRequest(400, "'message' must be a non-empty string")
    if len(text) > MAX_TEXT:
        raise RejectedRequest(413, f"'message' is {len(text)} characters; the limit is {MAX_TEXT}")
    return sender, text


class WebChatInput(InputChannel):
    @classmethod
    def name(cls) -> str:
        return CHANNEL

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> Blueprint:
        page = resources.files("connectors").joinpath("webchat.html").read_text("utf-8")
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
            collector = CollectingOutputChannel()
            await on_new_message(
                UserMessage(text, collector, conversation_id(sender), input_channel=CHANNEL)
            )
            return response.json(collector.messages)

        return hook
