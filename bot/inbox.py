"""The inbox: every customer message is stored before its webhook answers 2xx, then
processed in order per conversation by whichever process holds that conversation's
lease.

States: received -> processing -> answered (the bot or the gate replied), routed
(a person owns it: queue or agent), or failed (the bot kept failing; a person is
asked to take over). A lease is an owner and an expiry on the conversation, kept
alive by its worker's heartbeat; when a process dies its leases run out and any
other process takes the conversation over. Claims are atomic: `FOR UPDATE SKIP
LOCKED` on PostgreSQL, a guarded UPDATE on SQLite (invariant 3).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from parley.bot import contacts, driver_sql, inbox_sql, metrics
from parley.bot.conversations import Conversation, Message, channel_of, message_values
from parley.bot.storage import session_scope, utcnow

PENDING = ("received", "processing")
FINISHED = ("answered", "routed", "failed")
MAX_ATTEMPTS = 3  # tries at a bot turn before a person is asked to take over


@dataclass(frozen=True)
class Pending:
    """A stored customer message, as its worker needs it."""

    id: int
    conversation_id: str
    text: str
    metadata: dict[str, Any]
    attempts: int
    display_name: str = ""
    # The conversation's stored language and its source, as `parley.bot.language` reads them.
    language: str | None = None
    language_source: str | None = None
    # The last try whose Rasa turn failed (`turn_failed`, or a turn cut at its time
    # limit): a turn the tracker holds from that try or before is not the answer.
    failed_turn: int | None = None


def store(conversation_id: str, text: str, *, platform_message_id: str | None = None,
          display_name: str = "", metadata: dict[str, Any] | None = None,
          database_url: str | None = None) -> int | None:
    """Commit the message as received; its id, or None for a redelivery of a
    platform message we already hold (answered or not: the worker has it). A phone
    number or email address it carried (masked), or its WhatsApp conversation's own
    number, is recorded with it and may link conversations (`contacts`)."""
    row = message_values(conversation_id, "customer", text, payload=metadata or None,
                         delivery="none", platform_message_id=platform_message_id,
                         inbox_state="received")
    evidence = contacts.evidence(conversation_id, metadata)
    try:
        stored = inbox_sql.store_inbound(conversation_id, display_name, row, database_url,
                                         evidence)
    except IntegrityError:
        if platform_message_id:
            return None
        raise
    metrics.message_in(channel_of(conversation_id))
    # A phone or email new to this conversation, or one the customer typed (again:
    # rare, and it retries a link that failed before): link by it.
    if stored.identifiers or (evidence is not None and evidence.typed):
        contacts.settle_quietly(conversation_id, database_url)
    return stored.message_id


# The columns whose values pass through type processors (datetimes, JSON).
_LEASE_UNTIL = Conversation.__table__.c.lease_until
_RETRY_AT = Message.__table__.c.retry_at
_PAYLOAD = Message.__table__.c.payload
_FREE = "(lease_until IS NULL OR lease_until < ?)"
_RELEASE = ("UPDATE conversations SET lease_owner = NULL, lease_until = NULL "
            "WHERE id = ? AND lease_owner = ?")
_WAITING = (
    "SELECT m.conversation_id FROM messages m JOIN conversations c ON c.id = "
    "m.conversation_id WHERE m.inbox_state IN ('received', 'processing') AND c.channel = ? "
    "AND (c.lease_until IS NULL OR c.lease_until < ?) GROUP BY m.conversation_id "
    "HAVING MAX(m.retry_at) IS NULL OR MAX(m.retry_at) <= ? ORDER BY MIN(m.id) LIMIT ?")
# Row locks on PostgreSQL: a concurrent claimer skips these rows instead of waiting
# for them; SQLite (one writer at a time) has no such clause and needs none.
_TAKE_LOCKED = (f"UPDATE conversations SET lease_owner = ?, lease_until = ? WHERE id IN "
                f"(SELECT id FROM conversations WHERE id IN ({{ids}}) AND {_FREE} "
                f"FOR UPDATE SKIP LOCKED) RETURNING id")
_TAKE = (f"UPDATE conversations SET lease_owner = ?, lease_until = ? WHERE id IN ({{ids}}) "
         f"AND {_FREE} RETURNING id")


def claim(channel: str, owner: str, lease_seconds: float, limit: int,
          database_url: str | None = None) -> list[str]:
    """Take the leases of up to `limit` conversations of this channel that have
    pending messages and no live lease; returns their ids, oldest waiting first."""
    at = utcnow()
    with driver_sql.transaction(database_url) as cursor:
        now = cursor.bind(_LEASE_UNTIL, at)
        until = cursor.bind(_LEASE_UNTIL, at + timedelta(seconds=lease_seconds))
        waiting = [row[0] for row in cursor.execute(
            _WAITING, (channel, now, now, limit)).all()]
        if not waiting:
            return []
        take = _TAKE if cursor.dialect.name == "sqlite" else _TAKE_LOCKED
        taken = {row[0] for row in cursor.execute(
            take.format(ids=", ".join("?" * len(waiting))),
            (owner, until, *waiting, now)).all()}
        return [conversation_id for conversation_id in waiting if conversation_id in taken]


def begin(conversation_id: str, owner: str, lease_seconds: float,
          database_url: str | None = None) -> Pending | None:
    """The conversation's oldest pending message, now `processing` (one more try),
    with the lease renewed. None when nothing is due or the lease was lost or ran
    out: then the lease is released if still ours, and the worker moves on."""
    now = utcnow()
    with driver_sql.transaction(database_url) as cursor:
        conversation = cursor.execute(
            "SELECT lease_until, display_name, language, language_source FROM conversations "
            "WHERE id = ? AND lease_owner = ?", (conversation_id, owner)).one()
        if conversation is None:
            return None
        lease_until = cursor.read(_LEASE_UNTIL, conversation[0])
        message = None if lease_until is None or lease_until < now else cursor.execute(
            "SELECT id, text, payload, attempts, retry_at, failed_turn FROM messages "
            "WHERE conversation_id = ? AND inbox_state IN ('received', 'processing') "
            "ORDER BY id LIMIT 1", (conversation_id,)).one()
        retry_at = cursor.read(_RETRY_AT, message[4]) if message is not None else None
        if message is None or (retry_at is not None and retry_at > now):
            cursor.execute(_RELEASE, (conversation_id, owner))
            return None
        # Guarded: on SQLite the write may have waited for the lock while the lease ran
        # out and another process took the conversation.
        if cursor.execute(
                "UPDATE conversations SET lease_until = ? WHERE id = ? AND lease_owner = ? "
                "AND lease_until >= ?",
                (cursor.bind(_LEASE_UNTIL, now + timedelta(seconds=lease_seconds)),
                 conversation_id, owner, cursor.bind(_LEASE_UNTIL, now))).rowcount != 1:
            return None
        attempts = (message[3] or 0) + 1
        cursor.execute("UPDATE messages SET inbox_state = 'processing', attempts = ? "
                       "WHERE id = ?", (attempts, message[0]))
        payload = cursor.read(_PAYLOAD, message[2])
        return Pending(int(message[0]), conversation_id, message[1],
                       dict(payload or {}), attempts, conversation[1] or "",
                       conversation[2], conversation[3], message[5])


def live(cursor: driver_sql.Cursor, lease: Sequence[Any], owner: str) -> bool:
    """Whether (lease_owner, lease_until) is `owner`'s, unexpired."""
    until = cursor.read(_LEASE_UNTIL, lease[1])
    return lease[0] == owner and until is not None and until >= utcnow()


