"""What the channel base adds around a Rasa turn."""

from __future__ import annotations

import asyncio
import logging

import pytest
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage

from parley.connectors.base import TurnFailed, rasa_turn


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
