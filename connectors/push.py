"""Delivers what the desk queued for customers on platforms we call (agent replies,
notices), from inside the Rasa server that holds the platform credentials.

Conversations go out in parallel, each in order; a send the platform refuses is
kept on the message with the platform's reason, so the agent sees it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from parley.bot import conversations
from parley.bot.conversations import TranscriptLine

POLL_SECONDS = 0.1
logger = logging.getLogger(__name__)

# deliver(conversation, message, line) -> None; raise DeliveryFailed to record a reason
Deliver = Callable[[str, dict[str, Any], TranscriptLine], Awaitable[None]]


class DeliveryFailed(Exception):
    """The platform will not take this message; `reason` is shown to the agent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def run_worker(channel: str, deliver: Deliver) -> None:
    while True:
        taken = await asyncio.to_thread(conversations.take_pending_pushes, channel)
        by_conversation: dict[str, list[TranscriptLine]] = {}
        for conv, line in taken:
            by_conversation.setdefault(conv, []).append(line)
        await asyncio.gather(*(_push(conv, lines, deliver)
                               for conv, lines in by_conversation.items()))
        if not taken:
            await asyncio.sleep(POLL_SECONDS)


async def _push(conversation: str, lines: list[TranscriptLine], deliver: Deliver) -> None:
    for line in lines:
        try:
            await deliver(conversation, {"text": line.text, **(line.payload or {})}, line)
        except DeliveryFailed as failed:
            logger.info("push to %s failed: %s", conversation, failed.reason)
            await asyncio.to_thread(conversations.mark_failed, line.id, failed.reason)


def start_with(blueprint: Any, channel: str, deliver: Deliver) -> None:
    """Run the worker for `channel` once the Sanic server is up."""

    @blueprint.listener("after_server_start")
    async def start(app: Any, _loop: Any) -> None:
        app.add_task(run_worker(channel, deliver))
