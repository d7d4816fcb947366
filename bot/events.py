"""The desk's event log: what changed, in order, for every desk process to stream.

Written in the same transaction as the change it describes (so an event is
never published for a change that rolled back), read by id. A table rather than
an in-process queue because the action server, the Rasa server and the desk are
separate processes, possibly on several machines. On PostgreSQL the same
transaction also sends a NOTIFY, delivered only on commit, which wakes every desk
replica's live streams (`parley.bot.desk.live`) instead of each polling fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Integer, String, func, select, text
from sqlalchemy.orm import Session

from parley.bot.storage import Base, UTCDateTime, session_scope, utcnow

NOTIFY_CHANNEL = "parley_desk_events"  # a wake-up only: readers take events from the table
KINDS = (
    "ticket_created", "ticket_claimed", "ticket_transferred", "ticket_resolved",
    "ticket_abandoned", "ticket_dismissed", "ticket_updated", "message",
    # a trainee's reply waits for approval / was approved, edited or sent back
    "reply_held", "reply_reviewed",
    # a contact's conversations were linked or unlinked (`parley.bot.contacts`)
    "contact_updated",
)


class DeskEvent(Base):
    __tablename__ = "desk_events"

    id = Column(Integer, primary_key=True, autoincrement=True)
    kind = Column(String(32), nullable=False)
    ticket_id = Column(Integer, nullable=True)
    conversation_id = Column(String(200), nullable=True)
    payload = Column(JSON, nullable=False, default=dict)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    ticket_id: int | None
    conversation_id: str | None
    payload: dict[str, Any]
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "ticket_id": self.ticket_id,
                "conversation_id": self.conversation_id, "payload": self.payload,
                "created_at": self.created_at.isoformat()}


def publish(session: Session, kind: str, *, ticket_id: int | None = None,
            conversation_id: str | None = None, **payload: Any) -> None:
    """Record an event inside the caller's transaction (and notify on its commit)."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    session.add(DeskEvent(kind=kind, ticket_id=ticket_id, conversation_id=conversation_id,
                          payload=payload, created_at=utcnow()))
    if session.get_bind().dialect.name == "postgresql":
        # Transactional: sent on commit, dropped on rollback; PostgreSQL folds
        # repeats within one transaction into one notification.
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})


def events_after(after_id: int, limit: int = 200, database_url: str | None = None) -> list[Event]:
    with session_scope(database_url) as session:
        rows = session.execute(
            select(DeskEvent).where(DeskEvent.id > after_id).order_by(DeskEvent.id).limit(limit)
        ).scalars()
        return [Event(e.id, e.kind, e.ticket_id, e.conversation_id, e.payload or {},
                      e.created_at) for e in rows]


def last_event_id(database_url: str | None = None) -> int:
    with session_scope(database_url) as session:
        return int(session.execute(select(func.max(DeskEvent.id))).scalar() or 0)
