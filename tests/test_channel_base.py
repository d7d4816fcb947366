"""What the channel base adds around a Rasa turn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from rasa.core.agent import Agent
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.shared.core.events import BotUttered, UserUtteranceReverted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from parley.bot import inbox
from parley.bot.conversations import (
    Conversation,
    Message,
    add_message,
    ensure_conversation,
    transcript,
)
from parley.bot.inbox import Pending
from parley.bot.model_freshness import model_path
from parley.bot.outbox import Send
from parley.bot.storage import session_scope
from parley.connectors import base
from parley.connectors.base import (
    ATTEMPT,
    MESSAGE_ID,
    OWNER,
    AtMostOnce,
    ChannelWorkers,
    Collector,
    Held,
    ParleyInput,
    TurnFailed,
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
    """The demo bot's trained model, with Rasa's in-memory tracker and lock stores
    (no action server: a turn that needs a custom action fails, as when it is down)."""
    path = model_path(REPO_ROOT)
    if not path.exists():
        pytest.fail("no trained model: run `make test` (it trains first)")
    return Agent.load(str(path))


def pending(message_id: int, conversation_id: str, text: str, attempts: int,
            failed_turn: int | None = None) -> Pending:
    return Pending(message_id, conversation_id, text, {}, attempts, failed_turn=failed_turn)


def stored(item: Pending) -> UserMessage:
    return UserMessage(item.text, Collector("webchat"), item.conversation_id,
                       input_channel="webchat",
                       metadata={MESSAGE_ID: item.id, ATTEMPT: item.attempts})


def texts(message: UserMessage) -> list[str]:
    return [m.get("text") for m in message.output_channel.messages]  # type: ignore[union-attr]


def user_events(agent: Any, conversation_id: str) -> list[UserUttered]:
    tracker = asyncio.run(agent.tracker_store.retrieve(conversation_id))
    if tracker is None:
        return []
    return [e for e in tracker.applied_events() if isinstance(e, UserUttered)]


FAILED: dict[int, int] = {}  # message id -> last try whose turn failed (the inbox's part)


def turn(agent: Any, item: Pending, ours: bool = True) -> AtMostOnce:
    async def check() -> tuple[bool, int | None]:
        return ours, FAILED.get(item.id)

    async def mark_failed() -> None:
        FAILED[item.id] = max(FAILED.get(item.id, 0), item.attempts)

    return AtMostOnce(agent, item, check, mark_failed)


def once(agent: Any, item: Pending, ours: bool = True) -> UserMessage:
    message = stored(item)
    asyncio.run(rasa_turn(turn(agent, item, ours), message))
    return message


def attempts(agent: Any, conversation_id: str) -> list[int]:
    return [e.metadata[ATTEMPT] for e in user_events(agent, conversation_id)]


def gated(agent: Any, gate: asyncio.Event) -> SimpleNamespace:
    """The agent, with Rasa's processor held at the gate: a turn in progress."""
    rasa = agent.processor

    async def handle_message(message: UserMessage) -> None:
        await gate.wait()
        await rasa.handle_message(message)

    return SimpleNamespace(is_ready=agent.is_ready, lock_store=agent.lock_store,
                           tracker_store=agent.tracker_store,
                           processor=SimpleNamespace(handle_message=handle_message))


# Rasa's own expected warning about the demo's slots (rasa.utils.common filters it in
# its CLI, which these tests do not go through).
RASA_SLOT_WARNING = "ignore:Slot auto-fill has been removed:UserWarning"


