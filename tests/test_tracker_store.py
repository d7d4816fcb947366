"""Rasa's tracker store runs its SQL off the Rasa server's event loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from sqlalchemy import event

from parley.bot.tracker_store import SQLTrackerStore


def test_sql_runs_on_storage_threads_and_trackers_round_trip(tmp_path: Path) -> None:
    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(tmp_path / "t.db"))
    threads: list[int] = []
    event.listen(store.engine, "before_cursor_execute",
                 lambda *_args: threads.append(threading.get_ident()))

    async def turn() -> tuple[DialogueStateTracker | None, list[str], int]:
        tracker = DialogueStateTracker.from_events("telegram:1", [
            ActionExecuted("action_listen"), UserUttered("hi", {"name": "greet"})])
        await store.save(tracker)
        return (await store.retrieve("telegram:1"), list(await store.keys()),
                threading.get_ident())

    back, keys, loop_thread = asyncio.run(turn())
    assert back is not None and [e.text for e in back.events
                                 if isinstance(e, UserUttered)] == ["hi"]
    assert keys == ["telegram:1"]
    assert threads and loop_thread not in threads  # every statement off the loop
