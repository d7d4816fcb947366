"""The storage pool keeps a connection for every thread that uses it at once."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from parley.bot import driver_sql, storage
from tests.conftest import POSTGRES_URL


def test_connections_of_every_storage_thread_go_back_to_the_pool(any_db: str) -> None:
    """Held together by all the storage threads, then returned: none is closed as
    overflow. On PostgreSQL a closed one is a server process gone, and the next
    busy moment starts another with cold caches (about two a second under load
    before the pool was sized for the threads; docs/benchmarks.md)."""
    storage.create_schema(any_db)
    engine = storage.get_engine(any_db)
    engine.dispose()  # a fresh pool, whatever earlier tests did with this URL
    threads = storage.DB_THREAD_COUNT + storage.URGENT_THREAD_COUNT
    together = threading.Barrier(threads)
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with driver_sql.transaction(any_db) as cursor:
                assert cursor.execute("SELECT 1").one() == (1,)
                together.wait(timeout=30)
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    workers = [threading.Thread(target=hold) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors
    assert engine.pool.checkedin() == threads  # type: ignore[attr-defined]


def test_a_rested_connection_whose_server_process_ended_is_replaced(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection tested after its rest is replaced when its server process is
    gone (a restart). One used sooner is not tested: its statement fails (every
    caller retries; docs/reliability.md), and that marks every older pooled
    connection stale, so the next caller gets a new one."""
    engine = storage.get_engine(pg_url)
    engine.dispose()
    admin = sa.create_engine(POSTGRES_URL, future=True, isolation_level="AUTOCOMMIT")

    def backend() -> int:
        with driver_sql.transaction(pg_url) as cursor:
            row = cursor.execute("SELECT pg_backend_pid()").one()
            assert row is not None
            return int(row[0])

    def end(pid: int) -> None:
        with admin.connect() as connection:
            assert connection.execute(sa.text("SELECT pg_terminate_backend(:p)"),
                                      {"p": pid}).scalar()
        for _ in range(100):  # until the server process is gone
            with admin.connect() as connection:
                if not connection.execute(sa.text(
                        "SELECT 1 FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).all():
                    break
            time.sleep(0.05)

    try:
        monkeypatch.setattr(storage, "PING_AFTER", 0.0)  # every checkout has rested
        first = backend()
        end(first)
        assert backend() != first  # tested, replaced, no error
        monkeypatch.setattr(storage, "PING_AFTER", 3600.0)  # none has rested
        with driver_sql.transaction(pg_url) as one, driver_sql.transaction(pg_url) as two:
            pooled = {int(c.execute("SELECT pg_backend_pid()").one()[0])  # type: ignore[index]
                      for c in (one, two)}
        for pid in pooled:
            end(pid)
        with pytest.raises(DBAPIError):
            backend()
        assert backend() not in pooled  # the other dead one was not handed out
    finally:
        admin.dispose()