@pytest.mark.filterwarnings(RASA_SLOT_WARNING)
def test_a_message_taken_again_gets_the_turn_that_already_ran(agent: Any) -> None:
    """A worker whose lease ran out after Rasa's turn (or whose process died before
    recording the answer): the next worker's try replays that turn's replies."""
    first = once(agent, pending(7, "webchat:fence", "hello", 1))
    assert texts(first)  # the greeting
    again = once(agent, pending(7, "webchat:fence", "hello", 2))
    assert texts(again) == texts(first)
    assert [m.get("utter_action") for m in again.output_channel.messages] == \
        [m.get("utter_action") for m in first.output_channel.messages]  # type: ignore[union-attr]
    assert len(user_events(agent, "webchat:fence")) == 1  # Rasa saw one turn
    # Another stored message is a turn of its own.
    other = once(agent, pending(8, "webchat:fence", "what are your opening hours", 1))
    assert texts(other) and texts(other) != texts(first)
    assert len(user_events(agent, "webchat:fence")) == 2


@pytest.mark.filterwarnings(RASA_SLOT_WARNING)
def test_a_retry_waits_for_the_turn_still_running(agent: Any) -> None:
    """The first try is mid-turn (held at a gate) when the retry starts: the retry
    waits on Rasa's conversation lock, then finds the first turn's answer instead of
    running a second turn."""
    first_try, retry = pending(9, "webchat:race", "thanks", 1), pending(9, "webchat:race",
                                                                          "thanks", 2)
    first, again = stored(first_try), stored(retry)
    finished: list[str] = []

    async def both() -> None:
        gate = asyncio.Event()

        async def run(name: str, turn: Any) -> None:
            await turn
            finished.append(name)

        running = asyncio.ensure_future(run("first", rasa_turn(
            turn(gated(agent, gate), first_try), first)))
        await asyncio.sleep(0.05)  # the first try holds the lock, its turn not yet run
        retrying = asyncio.ensure_future(run("retry", rasa_turn(turn(agent, retry), again)))
        await asyncio.sleep(1.5)  # the lock store polls every second
        assert finished == [] and await agent.tracker_store.retrieve("webchat:race") is None
        gate.set()
        await asyncio.gather(running, retrying)

    asyncio.run(both())
    assert finished == ["first", "retry"]
    assert texts(first) and texts(again) == texts(first)
    assert len(user_events(agent, "webchat:race")) == 1


@pytest.mark.filterwarnings(RASA_SLOT_WARNING)
def test_a_try_whose_lease_is_gone_runs_no_turn(agent: Any) -> None:
    message = once(agent, pending(11, "webchat:gone", "hello", 1), ours=False)
    assert texts(message) == [] and user_events(agent, "webchat:gone") == []
    ran = once(agent, pending(11, "webchat:gone", "hello", 2))
    assert texts(ran)
    late = once(agent, pending(11, "webchat:gone", "hello", 3), ours=False)  # nor a replay
    assert texts(late) == [] and len(user_events(agent, "webchat:gone")) == 1


@pytest.mark.filterwarnings(RASA_SLOT_WARNING)
def test_a_try_after_a_failed_turn_runs_again_not_replayed(agent: Any) -> None:
    """Rasa saves the tracker of a turn whose custom action failed (the action
    server is down here); the failure is marked before Rasa's lock is let go, and
    the retry runs a turn of its own rather than giving those replies as the answer."""
    conversation = "webchat:failed"
    with pytest.raises(TurnFailed):
        once(agent, pending(12, conversation, "where is my order 10234", 1))
    assert FAILED[12] == 1
    with pytest.raises(TurnFailed):  # run again (and fails again: still no action server)
        once(agent, pending(12, conversation, "where is my order 10234", 2))
    assert attempts(agent, conversation) == [1, 2] and FAILED[12] == 2


