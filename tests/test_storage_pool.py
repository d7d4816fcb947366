"""The storage pool keeps a connection for every thread that uses it at once."""

from __future__ import annotations

import threading

from parley.bot import driver_sql, storage


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
    assert engine.pool.size() >= threads  # type: ignore[attr-defined]
