"""What the channel base adds around a Rasa turn."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from rasa.core.agent import Agent
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.shared.core.events import BotUttered, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from sqlalchemy.exc import OperationalError

from parley.bot import inbox
from parley.bot.conversations import Message, add_message, ensure_conversation, transcript
from parley.bot.model_freshness import model_path
from parley.bot.outbox import Send
from parley.bot.storage import session_scope
from parley.connectors.base import (
    MESSAGE_ID,
    OWNER,
    ChannelWorkers,
    Collector,
    Held,
    ParleyInput,
    TurnFailed,
    at_most_once,
    rasa_turn,
    recorded_replies,
)
from tests import REPO_ROOT


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


@pytest.fixture(scope="module")
def agent() -> Any:
    """The demo bot's trained model, with Rasa's in-memory tracker and lock stores."""
    path = model_path(REPO_ROOT)
    if not path.exists():
        pytest.fail("no trained model: run `make test` (it trains first)")
    return Agent.load(str(path))


def stored(text: str, message_id: int, conversation_id: str) -> UserMessage:
    return UserMessage(text, Collector("webchat"), conversation_id, input_channel="webchat",
                       metadata={MESSAGE_ID: message_id})


def texts(message: UserMessage) -> list[str]:
    return [m.get("text") for m in message.output_channel.messages]  # type: ignore[union-attr]


def user_events(agent: Any, conversation_id: str) -> list[UserUttered]:
    tracker = asyncio.run(agent.tracker_store.retrieve(conversation_id))
    return [e for e in tracker.events if isinstance(e, UserUttered)]


# Rasa's own expected warning about the demo's slots (rasa.utils.common filters it in
# its CLI, which these tests do not go through).
RASA_SLOT_WARNING = "ignore:Slot auto-fill has been removed:UserWarning"


@pytest.mark.filterwarnings(RASA_SLOT_WARNING)
def test_a_message_taken_again_gets_the_turn_that_already_ran(agent: Any) -> None:
    """A worker whose lease ran out after Rasa's turn (or whose process died before
    recording the answer): the next worker's try replays that turn's replies."""
    first = stored("hello", 7, "webchat:fence")
    asyncio.run(rasa_turn(agent.handle_message, first))
    assert texts(first)  # the greeting
    again = stored("hello", 7, "webchat:fence")
    asyncio.run(rasa_turn(at_most_once(agent, 7), again))
    assert texts(again) == texts(first)
    assert [m.get("utter_action") for m in again.output_channel.messages] == \
        [m.get("utter_action") for m in first.output_channel.messages]  # type: ignore[union-attr]
    assert len(user_events(agent, "webchat:fence")) == 1  # Rasa saw one turn
    # Another stored message is a turn of its own.
    other = stored("what are your opening hours", 8, "webchat:fence")
    asyncio.run(rasa_turn(at_most_once(agent, 8), other))
    assert texts(other) and texts(other) != texts(first)
    assert len(user_events(agent, "webchat:fence")) == 2


@pytest.mark.filterwarnings(RASA_SLOT_WARNING)
def test_a_retry_waits_for_the_turn_still_running(agent: Any) -> None:
    """Both tries at once: the retry waits on Rasa's conversation lock, then finds
    the first turn's answer instead of running a second turn."""
    first, again = stored("thanks", 9, "webchat:race"), stored("thanks", 9, "webchat:race")

    async def both() -> None:
        running = asyncio.ensure_future(rasa_turn(agent.handle_message, first))
        await asyncio.sleep(0)  # the first turn holds the lock
        await asyncio.gather(running, rasa_turn(at_most_once(agent, 9), again))

    asyncio.run(both())
    assert texts(first) and texts(again) == texts(first)
    assert len(user_events(agent, "webchat:race")) == 1


def test_recorded_replies_are_only_those_of_that_turn() -> None:
    tracker = DialogueStateTracker.from_events("c", [
        UserUttered("hi", metadata={MESSAGE_ID: 1}), BotUttered("hello"),
        UserUttered("bye", metadata={MESSAGE_ID: 2}), BotUttered("see you"),
        BotUttered("take care", metadata={"utter_action": "utter_goodbye"}),
        UserUttered("typed into Rasa directly"), BotUttered("?")])
    assert [r["text"] for r in recorded_replies(tracker, 1) or []] == ["hello"]
    replies = recorded_replies(tracker, 2) or []
    assert [r["text"] for r in replies] == ["see you", "take care"]
    assert replies[1]["utter_action"] == "utter_goodbye"
    assert recorded_replies(tracker, 3) is None


class Silent(ParleyInput):
    """A push channel whose sends are not under test."""

    @classmethod
    def name(cls) -> str:
        return "telegram"

    async def deliver(self, send: Send) -> None:
        pass


@pytest.mark.filterwarnings(RASA_SLOT_WARNING)
def test_a_worker_that_lost_its_lease_mid_turn_leaves_one_turn(agent: Any, db_url: str,
                                                               always_open: None) -> None:
    """The worker's own path: its lease runs out during the turn, so the answer is
    not recorded; the next try (attempt 2) records that turn's replies, and Rasa's
    tracker holds one turn."""
    conversation = "telegram:4242"
    stored_id = inbox.store(conversation, "hello", platform_message_id="u1", database_url=db_url)
    workers = ChannelWorkers(Silent(), on_new_message=agent.handle_message)
    workers.app = SimpleNamespace(ctx=SimpleNamespace(agent=agent))
    rasa = agent.processor

    async def lease_runs_out_during_the_turn(message: UserMessage) -> None:
        await rasa.handle_message(message)
        inbox.release(conversation, OWNER, db_url)
        assert inbox.claim("telegram", "other", 30, 10, db_url) == [conversation]

    async def two_tries() -> None:
        assert inbox.claim("telegram", OWNER, 30, 10, db_url) == [conversation]
        first = inbox.begin(conversation, OWNER, 30, db_url)
        assert first is not None and first.id == stored_id
        workers.app.ctx.agent = SimpleNamespace(
            is_ready=agent.is_ready, lock_store=agent.lock_store,
            tracker_store=agent.tracker_store,
            processor=SimpleNamespace(handle_message=lease_runs_out_during_the_turn))
        await workers._process(first)
        assert [m.author for m in transcript(conversation, db_url)] == ["customer"]
        inbox.release(conversation, "other", db_url)  # the other process died too
        workers.app.ctx.agent = agent
        assert inbox.claim("telegram", OWNER, 30, 10, db_url) == [conversation]
        again = inbox.begin(conversation, OWNER, 30, db_url)
        assert again is not None and (again.id, again.attempts) == (stored_id, 2)
        await workers._process(again)

    asyncio.run(two_tries())
    lines = transcript(conversation, db_url)
    assert lines[0].author == "customer" and len(lines) > 1
    assert all(m.author == "bot" for m in lines[1:])
    assert inbox.state_of(stored_id, db_url) == "answered"
    assert len(user_events(agent, conversation)) == 1