@pytest.mark.filterwarnings(RASA_SLOT_WARNING)
def test_only_a_turn_after_the_last_failed_one_is_replayed(agent: Any) -> None:
    """Try 1's turn failed; try 2 ran afresh and its worker died before recording
    it; try 3 replays try 2's turn, not try 1's; after try 3 fails too, try 4 runs."""
    conversation = "webchat:third"
    once(agent, pending(13, conversation, "hello", 1))
    FAILED[13] = 1  # as if try 1's action had failed
    second = once(agent, pending(13, conversation, "hello", 2))
    assert texts(second) and attempts(agent, conversation) == [1, 2]
    third = once(agent, pending(13, conversation, "hello", 3))
    assert texts(third) == texts(second) and attempts(agent, conversation) == [1, 2]
    FAILED[13] = 3  # as if try 3 had run a turn of its own, and it had failed
    fourth = once(agent, pending(13, conversation, "hello", 4))
    assert texts(fourth) and attempts(agent, conversation) == [1, 2, 4]


@pytest.mark.filterwarnings(RASA_SLOT_WARNING)
def test_a_message_with_spaces_around_it_is_still_found(agent: Any) -> None:
    """Rasa strips a message's text; the stored one keeps what the customer sent."""
    first = once(agent, pending(14, "webchat:spaces", "  hello \n", 1))
    again = once(agent, pending(14, "webchat:spaces", "  hello \n", 2))
    assert texts(again) == texts(first) and len(user_events(agent, "webchat:spaces")) == 1


def test_a_try_knows_which_earlier_turn_failed(db_url: str) -> None:
    conversation = "telegram:77"
    stored_id = inbox.store(conversation, "hi", platform_message_id="f1", database_url=db_url)

    def next_try() -> Pending:
        inbox.release(conversation, OWNER, db_url)
        with session_scope(db_url) as session:  # due now rather than after the backoff
            session.get(Message, stored_id).retry_at = None
        assert inbox.claim("telegram", OWNER, 30, 10, db_url) == [conversation]
        item = inbox.begin(conversation, OWNER, 30, db_url)
        assert item is not None and item.id == stored_id
        return item

    assert next_try().failed_turn is None  # the first
    assert inbox.turn_check(stored_id, conversation, OWNER, db_url) == (True, None)
    assert inbox.turn_check(stored_id, conversation, "other", db_url) == (False, None)
    assert not inbox.try_failed(stored_id, "OperationalError: gone", db_url, attempt=1)
    assert next_try().failed_turn is None  # a turn that ran on try 1 still counts
    inbox.turn_failed(stored_id, 2, db_url)  # inside Rasa's lock, by the failed turn
    assert inbox.turn_check(stored_id, conversation, OWNER, db_url) == (True, 2)
    assert not inbox.try_failed(stored_id, "TurnFailed: boom", db_url, attempt=2,
                                failed_turn=True)
    assert next_try().failed_turn == 2 and next_try().failed_turn == 2  # kept
    inbox.turn_failed(stored_id, 1, db_url)  # a late mark of an older try lowers nothing
    third = next_try()
    assert (third.attempts, third.failed_turn) == (5, 2)
    # A slow worker's failure, reported after another try began, changes nothing else.
    assert not inbox.try_failed(stored_id, "TimeoutError", db_url, attempt=4, failed_turn=True)
    with session_scope(db_url) as session:
        message = session.get(Message, stored_id)
        assert (message.inbox_state, message.attempts, message.failed_turn) == (
            "processing", 5, 4)


