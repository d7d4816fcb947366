"""Rasa's tracker store runs its SQL off the Rasa server's event loop, and a turn's
statements on the driver cursor read and write exactly what Rasa's own code does."""

from __future__ import annotations

import asyncio
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from rasa.core.tracker_store import SQLTrackerStore as RasaSQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    BotUttered,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker
from sqlalchemy import event

from parley.bot.tracker_store import SQLTrackerStore
from tests.conftest import POSTGRES_URL

with warnings.catch_warnings():  # Rasa warns about slot auto-fill for any slot given so
    warnings.simplefilter("ignore", UserWarning)
    DOMAIN = Domain.from_dict({"version": "3.1", "intents": ["greet", "thanks"], "slots": {
        "order": {"type": "text", "mappings": [{"type": "custom"}]}}})


def test_sql_runs_on_storage_threads_and_trackers_round_trip(tmp_path: Path) -> None:
    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(tmp_path / "t.db"))
    threads: list[int] = []
    event.listen(store.engine, "checkout",
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
    assert threads and loop_thread not in threads  # every connection used off the loop


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path
           ) -> Iterator[tuple[SQLTrackerStore, RasaSQLTrackerStore]]:
    """Ours and Rasa's own, on the same database."""
    if request.param == "sqlite":
        options = {"dialect": "sqlite", "db": str(tmp_path / "t.db")}
    else:
        request.getfixturevalue("pg_url")  # skipped when unreachable, failed in CI
        server = sa.engine.make_url(POSTGRES_URL)
        options = {"dialect": "postgresql", "host": server.host, "port": server.port,
                   "username": server.username, "password": server.password,
                   "db": f"tracker_{uuid.uuid4().hex[:8]}", "login_db": server.database}
    ours = SQLTrackerStore(DOMAIN, **options)
    rasas = RasaSQLTrackerStore(DOMAIN, **{**options, "login_db": None})
    yield ours, rasas
    ours.engine.dispose()
    rasas.engine.dispose()
    if request.param == "postgresql":
        admin = sa.create_engine(POSTGRES_URL, future=True, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{options["db"]}" WITH (FORCE)'))
        admin.dispose()


def conversation(sender: str) -> list[list[object]]:
    """Two sessions: the second begins with `session_started` and sets a slot."""
    first = [ActionExecuted("action_session_start"), SessionStarted(timestamp=100.0),
             ActionExecuted("action_listen", timestamp=100.5),
             UserUttered("hi", {"name": "greet", "confidence": 0.9}, timestamp=101.0),
             BotUttered("Hello!", timestamp=102.0),
             ActionExecuted("action_listen", timestamp=102.5)]
    second = [ActionExecuted("action_session_start", timestamp=200.0),
              SessionStarted(timestamp=200.0), SlotSet("order", "A-1", timestamp=200.1),
              UserUttered("thanks", {"name": "thanks", "confidence": 0.8}, timestamp=201.0),
              BotUttered("You're welcome", timestamp=202.0)]
    return [first, second]


def test_the_cursor_path_reads_and_writes_what_rasas_code_does(
        stores: tuple[SQLTrackerStore, RasaSQLTrackerStore]) -> None:
    ours, rasas = stores
    assert ours._cursor_sql()

    async def run() -> None:
        for writer, reader, sender in ((ours, rasas, "telegram:7"),
                                       (rasas, ours, "telegram:8")):
            events: list[object] = []
            for session in conversation(sender):
                events += session
                tracker = DialogueStateTracker.from_events(sender, events, DOMAIN.slots)
                await writer.save(tracker)  # saved after each session: only new events
                back = await reader.retrieve(sender)
                expected = await rasas.retrieve(sender)
                assert back is not None and expected is not None
                assert back.current_state() == expected.current_state()
                assert [e.as_dict() for e in back.events] == \
                    [e.as_dict() for e in expected.events]
            # The latest session only, from its `session_started`; the slot it set.
            assert [e.text for e in back.events if isinstance(e, UserUttered)] == ["thanks"]
            assert back.get_slot("order") == "A-1"
            full = await reader.retrieve_full_tracker(sender)
            assert full is not None and [e.text for e in full.events
                                         if isinstance(e, UserUttered)] == ["hi", "thanks"]
            # Nothing was stored twice.
            with writer.engine.connect() as connection:
                count = connection.execute(sa.text(
                    "SELECT COUNT(*) FROM events WHERE sender_id = :s"), {"s": sender}).scalar()
            assert count == sum(len(s) for s in conversation(sender))
        assert await ours.retrieve("telegram:none") is None

    asyncio.run(run())


def test_a_postgresql_schema_keeps_rasas_search_path_with_our_timeouts(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With POSTGRESQL_SCHEMA Rasa's own code runs, on an engine that keeps Rasa's
    search path (the events table lives in that schema) and adds our timeouts."""
    schema = f"rasa_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_URL, future=True, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    monkeypatch.setenv("POSTGRESQL_SCHEMA", schema)
    server = sa.engine.make_url(POSTGRES_URL)
    store: SQLTrackerStore | None = None
    try:
        store = SQLTrackerStore(DOMAIN, dialect="postgresql", host=server.host,
                                port=server.port, username=server.username,
                                password=server.password, db=server.database)
        assert not store._cursor_sql()
        events = conversation("telegram:9")[0]
        tracker = DialogueStateTracker.from_events("telegram:9", events, DOMAIN.slots)

        async def run() -> DialogueStateTracker | None:
            await store.save(tracker)
            return await store.retrieve("telegram:9")

        back = asyncio.run(run())
        assert back is not None and [e.text for e in back.events
                                     if isinstance(e, UserUttered)] == ["hi"]
        with store.engine.connect() as connection:
            assert connection.execute(sa.text("SHOW search_path")).scalar() == schema
            assert connection.execute(sa.text("SHOW statement_timeout")).scalar() == "30s"
        with admin.connect() as connection:
            assert connection.execute(sa.text(
                f'SELECT COUNT(*) FROM "{schema}".events WHERE sender_id = :s'),
                {"s": "telegram:9"}).scalar() == len(events)
    finally:
        if store is not None:
            store.engine.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
