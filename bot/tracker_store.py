"""Rasa's SQL tracker store, with its blocking SQL on Parley's storage threads.

Rasa 3.6's `SQLTrackerStore` has async methods whose bodies run SQLAlchemy
synchronously, on the Rasa server's event loop: every turn reads and writes the
tracker there, holding up webhook acknowledgements and other turns (invariant 8).
This subclass runs the same code on `storage.off_loop`'s threads, on an event loop
each thread keeps, and a turn's read and write of the latest session as the same
statements on the driver cursor (SQLite, PostgreSQL); the tables, the options in
endpoints.yml and Rasa's behaviour are Rasa's own:

    tracker_store:
      type: parley.bot.tracker_store.SQLTrackerStore
      dialect: "postgresql"    # every option of Rasa's SQL tracker store
      ...
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from rasa.core.constants import POSTGRESQL_SCHEMA
from rasa.core.tracker_store import SQLTrackerStore as RasaSQLTrackerStore
from rasa.core.tracker_store import create_engine_kwargs
from rasa.shared.core.events import SessionStarted
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY
from sqlalchemy import create_engine, event
from sqlalchemy.orm import sessionmaker

from parley.bot import driver_sql
from parley.bot.storage import (
    POSTGRESQL_CONNECT_ARGS,
    off_loop,
    ping_when_rested,
    postgresql_timeouts,
)

T = TypeVar("T")
# The events of the latest session: from its last `session_started` on, or all of
# them if it has none (three parameters: the sender id each time).
_SESSION_START = ("(SELECT MAX(timestamp) FROM events WHERE sender_id = ? AND "
                  f"type_name = '{SessionStarted.type_name}')")
_LATEST_SESSION = (f"FROM events WHERE sender_id = ? AND (timestamp >= {_SESSION_START} "
                   f"OR {_SESSION_START} IS NULL)")


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
            # Rasa's own options stay (POSTGRESQL_SCHEMA's search path, the pool size),
            # except where Rasa drops them itself: it made the database (`login_db`).
            rasas = {} if kwargs.get("login_db") else create_engine_kwargs(self.engine.url)
            connect_args = {**POSTGRESQL_CONNECT_ARGS, **rasas.pop("connect_args", {})}
            self.engine.dispose()
            self.engine = create_engine(self.engine.url, connect_args=connect_args,
                                        **rasas)
            ping_when_rested(self.engine)
            event.listen(self.engine, "connect", postgresql_timeouts)
            self.sessionmaker = sessionmaker(bind=self.engine)

    def _cursor_sql(self) -> bool:
        """Whether a turn's reads and writes may skip the ORM: SQLite or PostgreSQL
        in the default schema (Rasa's other dialects and POSTGRESQL_SCHEMA keep
        Rasa's own code)."""
        return self.engine.dialect.name in ("sqlite", "postgresql") and \
            not os.environ.get(POSTGRESQL_SCHEMA)

    async def keys(self) -> Iterable[str]:
        return await _in_thread(super().keys())

    async def _retrieve(self, sender_id: str, fetch_events_from_all_sessions: bool
                        ) -> DialogueStateTracker | None:
        if fetch_events_from_all_sessions or not self._cursor_sql():
            return await _in_thread(super()._retrieve(sender_id,
                                                      fetch_events_from_all_sessions))
        return await off_loop(self._retrieve_session, sender_id)

    async def save(self, tracker: DialogueStateTracker) -> None:
        if self.event_broker is not None:  # a broker may be bound to this loop: Rasa's way
            await super().save(tracker)
            return
        if not self._cursor_sql():
            await _in_thread(super().save(tracker))
            return
        await off_loop(self._save_session, tracker)

    # -- Rasa's statements for the latest session, on the driver cursor ---------------
    # Rasa builds its ORM query anew for every read and every save (the count of stored
    # events): at 50 conversations 16 % of a Rasa process's GIL time went there. These
    # are the same statements (rasa/core/tracker_store.py `_event_query`, `save`,
    # `_additional_events`), written out once.
    def _retrieve_session(self, sender_id: str) -> DialogueStateTracker | None:
        with driver_sql.on_engine(self.engine) as cursor:
            events = [json.loads(data) for (data,) in cursor.execute(
                f"SELECT data {_LATEST_SESSION} ORDER BY id", (sender_id,) * 3).all()]
        if self.domain and events:
            return DialogueStateTracker.from_dict(sender_id, events, self.domain.slots)
        return None

    def _save_session(self, tracker: DialogueStateTracker) -> None:
        sender_id = tracker.sender_id
        with driver_sql.on_engine(self.engine) as cursor:
            counted = cursor.execute(f"SELECT COUNT(*) {_LATEST_SESSION}",
                                     (sender_id,) * 3).one()
            stored = int(counted[0]) if counted else 0
            rows = []
            for event_ in itertools.islice(tracker.events, stored, len(tracker.events)):
                data = event_.as_dict()
                intent = data.get("parse_data", {}).get("intent", {}).get(INTENT_NAME_KEY)
                rows.append((sender_id, event_.type_name, data.get("timestamp"), intent,
                             data.get("name"), json.dumps(data)))
            if rows:
                cursor.insert("events (sender_id, type_name, timestamp, intent_name, "
                              "action_name, data)", rows)
