"""The driver cursor reads and writes what the ORM does, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from parley.bot import driver_sql
from parley.bot.conversations import Conversation, Message
from parley.bot.storage import create_schema, get_engine, session_scope, utcnow

PAYLOAD = {"buttons": [{"title": "Sim, obrigado", "payload": "/affirm"}], "n": 3}


@pytest.mark.parametrize("microsecond", [123456, 0])
def test_values_written_by_the_orm_read_back_the_same(any_db: str, microsecond: int) -> None:
    create_schema(any_db)
    lease = utcnow().replace(microsecond=microsecond) + timedelta(minutes=5)
    with session_scope(any_db) as session:
        session.add(Conversation(id="telegram:1", channel="telegram", lease_owner="me",
                                 lease_until=lease))
        session.flush()
        session.add(Message(conversation_id="telegram:1", author="bot", text="olá",
                            payload=PAYLOAD, delivery="push"))
    columns = Message.__table__.c
    with driver_sql.transaction(any_db) as cursor:
        until = cursor.execute("SELECT lease_until FROM conversations WHERE id = ?",
                               ("telegram:1",)).one()
        row = cursor.execute("SELECT payload, created_at FROM messages").one()
        assert until is not None and row is not None
        assert cursor.read(Conversation.__table__.c.lease_until, until[0]) == lease
        assert cursor.read(columns.payload, row[0]) == PAYLOAD
        created = cursor.read(columns.created_at, row[1])
        assert created.tzinfo is not None and abs(created - utcnow()) < timedelta(minutes=1)
        # A datetime bound here compares with stored ones as the ORM's would (SQLite
        # compares the text: the format must be the ORM's, whole seconds included).
        column = Conversation.__table__.c.lease_until
        for moved, expected in ((1, 1), (0, 0), (-1, 0)):
            bound = cursor.bind(column, lease + timedelta(microseconds=moved))
            assert cursor.execute("SELECT COUNT(*) FROM conversations WHERE lease_until < ?",
                                  (bound,)).one() == (expected,)
        assert cursor.execute("SELECT COUNT(*) FROM conversations WHERE lease_until = ?",
                              (cursor.bind(column, lease),)).one() == (1,)


def test_values_written_here_read_back_the_same_through_the_orm(any_db: str) -> None:
    create_schema(any_db)
    when = utcnow()
    columns = Message.__table__.c
    with driver_sql.transaction(any_db) as cursor:
        cursor.execute("INSERT INTO conversations (id, channel, display_name, rating_state, "
                       "created_at) VALUES (?, ?, '', 'none', ?)",
                       ("telegram:2", "telegram", cursor.bind(columns.created_at, when)))
        cursor.execute("INSERT INTO messages (conversation_id, author, text, payload, "
                       "delivery, attempts, created_at) VALUES (?, 'bot', ?, ?, 'push', 0, ?)",
                       ("telegram:2", "olá", cursor.bind(columns.payload, PAYLOAD),
                        cursor.bind(columns.created_at, when)))
    with session_scope(any_db) as session:
        message = session.execute(select(Message)).scalar_one()
        assert (message.text, message.payload, message.created_at) == ("olá", PAYLOAD, when)


def test_a_driver_error_is_sqlalchemys_and_nothing_is_kept(any_db: str) -> None:
    create_schema(any_db)
    insert = ("INSERT INTO conversations (id, channel, display_name, rating_state, "
              "created_at) VALUES (?, 'telegram', '', 'none', ?)")
    when = utcnow()
    column = Conversation.__table__.c.created_at
    with pytest.raises(IntegrityError), driver_sql.transaction(any_db) as cursor:
        cursor.execute(insert, ("telegram:3", cursor.bind(column, when)))
        cursor.execute(insert, ("telegram:3", cursor.bind(column, when)))
    with session_scope(any_db) as session:
        assert session.execute(select(Conversation)).first() is None


def test_a_connection_that_cannot_roll_back_is_dropped_and_the_error_kept(
        any_db: str) -> None:
    """The server went away mid-transaction: the error that got us there surfaces
    (not the failed rollback's), and the pool hands out a working connection next."""
    with pytest.raises(ValueError, match="ours"), driver_sql.transaction(any_db) as cursor:
        cursor.execute("SELECT 1")
        cursor._cursor.connection.close()  # as a dead server leaves it
        raise ValueError("ours")
    for _ in range(3):
        with driver_sql.transaction(any_db) as cursor:
            assert cursor.execute("SELECT 1").one() == (1,)


def test_insert_sends_rows_in_chunks_and_their_ids_follow_the_order(any_db: str) -> None:
    """As the tracker store reads events back: by id."""
    chunk = driver_sql.SQLITE_MAX_PARAMETERS // 2
    rows = [((n * 7919) % 1000, f"row {n}") for n in range(chunk * 2 + 7)]  # not sorted
    with driver_sql.transaction(any_db) as cursor:
        key = "INTEGER PRIMARY KEY" if cursor.dialect.name == "sqlite" else "SERIAL PRIMARY KEY"
        cursor.execute(f"CREATE TEMPORARY TABLE chunked (id {key}, n INTEGER, label TEXT)")
        cursor.insert("chunked (n, label)", rows)
        cursor.insert("chunked (n, label)", [])
        back = cursor.execute("SELECT n, label FROM chunked ORDER BY id").all()
        cursor.execute("DROP TABLE chunked")
    assert [tuple(row) for row in back] == rows


def test_a_connection_lent_for_one_statement_goes_back_transactional(any_db: str) -> None:
    storage_engine = get_engine(any_db)
    storage_engine.dispose()  # one pooled connection, lent both times
    with driver_sql.statement(any_db) as cursor:
        assert cursor.execute("SELECT 1").one() == (1,)
    with pytest.raises(RuntimeError), driver_sql.transaction(any_db) as cursor:
        cursor.execute("INSERT INTO conversations (id, channel, display_name, rating_state, "
                       "created_at) VALUES ('telegram:5', 'telegram', '', 'none', ?)",
                       (cursor.bind(Conversation.__table__.c.created_at, utcnow()),))
        raise RuntimeError("rolled back, not committed statement by statement")
    with session_scope(any_db) as session:
        assert session.get(Conversation, "telegram:5") is None
    assert storage_engine.pool.checkedin() == 1  # type: ignore[attr-defined]
