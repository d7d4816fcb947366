"""The outbox: everything we send on platforms we call (bot replies, notices, agent
replies) waits here as a `push` message until the platform accepted it.

A sender claims a conversation's pending messages in order (a lease, like the
inbox's), sends them, and marks each sent only after the platform said yes. A
retryable failure backs off and keeps the conversation's later messages behind it;
a permanent one is kept on the message with the platform's reason for the desk.
Bot replies are checked against the owner once more just before they go out: after
an agent's claim, none does (invariant 1).

Where a double send can still happen: the platform accepted a message and the
process died before `sent` committed. The next sender sends it again; see
docs/reliability.md for how often the fault tests saw it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from parley.bot import driver_sql, events
from parley.bot.conversations import Conversation, Message
from parley.bot.handoff.tickets import Ticket
from parley.bot.storage import session_scope, utcnow

MAX_SEND_ATTEMPTS = 8  # then the message is shown to agents as not delivered
MAX_BACKOFF = 300.0
WITHHELD = "not sent: a person took over the conversation"


@dataclass(frozen=True)
class Send:
    id: int
    conversation_id: str
    author: str
    text: str
    payload: dict[str, Any] | None
    attempts: int

    @property
    def message(self) -> dict[str, Any]:
        """What the platform module sends: Rasa's reply shape."""
        return {"text": self.text, **(self.payload or {})}


def _pending() -> Any:
    return (Message.delivery == "push", Message.sent_at.is_(None),
            Message.delivery_error.is_(None))


# `_pending()` in SQL, for the messages table under the alias `m` or as itself.
_PENDING_SQL = "{m}delivery = 'push' AND {m}sent_at IS NULL AND {m}delivery_error IS NULL"
_CLAIMED_UNTIL = Message.__table__.c.claimed_until
_RETRY_AT = Message.__table__.c.retry_at
_PAYLOAD = Message.__table__.c.payload
_SENT_AT = Message.__table__.c.sent_at


def claim(channel: str, owner: str, lease_seconds: float, limit: int = 100,
          database_url: str | None = None) -> list[Send]:
    """Take pending messages of this channel, oldest first. A conversation whose
    oldest pending message is held by another sender or waiting for a retry gives
    nothing: its order is kept. (On the driver cursor: it runs after every turn.)"""
    now = utcnow()
    taken: list[Send] = []
    blocked: set[str] = set()
    with driver_sql.transaction(database_url) as cursor:
        rows = cursor.execute(
            "SELECT m.id, m.conversation_id, m.author, m.text, m.payload, m.attempts, "
            "m.claimed_until, m.retry_at FROM messages m JOIN conversations c ON c.id = "
            f"m.conversation_id WHERE c.channel = ? AND {_PENDING_SQL.format(m='m.')} "
            "ORDER BY m.id LIMIT ?",
            (channel, limit)).all()
        if not rows:
            return taken
        at = cursor.bind(_CLAIMED_UNTIL, now)
        until = cursor.bind(_CLAIMED_UNTIL, now + timedelta(seconds=lease_seconds))
        for id_, conversation_id, author, text, payload, attempts, claimed, retry in rows:
            if conversation_id in blocked:
                continue
            claimed_until = cursor.read(_CLAIMED_UNTIL, claimed)
            retry_at = cursor.read(_RETRY_AT, retry)
            free = (claimed_until is None or claimed_until < now) and \
                (retry_at is None or retry_at <= now)
            won = free and cursor.execute(
                "UPDATE messages SET claimed_by = ?, claimed_until = ? WHERE id = ? AND "
                f"{_PENDING_SQL.format(m='')} AND (claimed_until IS NULL OR claimed_until < ?)",
                (owner, until, id_, at)).rowcount == 1
            if not won:
                blocked.add(conversation_id)
                continue
            taken.append(Send(int(id_), conversation_id, author, text,
                              cursor.read(_PAYLOAD, payload), attempts or 0))
    return taken


def person_holds(conversation_id: str, database_url: str | None = None) -> bool:
    """Whether an agent (or someone in the platform's own inbox) holds the
    conversation now: then no bot reply goes out."""
    with session_scope(database_url) as session:
        return _person_holds(session, conversation_id)


