"""Where a process's Rasa turns run, and what is kept off that thread.

Rasa's turns run on one event loop of their own (`TurnLoop`), so the webhooks'
acknowledgements never wait behind a prediction. Everything that blocks that
loop holds up every other turn of the process, and two things did without
using the GIL: the sentence encoder's C code (41 % of the thread's wall-clock
time at 50 conversations) and Rasa's synchronous Redis lock store (15 %;
docs/benchmarks.md, "Sixth attempt"). Both now run on threads of their own: a
message is encoded before its turn (`prepare_nlu`), and the lock's round trips
go to a lock-store thread (`conversation_lock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from rasa.core.lock_store import LOCK_LIFETIME, InMemoryLockStore, LockError, LockStore

from parley.bot.nlu import encoder

logger = logging.getLogger(__name__)
T = TypeVar("T")

# One thread each: the encoder runs one call at a time anyway (its lock), and one
# lock-store thread keeps this process's lock calls in the order the turns made
# them, as they were on the turns' thread.
_ENCODER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-encoder")
_LOCK_CALLS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-lock-store")


class TurnLoop:
    """An event loop on a thread of its own where Rasa's turns run. Rasa's NLU and
    policies compute without yielding; on the server's loop they held up every
    webhook's acknowledgement for the length of a prediction. Rasa's models run
    here, the webhooks there (TensorFlow releases the GIL while it computes)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="parley-rasa-turns",
                                 daemon=True).start()
                self._loop = loop
            return self._loop

    async def run(self, timeout: float, coroutine: Awaitable[T]) -> T:
        """The turn's result; TimeoutError (and the turn cancelled) after `timeout`:
        a stuck turn is retried, not waited on for ever."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._start())  # type: ignore[arg-type]
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        finally:
            future.cancel()


TURNS = TurnLoop()


async def prepare_nlu(text: str, timeout: float) -> None:
    """Encode a message on the encoder's thread before its turn: the turn then finds
    the vector (`encoder.prepare`). A failure or a wait past `timeout` only means
    the turn encodes for itself."""
    if not text or not encoder.serving():  # (the classifier skips an empty text)
        return
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(_ENCODER, encoder.prepare, text), timeout)
    except Exception as exc:
        logger.warning("could not encode a message before its turn: %s",
                       exc.__class__.__name__)


def _submit(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    return asyncio.get_running_loop().run_in_executor(_LOCK_CALLS, functools.partial(fn, *args))


def _issue(store: LockStore, conversation_id: str) -> tuple[int, bool]:
    """A ticket, and whether the lock is free for it: Rasa's first two steps in one
    hop to the lock-store thread. The ticket is given back if the check fails."""
    ticket = store.issue_ticket(conversation_id, LOCK_LIFETIME)
    try:
        return ticket, _free(store, conversation_id, ticket)
    except BaseException:
        with contextlib.suppress(Exception):
            store.cleanup(conversation_id, ticket)
        raise


def _free(store: LockStore, conversation_id: str, ticket: int) -> bool:
    lock = store.get_lock(conversation_id)
    if not lock:  # expired while waiting: what LockStore._acquire_lock raises
        raise LockError(f"Could not acquire lock for conversation_id '{conversation_id}'.")
    return not lock.is_locked(ticket)


def _free_after_update(store: LockStore, conversation_id: str, ticket: int) -> bool:
    store.update_lock(conversation_id)
    return _free(store, conversation_id, ticket)


def _cleanup(store: LockStore, conversation_id: str, ticket: int) -> None:
    try:
        store.cleanup(conversation_id, ticket)
    except Exception as exc:  # (it expires after LOCK_LIFETIME)
        logger.warning("could not give back the lock ticket of %s: %s", conversation_id,
                       exc.__class__.__name__)


def _give_back_when_issued(store: LockStore, conversation_id: str,
                           issued: asyncio.Future[tuple[int, bool]]) -> None:
    """A ticket whose waiter was cancelled while it was issued is handed back once
    it exists, rather than blocking the conversation until it expires."""
    def done(future: asyncio.Future[tuple[int, bool]]) -> None:
        if not future.cancelled() and future.exception() is None:
            _LOCK_CALLS.submit(_cleanup, store, conversation_id, future.result()[0])
    issued.add_done_callback(done)


@contextlib.asynccontextmanager
async def conversation_lock(store: LockStore, conversation_id: str,
                            wait_seconds: float = 1.0) -> AsyncIterator[None]:
    """Rasa's ticket lock on a conversation, as `LockStore.lock` takes it, with the
    store's calls on the lock-store thread. A store in memory (no round trips) or
    with a way of locking of its own is used as it is."""
    kind = type(store)
    if isinstance(store, InMemoryLockStore) or kind.lock is not LockStore.lock \
            or kind._acquire_lock is not LockStore._acquire_lock:
        async with store.lock(conversation_id):
            yield
        return
    issued = _submit(_issue, store, conversation_id)
    try:
        ticket, free = await asyncio.shield(issued)
    except asyncio.CancelledError:
        _give_back_when_issued(store, conversation_id, issued)
        raise
    try:
        while not free:
            await asyncio.sleep(wait_seconds)
            free = await _submit(_free_after_update, store, conversation_id, ticket)
        yield
    finally:
        # Shielded: a cancelled turn (its time limit) still gives its ticket back.
        await asyncio.shield(_submit(_cleanup, store, conversation_id, ticket))
