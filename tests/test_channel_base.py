"""What the channel base adds around a Rasa turn."""

from __future__ import annotations

import asyncio
import logging

import pytest
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from sqlalchemy.exc import OperationalError

from parley.bot.conversations import Message, add_message, ensure_conversation
from parley.bot.outbox import Send
from parley.bot.storage import session_scope
from parley.connectors.base import ChannelWorkers, Held, ParleyInput, TurnFailed, rasa_turn


def message() -> UserMessage:
    return UserMessage("where is my order", CollectingOutputChannel(), "telegram:1")


def test_an_action_rasa_swallowed_fails_the_turn() -> None:
    """Rasa 3.6 logs a failing custom action and goes on without its events: the
    worker must not take that turn's replies as the answer."""

    async def rasa_with_action_server_down(_message: UserMessage) -> None:
        try:
            raise ConnectionError("action server unreachable")
        except ConnectionError:  # what rasa.core.processor._run_action does
            logging.getLogger("rasa.core.processor").exception(
                "Encountered an exception while running action 'action_order_status'.")

    with pytest.raises(TurnFailed, match="action_order_status"):
        asyncio.run(rasa_turn(rasa_with_action_server_down, message()))


def test_a_clean_turn_and_other_turns_errors_do_not_count() -> None:
    done: list[str] = []

    async def fine(m: UserMessage) -> None:
        done.append(m.text or "")

    async def both() -> None:
        async def failing(_m: UserMessage) -> None:
            await asyncio.sleep(0.01)
            logging.getLogger("rasa.core.processor").error("x", exc_info=ValueError("boom"))

        results = await asyncio.gather(rasa_turn(failing, message()), rasa_turn(fine, message()),
                                       return_exceptions=True)
        assert isinstance(results[0], TurnFailed) and results[1] is None  # per turn

    asyncio.run(rasa_turn(fine, message()))
    asyncio.run(both())
    assert done == ["where is my order", "where is my order"]
    logging.getLogger("rasa.core.processor").error("outside any turn", exc_info=ValueError())


class FlakyStorageChannel(ParleyInput):
    """A platform module whose own database read fails once (Meta's window check
    during a storage outage), then delivers."""

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.failures = 1

    @classmethod
    def name(cls) -> str:
        return "telegram"

    async def deliver(self, send: Send) -> None:
        if self.failures:
            self.failures -= 1
            raise OperationalError("SELECT last_customer_at", {}, Exception("server closed"))
        self.delivered.append(send.text)


def test_a_storage_error_while_sending_is_not_a_platform_refusal(db_url: str) -> None:
    """The message stays pending (not failed with a made-up platform reason), goes
    out on the next tick, and no lease is kept for it."""
    with session_scope(db_url) as session:
        ensure_conversation(session, "telegram:7")
        reply = add_message(session, "telegram:7", "bot", "hello", delivery="push").id
    channel = FlakyStorageChannel()
    workers = ChannelWorkers(channel, on_new_message=None)  # type: ignore[arg-type]

    async def two_ticks() -> None:
        with pytest.raises(OperationalError):
            await workers._outbox_tick()
        assert Held.sends == set()
        await workers._outbox_tick()

    asyncio.run(two_ticks())
    assert channel.delivered == ["hello"]
    with session_scope(db_url) as session:
        sent = session.get(Message, reply)
        assert sent.sent_at is not None and sent.delivery_error is None
        assert sent.claimed_by is None
