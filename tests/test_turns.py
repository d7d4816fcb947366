"""What is kept off the turns' thread: a message's encoding (done before its turn;
the worker's side is in test_channel_base) and Rasa's Redis lock store (its round
trips on a thread of their own), against the real encoder and the local Redis."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from rasa.core.lock_store import InMemoryLockStore, LockError, RedisLockStore

from parley.bot.nlu import encoder
from parley.connectors import turns
from parley.connectors.turns import conversation_lock

REDIS_HOST = os.environ.get("PARLEY_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("PARLEY_TEST_REDIS_PORT", "6379"))


@pytest.fixture(autouse=True)
def fresh_encoder_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing prepared, nothing served, whatever ran before."""
    monkeypatch.setattr(encoder, "_prepared", type(encoder._prepared)())
    monkeypatch.setattr(encoder, "_serving", set())


def test_a_prepared_message_is_encoded_once_however_many_turns_take_it(
        encodes: list[tuple[str, str]]) -> None:
    encoder.serve("original")
    text = f"where is my parcel {uuid.uuid4().hex[:6]}"
    encoder.prepare(text)
    encoder.prepare(text)  # the same words in a second conversation
    assert [t for _, t in encodes] == [text]
    first, second = encoder.embed([text]), encoder.embed([text])
    assert [t for _, t in encodes] == [text]  # both turns took the prepared vector
    assert ("original", text) not in encoder._prepared  # nothing left behind
    np.testing.assert_allclose(first, second)
    np.testing.assert_allclose(first, encoder._encode([text], "original"), atol=1e-6)
    encoder.embed([text])
    assert [t for _, t in encodes] == [text] * 3  # a third turn encodes for itself


def test_prepared_vectors_never_taken_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    encoder.serve("original")
    monkeypatch.setattr(encoder, "PREPARED_MAX", 3)
    texts = [f"message {n}" for n in range(5)]
    for text in texts:
        encoder.prepare(text)
    kept = [t for (_, t) in encoder._prepared]
    assert len(kept) == 3 and kept == texts[2:]  # the oldest went first


# -- the lock store ------------------------------------------------------------------
@pytest.fixture()
def redis_store() -> Iterator[RedisLockStore]:
    import redis

    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=2).ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required in CI: {exc}")
        pytest.skip("Redis not reachable")
    store = RedisLockStore(host=REDIS_HOST, port=REDIS_PORT,
                           key_prefix=f"parley-test-{uuid.uuid4().hex[:8]}")
    yield store
    for key in store.red.scan_iter(f"{store.key_prefix}*"):  # (a failed test's leftovers)
        store.red.delete(key)
    store.red.close()


def spy_threads(store: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The threads Rasa's Redis calls ran on (the calls themselves still run)."""
    seen: list[str] = []
    for name in ("get_lock", "save_lock", "delete_lock"):
        real = getattr(store, name)

        def spied(*args: Any, _real: Any = real) -> Any:
            seen.append(threading.current_thread().name)
            return _real(*args)

        monkeypatch.setattr(store, name, spied)
    return seen


def test_the_redis_lock_keeps_turns_of_a_conversation_in_order_off_the_loop(
        redis_store: RedisLockStore, monkeypatch: pytest.MonkeyPatch) -> None:
    conversation = f"telegram:{uuid.uuid4().hex[:8]}"
    threads = spy_threads(redis_store, monkeypatch)
    order: list[str] = []

    async def turn(name: str, hold: float) -> None:
        async with conversation_lock(redis_store, conversation, wait_seconds=0.05):
            order.append(f"{name} in")
            await asyncio.sleep(hold)
            order.append(f"{name} out")

    async def both() -> None:
        first = asyncio.create_task(turn("first", 0.3))
        await asyncio.sleep(0.05)
        await turn("second", 0)
        await first

    asyncio.run(both())
    assert order == ["first in", "first out", "second in", "second out"]
    assert threads and all(name.startswith("parley-lock-store") for name in threads)
    assert redis_store.get_lock(conversation) is None  # nothing left in Redis


def test_a_turn_cancelled_inside_the_lock_gives_its_ticket_back(
        redis_store: RedisLockStore) -> None:
    conversation = f"telegram:{uuid.uuid4().hex[:8]}"

    async def cut_short() -> None:
        inside = asyncio.Event()

        async def stuck() -> None:
            async with conversation_lock(redis_store, conversation):
                inside.set()
                await asyncio.sleep(30)

        task = asyncio.create_task(stuck())
        await asyncio.wait_for(inside.wait(), 10)
        assert redis_store.get_lock(conversation) is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.get_running_loop().run_in_executor(turns._LOCK_CALLS, lambda: None)

    asyncio.run(cut_short())
    assert redis_store.get_lock(conversation) is None  # the next turn need not wait 60 s


def test_a_turn_cancelled_while_its_ticket_is_issued_gives_it_back(
        redis_store: RedisLockStore) -> None:
    conversation = f"telegram:{uuid.uuid4().hex[:8]}"

    async def cancelled_at_once() -> None:
        gate = asyncio.get_running_loop().run_in_executor(turns._LOCK_CALLS, time.sleep, 0.3)
        task = asyncio.create_task(locked())  # its ticket queues behind the sleep
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await gate
        for _ in range(2):  # the issue, then the give-back it queued
            await asyncio.get_running_loop().run_in_executor(turns._LOCK_CALLS, lambda: None)

    async def locked() -> None:
        async with conversation_lock(redis_store, conversation):
            raise AssertionError("cancelled before the lock was had")

    asyncio.run(cancelled_at_once())
    assert redis_store.get_lock(conversation) is None


def test_a_lock_that_expired_while_waiting_is_an_error_as_in_rasa(
        redis_store: RedisLockStore) -> None:
    conversation = f"telegram:{uuid.uuid4().hex[:8]}"
    holder = redis_store.issue_ticket(conversation, 30)

    async def wait_then_expire() -> None:
        async def expire() -> None:  # on the lock-store thread: between its calls
            await asyncio.sleep(0.1)
            await asyncio.get_running_loop().run_in_executor(
                turns._LOCK_CALLS, redis_store.delete_lock, conversation)

        expiring = asyncio.create_task(expire())
        with pytest.raises(LockError):
            async with conversation_lock(redis_store, conversation, wait_seconds=0.05):
                pass
        await expiring

    asyncio.run(wait_then_expire())
    assert holder == 0


def test_an_in_memory_lock_store_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    store = InMemoryLockStore()
    threads = spy_threads(store, monkeypatch)

    async def one() -> None:
        async with conversation_lock(store, "webchat:1"):
            assert store.get_lock("webchat:1") is not None

    asyncio.run(one())
    assert threads and set(threads) == {"MainThread"}  # no round trips to keep off the loop
    assert store.get_lock("webchat:1") is None