def _person_holds(session: Any, conversation_id: str) -> bool:
    return session.execute(
        select(Ticket.id).where(Ticket.conversation_id == conversation_id,
                                Ticket.status == "assigned").limit(1)
    ).first() is not None


def confirm(send: Send, owner: str, lease_seconds: float,
            database_url: str | None = None) -> str:
    """Just before a send: "send" if the claim is still ours (renewed for the send),
    "withhold" for a bot reply after a person took over, "skip" if the claim ran out
    (another sender has the message: sending too would double it)."""
    with driver_sql.transaction(database_url) as cursor:
        until = cursor.bind(_CLAIMED_UNTIL, utcnow() + timedelta(seconds=lease_seconds))
        ours = cursor.execute(
            "UPDATE messages SET claimed_until = ? WHERE id = ? AND claimed_by = ? AND "
            f"{_PENDING_SQL.format(m='')}",
            (until, send.id, owner)).rowcount == 1
        if not ours:
            return "skip"
        if send.author == "bot" and cursor.execute(
                "SELECT id FROM tickets WHERE conversation_id = ? AND status = 'assigned' "
                "LIMIT 1", (send.conversation_id,)).one() is not None:
            return "withhold"
        return "send"


def _finish(message_id: int, owner: str, **values: Any) -> Any:
    return (update(Message).where(Message.id == message_id, Message.claimed_by == owner)
            .values(claimed_by=None, claimed_until=None, **values)
            .execution_options(synchronize_session=False))


def sent(message_id: int, owner: str, database_url: str | None = None) -> None:
    with driver_sql.transaction(database_url) as cursor:
        cursor.execute("UPDATE messages SET claimed_by = NULL, claimed_until = NULL, "
                       "sent_at = ? WHERE id = ? AND claimed_by = ?",
                       (cursor.bind(_SENT_AT, utcnow()), message_id, owner))


def release(message_ids: list[int], owner: str, database_url: str | None = None) -> None:
    """Give back claims not attempted (behind a message that must wait)."""
    if not message_ids:
        return
    with session_scope(database_url) as session:
        session.execute(
            update(Message).where(Message.id.in_(message_ids), Message.claimed_by == owner)
            .values(claimed_by=None, claimed_until=None)
            .execution_options(synchronize_session=False))


def retry_later(send: Send, owner: str, reason: str, retry_after: float | None = None,
                database_url: str | None = None) -> bool:
    """Back off and try again; after MAX_SEND_ATTEMPTS the message is failed with
    `reason`. Returns True when it gave up."""
    attempts = send.attempts + 1
    if attempts >= MAX_SEND_ATTEMPTS:
        failed(send, owner, f"{reason} ({attempts} tries)", database_url)
        return True
    delay = retry_after if retry_after else min(MAX_BACKOFF, 2.0 ** attempts)
    with session_scope(database_url) as session:
        session.execute(_finish(send.id, owner, attempts=attempts,
                                retry_at=utcnow() + timedelta(seconds=delay)))
    return False


def failed(send: Send, owner: str, reason: str, database_url: str | None = None) -> None:
    """Never going out: kept with the platform's reason, which the desk shows."""
    with session_scope(database_url) as session:
        session.execute(_finish(send.id, owner, delivery_error=reason[:300]))
        ticket_id = session.execute(
            select(Message.ticket_id).where(Message.id == send.id)).scalar_one_or_none()
        events.publish(session, "message", ticket_id=ticket_id,
                       conversation_id=send.conversation_id, author="system",
                       message_id=send.id, delivery_error=reason[:300])


def withhold(send: Send, owner: str, database_url: str | None = None) -> None:
    with session_scope(database_url) as session:
        session.execute(_finish(send.id, owner, delivery_error=WITHHELD))


def pending_count(channel: str | None = None, database_url: str | None = None) -> int:
    from sqlalchemy import func

    with session_scope(database_url) as session:
        query = select(func.count()).select_from(Message).where(*_pending())
        if channel:
            query = query.join(Conversation, Conversation.id == Message.conversation_id) \
                .where(Conversation.channel == channel)
        return int(session.execute(query).scalar() or 0)
