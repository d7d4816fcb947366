"""The one statement pair on the webhook's hot path, on the driver's own cursor.

A webhook answers 2xx once the customer's message is committed, so storing it is
the only work between a platform's request and our answer. Through an ORM session
the store took 0.63 ms of CPU on SQLite and 1.6 ms on PostgreSQL; on the pooled
DBAPI connection 0.13 and 0.45 ms (`python -m bench.inbox_store`), so it runs on
`parley.bot.driver_sql`. Everything after the store (routing, Rasa, the outbox) is
the workers' business (`bot/inbox.py`, `bot/outbox.py`).

A message that carries masked phone numbers or email addresses, or any message of a
WhatsApp conversation (its id is the customer's verified number), also records
their hashes for contacts (`bot/contacts.py`) in the same transaction, one
`INSERT … ON CONFLICT DO NOTHING` each; every other message runs the same two
statements as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parley.bot import driver_sql
from parley.bot.contacts import ContactIdentifier, Evidence
from parley.bot.conversations import Conversation, Message, channel_of

# Both times are this message's on an insert; an update moves only last_customer_at.
_TOUCH = ("INSERT INTO conversations (id, channel, display_name, rating_state, created_at, "
          "last_customer_at) VALUES (?, ?, ?, 'none', ?, ?) ON CONFLICT (id) DO UPDATE SET "
          "last_customer_at = excluded.last_customer_at{name}")
TOUCH = _TOUCH.format(name="")
TOUCH_WITH_NAME = _TOUCH.format(name=", display_name = excluded.display_name")
MESSAGE_COLUMNS = ("conversation_id", "author", "text", "payload", "delivery",
                   "platform_message_id", "inbox_state", "attempts", "created_at")
INSERT_MESSAGE = (f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) "
                  f"VALUES ({', '.join('?' * len(MESSAGE_COLUMNS))}) RETURNING id")
IDENTIFIER_COLUMNS = ("conversation_id", "kind", "hash", "verified", "source", "created_at")
INSERT_IDENTIFIER = (f"INSERT INTO contact_identifiers ({', '.join(IDENTIFIER_COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(IDENTIFIER_COLUMNS))}) "
                     "ON CONFLICT (conversation_id, kind, hash) DO NOTHING")
# PostgreSQL: both in one statement, which commits by itself (one round trip, not
# four: the webhook's 2xx waits on each, and on a busy machine each waits for a core
# and for the GIL). The conversation row is there before the message's foreign key
# is checked, at the end of the statement.
_STORE = ("WITH touched AS ({touch} RETURNING id) INSERT INTO messages "
          f"({', '.join(MESSAGE_COLUMNS)}) SELECT {', '.join('?' * len(MESSAGE_COLUMNS))} "
          "FROM touched RETURNING id")
STORE = _STORE.format(touch=TOUCH)
STORE_WITH_NAME = _STORE.format(touch=TOUCH_WITH_NAME)
_CREATED_AT = Conversation.__table__.c.created_at
_MESSAGE = tuple(Message.__table__.c[name] for name in MESSAGE_COLUMNS)
_IDENTIFIER = tuple(ContactIdentifier.__table__.c[name] for name in IDENTIFIER_COLUMNS)



@dataclass(frozen=True)
class Stored:
    message_id: int
    identifiers: int  # contact identifiers this message recorded (new ones only)


def store_inbound(conversation_id: str, display_name: str, message: dict[str, Any],
                  database_url: str | None = None, evidence: Evidence | None = None
                  ) -> Stored:
    """Store a customer's message in the inbox (creating the conversation, or noting
    the time and name), with the contact identifiers of `evidence`, and commit. A
    redelivered platform id fails the unique index: IntegrityError, nothing stored."""
    if driver_sql.dialect(database_url) == "postgresql" and not (evidence and evidence.rows()):
        with driver_sql.statement(database_url) as cursor:
            when = cursor.bind(_CREATED_AT, message["created_at"])
            row = cursor.execute(STORE_WITH_NAME if display_name else STORE, (
                conversation_id, channel_of(conversation_id), display_name, when, when,
                *(cursor.bind(column, message[name])
                  for name, column in zip(MESSAGE_COLUMNS, _MESSAGE, strict=True)))).one()
            assert row is not None
            return Stored(int(row[0]), 0)
    with driver_sql.transaction(database_url) as cursor:
        when = cursor.bind(_CREATED_AT, message["created_at"])
        cursor.execute(TOUCH_WITH_NAME if display_name else TOUCH,
                       (conversation_id, channel_of(conversation_id), display_name, when, when))
        row = cursor.execute(INSERT_MESSAGE, tuple(
            cursor.bind(column, message[name])
            for name, column in zip(MESSAGE_COLUMNS, _MESSAGE, strict=True))).one()
        assert row is not None
        recorded = 0
        for kind, digest, verified, source in (evidence.rows() if evidence else ()):
            values = (conversation_id, kind, digest, verified, source, message["created_at"])
            recorded += cursor.execute(INSERT_IDENTIFIER, tuple(
                cursor.bind(column, value)
                for value, column in zip(values, _IDENTIFIER, strict=True))).rowcount
        return Stored(int(row[0]), recorded)