def test_recorded_replies_are_only_those_of_that_turn() -> None:
    tracker = DialogueStateTracker.from_events("c", [
        UserUttered("hi", metadata={MESSAGE_ID: 1}), BotUttered("hello"),
        UserUttered("bye", metadata={MESSAGE_ID: 2}), BotUttered("see you"),
        BotUttered("take care", metadata={"utter_action": "utter_goodbye"}),
        UserUttered("typed into Rasa directly"), BotUttered("?"),
        UserUttered("order 1", metadata={MESSAGE_ID: 4}), BotUttered("checking"),
        UserUtteranceReverted()])
    assert [r["text"] for r in recorded_replies(tracker, pending(1, "c", "hi", 2)) or []] == [
        "hello"]
    replies = recorded_replies(tracker, pending(2, "c", "bye", 2)) or []
    assert [r["text"] for r in replies] == ["see you", "take care"]
    assert replies[1]["utter_action"] == "utter_goodbye"
    assert recorded_replies(tracker, pending(3, "c", "x", 2)) is None  # no turn
    assert recorded_replies(tracker, pending(1, "c", "other", 2)) is None  # an id used again
    assert recorded_replies(tracker, pending(4, "c", "order 1", 2)) is None  # reverted
    # Without the try's number (an older turn), a known failure leaves nothing to replay.
    assert recorded_replies(tracker, pending(2, "c", "bye", 3, failed_turn=1)) is None


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
    rasa = agent.processor

    async def lease_runs_out_during_the_turn(message: UserMessage) -> None:
        await rasa.handle_message(message)
        inbox.release(conversation, OWNER, db_url)
        assert inbox.claim("telegram", "other", 30, 10, db_url) == [conversation]

    async def two_tries() -> None:
        assert inbox.claim("telegram", OWNER, 30, 10, db_url) == [conversation]
        first = inbox.begin(conversation, OWNER, 30, db_url)
        assert first is not None and first.id == stored_id
        workers.app = SimpleNamespace(ctx=SimpleNamespace(agent=SimpleNamespace(
            is_ready=agent.is_ready, lock_store=agent.lock_store,
            tracker_store=agent.tracker_store,
            processor=SimpleNamespace(handle_message=lease_runs_out_during_the_turn))))
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


class SlowLock:
    """Rasa's lock store, with the lock taking its time (another turn holds it)."""

    def __init__(self, wait: float) -> None:
        self.wait = wait

    @contextlib.asynccontextmanager
    async def lock(self, _conversation_id: str) -> Any:
        await asyncio.sleep(self.wait)
        yield


@pytest.mark.filterwarnings(RASA_SLOT_WARNING)
@pytest.mark.parametrize("how, failed", [
    ("an action failed", 1), ("the turn ran past its time", 1),
    ("the lock took all the time", None), ("an action failed, and its mark", 1)])
def test_the_worker_marks_a_failed_turn_and_only_a_failed_turn(
        agent: Any, db_url: str, always_open: None, monkeypatch: pytest.MonkeyPatch,
        how: str, failed: int | None) -> None:
    monkeypatch.setattr(base, "TURN_TIMEOUT", 0.5)
    conversation = "telegram:31"
    stored_id = inbox.store(conversation, "hello", platform_message_id="t1", database_url=db_url)

    async def rasa(message: UserMessage) -> None:
        if how.startswith("an action failed"):  # what rasa.core.processor._run_action logs
            logging.getLogger("rasa.core.processor").error(
                "Encountered an exception while running action 'action_x'.",
                exc_info=ConnectionError("action server unreachable"))
        else:
            await asyncio.sleep(2)

    workers = ChannelWorkers(Silent(), on_new_message=agent.handle_message)
    workers.app = SimpleNamespace(ctx=SimpleNamespace(agent=SimpleNamespace(
        is_ready=lambda: True, tracker_store=agent.tracker_store,
        lock_store=SlowLock(2 if how == "the lock took all the time" else 0),
        processor=SimpleNamespace(handle_message=rasa))))

    async def one_try() -> None:
        assert inbox.claim("telegram", OWNER, 30, 10, db_url) == [conversation]
        first = inbox.begin(conversation, OWNER, 30, db_url)
        assert first is not None
        await workers._process(first)

    if how == "an action failed, and its mark":  # a database blip inside Rasa's lock
        def blip(*_args: Any, **_kwargs: Any) -> None:
            raise OperationalError("UPDATE messages", {}, Exception("server closed"))

        monkeypatch.setattr(inbox, "turn_failed", blip)
    asyncio.run(one_try())
    with session_scope(db_url) as session:
        message = session.get(Message, stored_id)
        assert (message.inbox_state, message.failed_turn) == ("received", failed)


