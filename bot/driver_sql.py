"""Statements on the pooled driver cursor, for the message path's per-turn work.

One process runs every turn under one GIL. Through an ORM session the webhook's
store cost 1.6 ms of it on PostgreSQL, against 0.45 ms on the driver's cursor
(`python -m bench.inbox_store`), and in a profile at 50 conversations SQLAlchemy was
half of the process's GIL time (docs/benchmarks.md). So the statements every turn runs are
written out once, in SQL that SQLite (3.35+) and PostgreSQL both speak (`RETURNING`,
`ON CONFLICT`), with `?` placeholders, and values pass through the columns' own
SQLAlchemy type processors both ways: what is written and read here is exactly what
the ORM writes and reads. Anything rarer stays on the ORM.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy import Column
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DBAPIError

from parley.bot.storage import get_engine

Processor = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


@cache
def _statement(dialect: Dialect, text: str) -> str:
    return text if dialect.paramstyle == "qmark" else text.replace("?", "%s")


@cache
def _bind(dialect: Dialect, column: Column) -> Processor:
    return column.type.dialect_impl(dialect).bind_processor(dialect) or _same


@cache
def _result(dialect: Dialect, column: Column) -> Processor:
    return column.type.dialect_impl(dialect).result_processor(dialect, None) or _same


SQLITE_MAX_PARAMETERS = 999  # (SQLite before 3.32; later ones take 32,766)


class Cursor:
    """A DBAPI cursor inside one transaction, speaking `?` placeholders."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self.dialect = dialect

    def execute(self, text: str, values: Sequence[Any] = ()) -> Cursor:
        self._cursor.execute(_statement(self.dialect, text), tuple(values))
        return self

    def insert(self, into: str, rows: Sequence[Sequence[Any]]) -> Cursor:
        """`INSERT INTO <into> VALUES (…), (…)`, rows in order (ids follow it), as few
        statements as SQLite's parameter limit allows. The drivers' executemany sends
        a statement per row (psycopg2: a round trip each; a turn saves ~6 events)."""
        chunk = max(1, SQLITE_MAX_PARAMETERS // len(rows[0])) if rows else 1
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            marks = "(" + ", ".join("?" * len(part[0])) + ")"
            self.execute(f"INSERT INTO {into} VALUES {', '.join([marks] * len(part))}",
                         [value for row in part for value in row])
        return self

    def one(self) -> tuple[Any, ...] | None:
        return self._cursor.fetchone()  # type: ignore[no-any-return]

    def all(self) -> list[tuple[Any, ...]]:
        return list(self._cursor.fetchall())

    @property
    def rowcount(self) -> int:
        return max(int(self._cursor.rowcount), 0)

    def bind(self, column: Column, value: Any) -> Any:
        """`value` as the driver wants it for `column` (an aware datetime, JSON …)."""
        return _bind(self.dialect, column)(value)

    def read(self, column: Column, value: Any) -> Any:
        """A value the driver returned for `column`, as the ORM would give it."""
        return _result(self.dialect, column)(value)


def _roll_back(connection: Any) -> None:
    """Roll back; a connection that cannot (the server went away) is dropped from
    the pool instead, and the error that got us here is the one raised."""
    try:
        connection.rollback()
    except Exception:
        connection.invalidate()


def transaction(database_url: str | None = None) -> contextlib.AbstractContextManager[Cursor]:
    """A transaction on Parley's database (`on_engine`)."""
    return on_engine(get_engine(database_url))


def dialect(database_url: str | None = None) -> str:
    """"sqlite" or "postgresql", for statements written apart for one of them."""
    return str(get_engine(database_url).dialect.name)


def statement(database_url: str | None = None) -> contextlib.AbstractContextManager[Cursor]:
    """A cursor for one statement, which commits by itself on PostgreSQL: no BEGIN
    and COMMIT round trips (two of the three a one-statement transaction costs, each
    a wait for the GIL and for the server on a busy machine). On SQLite, a
    transaction (`on_engine`)."""
    return on_engine(get_engine(database_url), autocommit=True)


@contextmanager
def on_engine(engine: Engine, autocommit: bool = False) -> Iterator[Cursor]:
    """A cursor on a pooled connection of `engine`, committed on success (or, with
    `autocommit` on PostgreSQL, each statement by itself). Driver errors come out as
    SQLAlchemy's (IntegrityError, OperationalError …), as from a session."""
    connection = engine.raw_connection()
    autocommit = autocommit and engine.dialect.name == "postgresql"
    try:
        if autocommit:
            connection.dbapi_connection.autocommit = True
        cursor = connection.cursor()
        try:
            yield Cursor(cursor, engine.dialect)
            if not autocommit:
                connection.commit()
        except engine.dialect.dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, connection.dbapi_connection, cursor):
                # The server went away (a restart): every pooled connection older than
                # now is stale, as SQLAlchemy's own statements would mark them.
                engine.pool._invalidate(connection, exc, _checkin=False)
            _roll_back(connection)
            raise DBAPIError.instance(None, None, exc, engine.dialect.dbapi.Error) from exc
        except BaseException:
            _roll_back(connection)
            raise
        finally:
            with contextlib.suppress(Exception):  # (closed already if it was dropped)
                cursor.close()
    finally:
        if autocommit and connection.dbapi_connection is not None:
            try:
                connection.dbapi_connection.autocommit = False  # as the pool lends them
            except Exception:
                connection.invalidate()
        connection.close()  # back to the pool
