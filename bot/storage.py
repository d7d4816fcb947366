"""Database access shared by the action server, the connectors and the desk.

SQLAlchemy 1.4 as Rasa pins it, used in 2.0 style (`future=True`, `select()`).
Callers use the small functions of the concept modules (`parley.bot.handoff`,
`parley.bot.conversations`, …), never raw sessions spread through handlers.
Schema changes go through Alembic migrations in `bot/migrations/`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import DateTime, create_engine, event
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import Session, declarative_base
from sqlalchemy.pool import QueuePool
from sqlalchemy.types import TypeDecorator

from parley.bot.settings import load_settings

Base = declarative_base()
T = TypeVar("T")
POSTGRESQL_CONNECT_ARGS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10,
                           "keepalives_interval": 5, "keepalives_count": 3}
# Database calls from event loops run here, never on the loop itself (invariant 8).
# Our own threads, not the loop's default executor, which Rasa and Sanic share. Few
# of them: each holds the GIL while it works, and the loop competes for it.
DB_THREAD_COUNT, URGENT_THREAD_COUNT = 4, 2
_DB_THREADS = ThreadPoolExecutor(max_workers=DB_THREAD_COUNT, thread_name_prefix="parley-db")
# Work that must not queue behind the workers' calls: a webhook's store (the platform
# waits for our 2xx) and lease heartbeats (late ones hand our work to another process).
_URGENT_THREADS = ThreadPoolExecutor(max_workers=URGENT_THREAD_COUNT,
                                     thread_name_prefix="parley-db-urgent")
# A pooled connection for every thread above and four spare, so a busy moment does
# not open and close overflow connections (on PostgreSQL each one is a new server
# process with cold caches: under load that churn cost more CPU than our statements;
# docs/benchmarks.md, eighth attempt). Little overflow beyond: every process's
# connections count against PostgreSQL's max_connections (compose.yaml sets it).
POOL_SIZE = DB_THREAD_COUNT + URGENT_THREAD_COUNT + 4
POOL = {"pool_size": POOL_SIZE, "max_overflow": 4}
PING_AFTER = 0.5  # seconds a pooled connection rests before it is tested again
MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    SQLite drops tzinfo; a naive datetime read back and compared with an aware
    one raises, or worse, silently shifts by the server's offset.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use storage.utcnow()")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


def _ensure_sqlite_dir(database_url: str) -> None:
    """The folder (0700 if made here) and the file, created 0600 whatever the umask:
    SQLite gives its -wal and -shm files the database file's mode."""
    if not database_url.startswith("sqlite:///"):
        return
    name = database_url.removeprefix("sqlite:///")
    if not name or name == ":memory:" or name.startswith("file:") or "?" in name:
        return
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _database_url(database_url: str | None) -> str:
    # The variable wins in load_settings too; reading it first spares every transaction
    # of a deployed process (which sets it) a settings lookup (~0.2 ms).
    return database_url or os.environ.get("PARLEY_DATABASE_URL") or \
        load_settings().database_url


def get_engine(database_url: str | None = None) -> Engine:
    """One engine (and pool) per URL and process; None means the configured URL."""
    return _engine(_database_url(database_url))


@cache
def _engine(database_url: str) -> Engine:
    kwargs: dict[str, Any] = {"future": True}
    sqlite = database_url.startswith("sqlite:///")
    if sqlite:
        _ensure_sqlite_dir(database_url)
        # Writers queue on SQLite's file lock instead of failing at once. SQLAlchemy
        # 1.4 defaults file SQLite to NullPool (a new connection, and our PRAGMAs, per
        # transaction: ~4 ms); a pool of connections, each used by one thread at a
        # time, keeps them.
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        kwargs.update(poolclass=QueuePool, **POOL)
    elif database_url.startswith("postgresql"):
        # A restarted or unreachable server must end in an error, never a thread
        # that waits forever (it would hold a worker's loop; see docs/reliability.md).
        kwargs.update(connect_args=POSTGRESQL_CONNECT_ARGS, **POOL)
    engine = create_engine(database_url, **kwargs)
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        ping_when_rested(engine)
        if database_url.startswith("postgresql"):
            event.listen(engine, "connect", postgresql_timeouts)
    return engine


def ping_when_rested(engine: Engine) -> None:
    """Test a pooled connection before use once it has rested PING_AFTER seconds,
    and replace it if the server has gone away meanwhile (a restart). SQLAlchemy's
    `pool_pre_ping` tests at every checkout: 16 extra round trips a bot turn, when
    under load a connection comes back within milliseconds. A dead one found here
    marks the whole pool stale, as a disconnect seen by a statement does
    (`driver_sql.on_engine`), so one caller at most sees the error; every caller
    already treats a failed statement as retryable."""

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_connection: Any, record: Any) -> None:
        record.info["rested_from"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _rests(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["rested_from"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("rested_from", 0.0) < PING_AFTER:
            return
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            dbapi_connection.rollback()  # lent idle, as it came back (autocommit works)
        except Exception as exc:  # this one and every older one are replaced
            raise InvalidatePoolError(f"pooled connection is dead: {exc}") from exc


def postgresql_timeouts(dbapi_connection: Any, _record: Any) -> None:
    """Our statements are short: one that waits this long on a lock or a dead peer is
    stuck, and an error (retried by its loop) beats a thread lost for good."""
    cursor = dbapi_connection.cursor()
    cursor.execute("SET statement_timeout = '30s'; SET lock_timeout = '15s'; "
                   "SET idle_in_transaction_session_timeout = '60s'")
    cursor.close()
    dbapi_connection.commit()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers (the desk's live stream, long-polls) run beside the writer,
    and synchronous=NORMAL drops an fsync per commit; still durable across a
    process crash, which is what invariant 2 asks."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@contextmanager
def session_scope(database_url: str | None = None) -> Iterator[Session]:
    """A transaction: committed on success, rolled back on any error."""
    with Session(get_engine(database_url), future=True, expire_on_commit=False) as session, \
            session.begin():
        yield session


def alembic_config(database_url: str | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", _database_url(database_url).replace("%", "%%"))
    return config


def create_schema(database_url: str | None = None) -> None:
    """Bring the database to the newest migration (idempotent)."""
    from alembic import command

    _ensure_sqlite_dir(_database_url(database_url))
    command.upgrade(alembic_config(database_url), "head")


async def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking storage function without holding up the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_DB_THREADS, functools.partial(fn, *args, **kwargs))


async def off_loop_urgent(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`off_loop` on threads of their own, for the calls someone is waiting on."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_URGENT_THREADS,
                                      functools.partial(fn, *args, **kwargs))