@pytest.mark.parametrize("configured", ["1", "2"])
def test_a_serving_process_runs_numpy_on_the_threads_it_is_given(
        monkeypatch: pytest.MonkeyPatch, configured: str) -> None:
    """An idle BLAS thread spins on a core between a turn's tiny products: a serving
    process keeps NumPy's BLAS to PARLEY_TURN_THREADS (1 by default)."""
    import sys

    import threadpoolctl

    monkeypatch.setattr(base, "_heartbeat_started", False)
    monkeypatch.setenv("PARLEY_TURN_THREADS", configured)
    started: list[str] = []

    def add_task(coroutine: Any) -> None:
        started.append(coroutine.__qualname__)
        coroutine.close()

    switch = sys.getswitchinterval()
    with threadpoolctl.threadpool_limits(3, user_api="blas"):  # restored on leaving
        ChannelWorkers(FlakyStorageChannel(), on_new_message=None).start(  # type: ignore[arg-type]
            SimpleNamespace(add_task=add_task))
        blas = threadpoolctl.threadpool_info()
        sys.setswitchinterval(switch)
    assert blas and all(pool["num_threads"] == int(configured) for pool in blas
                        if pool["user_api"] == "blas")
    assert len(started) == 3  # the inbox worker, the outbox sender and the heartbeat


@pytest.mark.filterwarnings(RASA_SLOT_WARNING)
def test_a_worker_encodes_the_message_before_the_turn_not_on_the_turns_thread(
        agent: Any, db_url: str, always_open: None, encodes: list[tuple[str, str]]) -> None:
    """The C engine releases the GIL but not its caller: on the thread all turns
    share, encoding held up every other turn."""
    conversation = "telegram:5150"
    text = f"what are your opening hours {uuid.uuid4().hex[:6]}"  # prepared by no other test
    stored_id = inbox.store(conversation, text, platform_message_id="p1", database_url=db_url)
    workers = ChannelWorkers(Silent(), on_new_message=agent.handle_message)
    workers.app = SimpleNamespace(ctx=SimpleNamespace(agent=agent))

    async def one() -> None:
        assert inbox.claim("telegram", OWNER, 30, 10, db_url) == [conversation]
        pending = inbox.begin(conversation, OWNER, 30, db_url)
        assert pending is not None
        await workers._process(pending)

    asyncio.run(one())
    assert inbox.state_of(stored_id, db_url) == "answered"
    ours = [name for name, t in encodes if t == text]
    assert ours and all(name.startswith("parley-encoder") for name in ours), ours


@pytest.mark.filterwarnings(RASA_SLOT_WARNING)
def test_a_conversation_claimed_again_while_its_task_ends_stays_with_that_task(
        agent: Any, db_url: str, always_open: None) -> None:
    """A tick may claim a conversation whose task has just found nothing left (its
    `begin` let the lease go) but has not ended yet: no second task starts on it, and
    that task answers the new message rather than leaving a lease with no task."""
    conversation = "telegram:6060"
    workers = ChannelWorkers(Silent(), on_new_message=agent.handle_message)
    workers.app = SimpleNamespace(ctx=SimpleNamespace(agent=agent))

    async def run() -> None:
        workers.active.add(conversation)  # its task, ending
        stored_id = inbox.store(conversation, "hello", platform_message_id="g1",
                                database_url=db_url)
        before = len(asyncio.all_tasks())
        assert await workers._inbox_tick()  # claimed: the lease is ours again
        assert len(asyncio.all_tasks()) == before  # and no second task on it
        assert workers.again == {conversation}
        await workers._conversation(conversation)  # the ending task goes on
        assert inbox.state_of(stored_id, db_url) == "answered"

    asyncio.run(run())
    assert not workers.active and not workers.again
    with session_scope(db_url) as session:
        lease = session.execute(select(Conversation.lease_owner).where(
            Conversation.id == conversation)).scalar_one()
    assert lease is None  # let go: nothing left behind
