"""Rasa's SQL tracker store, with its blocking SQL on Parley's storage threads.

Rasa 3.6's `SQLTrackerStore` has async methods whose bodies run SQLAlchemy
synchronously, on the Rasa server's event loop: every turn reads and writes the
tracker there, holding up webhook acknowledgements and other turns (invariant 8).
This subclass runs the same code on `storage.off_loop`'s threads, each call in a
short-lived loop of its own; nothing else changes, so the tables, the options in
endpoints.yml and Rasa's behaviour are Rasa's own:

    tracker_store:
      type: parley.bot.tracker_store.SQLTrackerStore
      dialect: "postgresql"    # every option of Rasa's SQL tracker store
      ...
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from rasa.core.tracker_store import SQLTrackerStore as RasaSQLTrackerStore
from rasa.shared.core.trackers import DialogueStateTracker

from parley.bot.storage import off_loop

T = TypeVar("T")


async def _in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never really awaits (it blocks) on a storage thread."""
    return await off_loop(asyncio.run, coroutine)


class SQLTrackerStore(RasaSQLTrackerStore):
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