def holds(session: Any, conversation_id: str, owner: str) -> bool:
    """Whether `owner` still holds the conversation's lease (inside a transaction)."""
    lease = session.execute(
        select(Conversation.lease_owner, Conversation.lease_until)
        .where(Conversation.id == conversation_id)
    ).one_or_none()
    return lease is not None and lease[0] == owner and lease[1] is not None \
        and lease[1] >= utcnow()


def turn_check(message_id: int, conversation_id: str, owner: str,
               database_url: str | None = None) -> tuple[bool, int | None]:
    """Right before a Rasa turn, inside Rasa's lock on the conversation: whether the
    message is still in progress under `owner`'s live lease (else the worker that
    took the conversation over answers), and the last try whose turn failed, as it
    stands now (a turn that failed just before holds the same lock to mark it)."""
    with driver_sql.transaction(database_url) as cursor:
        row = cursor.execute(
            "SELECT m.inbox_state, m.failed_turn, c.lease_owner, c.lease_until FROM messages m "
            "JOIN conversations c ON c.id = m.conversation_id WHERE m.id = ? "
            "AND c.id = ?", (message_id, conversation_id)).one()
        if row is None:
            return False, None
        return row[0] == "processing" and live(cursor, row[2:], owner), row[1]


def turn_failed(message_id: int, attempt: int, database_url: str | None = None) -> None:
    """Try `attempt`'s Rasa turn failed: what it left in the tracker is not the
    answer (kept as the highest such try)."""
    with session_scope(database_url) as session:
        _mark_failed_turn(session.get(Message, message_id), attempt)


