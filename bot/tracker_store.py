"""Rasa's SQL tracker store, with its blocking SQL on Parley's storage threads.

Rasa 3.6's `SQLTrackerStore` has async methods whose bodies run SQLAlchemy
synchronously, on the Rasa server's event loop: every turn reads and writes the
tracker there, holding up webhook acknowledgements and other turns (invariant 8).
This subclass runs the same code on `storage.off_loop`'s threads, on an event loop
each thread keeps; nothing else changes, so the tables, the options in
endpoints.yml and Rasa's behaviour are Rasa's own:

    tracker_store:
      type: parley.bot.tracker_store.SQLTrackerStore
      dialect: "postgresql"    # every option of Rasa's SQL tracker store
      ...
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from rasa.core.tracker_store import SQLTrackerStore as RasaSQLTrackerStore
from rasa.shared.core.trackers import DialogueStateTracker
from sqlalchemy import create_engine, event
from sqlalchemy.orm import sessionmaker

from parley.bot.storage import POSTGRESQL_CONNECT_ARGS, off_loop, postgresql_timeouts

T = TypeVar("T")


_thread = threading.local()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    # A loop per storage thread, kept: `asyncio.run` built and tore down one per call,
    # ~1 ms of the GIL each, three or four times a turn.
    loop = getattr(_thread, "loop", None)
    if loop is None or loop.is_closed():
        loop = _thread.loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:  # what asyncio.run did: nothing the call left behind runs in a later one
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))


async def _in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never really awaits (it blocks) on a storage thread."""
    return await off_loop(_run, coroutine)


class SQLTrackerStore(RasaSQLTrackerStore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.engine.dialect.name == "postgresql":
            # Rasa's engine has no timeouts: after a database restart a call could wait
            # for ever, and every turn behind it. The same limits as Parley's own engine.
            self.engine.dispose()
            self.engine = create_engine(self.engine.url, pool_pre_ping=True,
                                        connect_args=POSTGRESQL_CONNECT_ARGS)
            event.listen(self.engine, "connect", postgresql_timeouts)
            self.sessionmaker = sessionmaker(bind=self.engine)

    async def keys(self) -> Iterable[str]:
        return await _in_thread(super().keys())

    async def _retrieve(self, sender_id: str, fetch_events_from_all_sessions: bool
                        ) -> DialogueStateTracker | None:
        return await _in_thread(super()._retrieve(sender_id, fetch_events_from_all_sessions))

    async def save(self, tracker: DialogueStateTracker) -> None:
        if self.event_broker is not None:  # a broker may be bound to this loop: Rasa's way
            await super().save(tracker)
            return
        await _in_thread(super().save(tracker))
