"""The SQL of a bot turn on the connectors' hot path, on the driver's own cursor.

Every platform message the bot answers costs two short transactions: store it and
see who owns the conversation, then record the bot's replies. Through an ORM
session (prepared statements) they took 0.83 ms of CPU per turn on SQLite and
1.6 ms on PostgreSQL; on the pooled DBAPI connection 0.12 and 0.49 ms
(`python -m bench.gate_sql`). On a Rasa server saturated by 50 concurrent
conversations that difference was the largest part of the Telegram connector's
overhead (docs/benchmarks.md).

So the statements are written out once, in SQL that SQLite and PostgreSQL both
speak (`ON CONFLICT … DO UPDATE`, `INSERT … SELECT`), and values pass through the
columns' own SQLAlchemy bind processors: rows read back through the ORM exactly
as if it had written them. Anything off the hot path (queue, agent, rating) stays
in the ORM (`connectors/gate.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from parley.bot.conversations import Conversation, Message, channel_of
from parley.bot.handoff import OPEN
from parley.bot.storage import get_engine

_OPEN = ", ".join(f"'{status}'" for status in OPEN)
STATE = ("SELECT c.rating_state, t.id FROM conversations c "
         "LEFT OUTER JOIN tickets t ON t.conversation_id = c.id "
         f"AND t.status IN ({_OPEN}) WHERE c.id = ?")
TOUCH = ("INSERT INTO conversations (id, channel, display_name, rating_state, created_at, "
         "last_customer_at) VALUES (?, ?, ?, 'none', ?, ?) ON CONFLICT (id) DO UPDATE SET "
         "last_customer_at = excluded.last_customer_at{name}")
MESSAGE_COLUMNS = ("conversation_id", "author", "text", "ticket_id", "payload", "delivery",
                   "platform_message_id", "created_at")
INSERT_MESSAGE = (f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) "
                  f"VALUES ({', '.join('?' * len(MESSAGE_COLUMNS))})")


@dataclass(frozen=True)
class State:
    """Who the conversation belongs to, as the gate needs it."""

    rating_state: str | None  # None: a conversation we have not seen
    ticket_id: int | None  # its open ticket (queue or agent), if any

    @property
    def bot_answers(self) -> bool:
        return self.ticket_id is None and self.rating_state != "asked"


Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Prepared:
    """The statements in the driver's placeholder style, and the type processors."""

    state: str
    touch: str
    touch_with_name: str
    insert_message: str
    when: Processor  # an aware UTC datetime, as the driver wants it
    message: tuple[Processor, ...]  # one per MESSAGE_COLUMNS


def _processor(table: Table, column: str, dialect: Dialect) -> Processor:
    process = table.c[column].type.bind_processor(dialect)
    return process or (lambda value: value)


@cache
def _prepared(dialect: Dialect) -> _Prepared:
    def sql(text: str) -> str:
        return text if dialect.paramstyle == "qmark" else text.replace("?", "%s")

    return _Prepared(
        state=sql(STATE), touch=sql(TOUCH.format(name="")),
        touch_with_name=sql(TOUCH.format(name=", display_name = excluded.display_name")),
        insert_message=sql(INSERT_MESSAGE),
        when=_processor(Conversation.__table__, "created_at", dialect),
        message=tuple(_processor(Message.__table__, c, dialect) for c in MESSAGE_COLUMNS))


@contextmanager
def _transaction(database_url: str | None) -> Iterator[tuple[Any, _Prepared]]:
    """A cursor on a pooled connection, committed on success. Driver errors come
    out as SQLAlchemy's (IntegrityError …), as they would from a session."""
    engine = get_engine(database_url)
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            yield cursor, _prepared(engine.dialect)
            connection.commit()
        except engine.dialect.dbapi.Error as exc:
            connection.rollback()
            raise DBAPIError.instance(None, None, exc, engine.dialect.dbapi.Error) from exc
        except BaseException:
            connection.rollback()
            raise
        finally:
            cursor.close()
    finally:
        connection.close()  # back to the pool


def _state(cursor: Any, prepared: _Prepared, conversation_id: str) -> State:
    cursor.execute(prepared.state, (conversation_id,))
    row = cursor.fetchone()
    return State(row[0], row[1]) if row else State(None, None)


def _message_row(prepared: _Prepared, values: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(process(values[c]) for c, process in zip(MESSAGE_COLUMNS, prepared.message,
                                                          strict=True))


def store_for_bot(conversation_id: str, display_name: str, message: dict[str, Any],
                  database_url: str | None = None) -> State:
    """If the bot owns the conversation, store the customer's message (creating the
    conversation, or noting the time and name) and commit. Returns the state read
    first: when `bot_answers` is false nothing was written and the ORM path takes
    over. A redelivered platform id fails the unique index: IntegrityError."""
    with _transaction(database_url) as (cursor, prepared):
        state = _state(cursor, prepared, conversation_id)
        if state.bot_answers:
            when = prepared.when(message["created_at"])
            cursor.execute(prepared.touch_with_name if display_name else prepared.touch,
                           (conversation_id, channel_of(conversation_id), display_name,
                            when, when))
            cursor.execute(prepared.insert_message, _message_row(prepared, message))
        return state


def record_bot_replies(conversation_id: str, messages: list[dict[str, Any]],
                       database_url: str | None = None) -> State:
    """Record the bot's replies (tagged with the open ticket, if the turn opened
    one) unless a rating question is due after them: then nothing is written and
    the returned state says so (`rating_state == "pending"`, no ticket)."""
    with _transaction(database_url) as (cursor, prepared):
        state = _state(cursor, prepared, conversation_id)
        if messages and state.ticket_id is None and state.rating_state == "pending":
            return state
        rows = [_message_row(prepared, {**m, "ticket_id": state.ticket_id}) for m in messages]
        if rows:
            cursor.executemany(prepared.insert_message, rows)
        return state