def _mark_failed_turn(message: Message | None, attempt: int) -> None:
    if message is not None and (message.failed_turn or 0) < attempt:
        message.failed_turn = attempt


def release(conversation_id: str, owner: str, database_url: str | None = None) -> None:
    with driver_sql.transaction(database_url) as cursor:
        cursor.execute(_RELEASE, (conversation_id, owner))


def try_failed(message_id: int, error: str, database_url: str | None = None, *,
               attempt: int | None = None, failed_turn: bool = False) -> bool:
    """Try `attempt` raised: try again after a backoff, or, after MAX_ATTEMPTS, give
    up (state `failed`); nothing when another try has begun since. `failed_turn`:
    Rasa's turn itself failed (a turn cut at its time limit), so whatever it left
    in the tracker is not the answer. Returns True when it gave up: a person must
    take over."""
    with session_scope(database_url) as session:
        message = session.get(Message, message_id)
        if failed_turn and attempt is not None:
            _mark_failed_turn(message, attempt)
        if message is None or message.inbox_state != "processing" \
                or (attempt is not None and message.attempts != attempt):
            return False
        if (message.attempts or 0) >= MAX_ATTEMPTS:
            message.inbox_state = "failed"
            message.delivery_error = f"the bot could not process it: {error}"[:300]
            return True
        message.inbox_state = "received"
        message.retry_at = utcnow() + timedelta(seconds=2 ** (message.attempts or 0))
        return False


def heartbeat(owner: str, lease_seconds: float, conversations: Iterable[str],
              sends: Iterable[int], database_url: str | None = None) -> int:
    """Keep alive the leases of what this process is working on now: these
    conversations and outbox sends; returns how many it renewed.

    Only those: a lease this process no longer uses (one whose release failed while
    the database was down, say) runs out and another process takes the work over.
    Rows another transaction holds are skipped, never waited for (that transaction
    is ours and renews them itself), so a heartbeat cannot deadlock with a claim.
    """
    until = utcnow() + timedelta(seconds=lease_seconds)
    held = 0
    for model, key, claimant, expiry, ids in (
            (Conversation, Conversation.id, Conversation.lease_owner,
             "lease_until", sorted(set(conversations))),
            (Message, Message.id, Message.claimed_by, "claimed_until", sorted(set(sends)))):
        if not ids:
            continue
        with session_scope(database_url) as session:
            mine = session.execute(
                select(key).where(key.in_(ids), claimant == owner).order_by(key)
                .with_for_update(skip_locked=True)).scalars().all()
            if mine:
                held += session.execute(
                    update(model).where(key.in_(mine), claimant == owner)
                    .values({expiry: until})
                    .execution_options(synchronize_session=False)).rowcount
    return int(held)


def state_of(message_id: int, database_url: str | None = None) -> str | None:
    with session_scope(database_url) as session:
        return session.execute(
            select(Message.inbox_state).where(Message.id == message_id)).scalar_one_or_none()


def replies_to(message_id: int, database_url: str | None = None) -> list[dict[str, Any]]:
    """What we answered to one customer message, in order (the web chat's reply)."""
    with session_scope(database_url) as session:
        rows = session.execute(
            select(Message).where(Message.reply_to == message_id, Message.delivery == "sync")
            .order_by(Message.id)).scalars()
        return [{"id": m.id, "text": m.text, **(m.payload or {})} for m in rows]


def sync_replies(message_id: int, database_url: str | None = None) -> int:
    """How many messages answer this one in the webhook's response (`/metrics`)."""
    with session_scope(database_url) as session:
        return int(session.execute(
            select(func.count()).select_from(Message)
            .where(Message.reply_to == message_id, Message.delivery == "sync")).scalar() or 0)


def counts(database_url: str | None = None) -> dict[str, int]:
    """Customer messages per inbox state (health and reliability reports)."""
    with session_scope(database_url) as session:
        rows = session.execute(
            select(Message.inbox_state, func.count()).where(Message.inbox_state.is_not(None))
            .group_by(Message.inbox_state)).all()
        return {state: int(n) for state, n in rows}
