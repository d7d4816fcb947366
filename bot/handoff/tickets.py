"""Tickets: the tables, their state machine, and who owns a conversation.

A conversation is owned by the bot, waiting in the queue, or held by one agent.
Ownership is derived from the conversation's open ticket (status waiting or
assigned); a partial unique index makes a second open ticket impossible.

    waiting --claim--> assigned --resolve--> resolved
       |                  |  \\--transfer--> assigned (another agent)
       +--BOT/dismiss-----+-----> abandoned

This module is the bottom of the package: the others import it, never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, String, select, text
from sqlalchemy.orm import Session, object_session

from parley.bot import events
from parley.bot.conversations import add_message
from parley.bot.storage import Base, UTCDateTime, session_scope, utcnow

OPEN = ("waiting", "assigned")
PRIORITY_NORMAL, PRIORITY_HIGH = 0, 1

# Allowed transitions: every state change goes through `_transition`.
TRANSITIONS: dict[str, set[str]] = {
    "waiting": {"assigned", "abandoned"},
    "assigned": {"assigned", "resolved", "abandoned"},
    "resolved": set(),
    "abandoned": set(),
}


class Ticket(Base):
    """One stay of a conversation with people: from the queue to resolved or abandoned."""

    __tablename__ = "tickets"
    __table_args__ = (
        # One open ticket per conversation: the "one owner" invariant, in the schema.
        Index("one_open_ticket_per_conversation", "conversation_id", unique=True,
              sqlite_where=text("status IN ('waiting', 'assigned')"),
              postgresql_where=text("status IN ('waiting', 'assigned')")),
        Index("queue_order", "status", "priority", "created_at"),
        # Analytics: tickets by time, and a conversation's tickets after a reply.
        Index("ix_tickets_created_at", "created_at"),
        Index("ix_tickets_conversation_created", "conversation_id", "created_at"),
    )

    id = Column(Integer, primary_key=True, autoincrement=True)
    conversation_id = Column(String(200), ForeignKey("conversations.id"), nullable=False)
    status = Column(String(16), nullable=False, default="waiting")
    priority = Column(Integer, nullable=False, default=PRIORITY_NORMAL)
    team = Column(String(40), nullable=False, default="support")
    reason = Column(String(20), nullable=False)
    context = Column(JSON, nullable=False, default=dict)
    tags = Column(JSON, nullable=False, default=list)
    assigned_agent_id = Column(Integer, nullable=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    assigned_at = Column(UTCDateTime, nullable=True)
    first_reply_at = Column(UTCDateTime, nullable=True)
    resolved_at = Column(UTCDateTime, nullable=True)
    follow_up_at = Column(UTCDateTime, nullable=True)  # when the check-in was sent


class Rating(Base):
    """The customer's 1-5 score for a resolved ticket; at most one per ticket."""

    __tablename__ = "ratings"

    id = Column(Integer, primary_key=True, autoincrement=True)
    ticket_id = Column(Integer, ForeignKey("tickets.id"), nullable=False, unique=True)
    score = Column(Integer, nullable=False)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)


class TransitionError(Exception):
    """A change the state machine does not allow (e.g. resolving a waiting ticket)."""


@dataclass(frozen=True)
class TicketView:
    """A detached copy of a ticket, safe to use after its session has closed."""

    id: int
    conversation_id: str
    status: str
    priority: int
    team: str
    reason: str
    context: dict[str, Any]
    tags: list[str]
    assigned_agent_id: int | None
    created_at: datetime
    assigned_at: datetime | None
    first_reply_at: datetime | None
    resolved_at: datetime | None

    @classmethod
    def of(cls, t: Ticket) -> TicketView:
        return cls(t.id, t.conversation_id, t.status, t.priority, t.team, t.reason,
                   dict(t.context or {}), list(t.tags or []), t.assigned_agent_id,
                   t.created_at, t.assigned_at, t.first_reply_at, t.resolved_at)

    def as_json(self, now: datetime | None = None) -> dict[str, Any]:
        now = now or utcnow()
        waited_until = self.assigned_at or now
        return {
            "id": self.id, "conversation_id": self.conversation_id, "status": self.status,
            "priority": self.priority, "team": self.team, "reason": self.reason,
            "context": self.context, "tags": self.tags,
            "assigned_agent_id": self.assigned_agent_id,
            "channel": self.conversation_id.split(":", 1)[0],
            "created_at": self.created_at.isoformat(),
            "assigned_at": self.assigned_at.isoformat() if self.assigned_at else None,
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "waiting_seconds": int((waited_until - self.created_at).total_seconds()),
        }


def _transition(ticket: Ticket, new_status: str) -> None:
    """The one place a status changes, so no code path can skip the state machine.
    A ticket that closes (resolved, dismissed, left by the customer) takes its
    trainees' replies still waiting for approval with it: they will never be sent."""
    if new_status not in TRANSITIONS[ticket.status]:
        raise TransitionError(f"ticket {ticket.id} is {ticket.status}; cannot become {new_status}")
    ticket.status = new_status
    if new_status in ("resolved", "abandoned"):
        from parley.bot.handoff import approvals  # (approvals builds on this module)

        session = object_session(ticket)
        if session is not None:
            approvals.withdraw_all(session, [ticket.id])


def _held_ticket(session: Session, ticket_id: int) -> Ticket:
    """The ticket, row-locked (FOR UPDATE) so concurrent changes to it serialise."""
    ticket = session.execute(
        select(Ticket).where(Ticket.id == ticket_id).with_for_update()
    ).scalar_one_or_none()
    if ticket is None:
        raise LookupError(f"no ticket {ticket_id}")
    return ticket


def open_ticket(session: Session, conversation_id: str) -> Ticket | None:
    """The conversation's waiting or assigned ticket; the schema allows at most one."""
    return session.execute(
        select(Ticket).where(Ticket.conversation_id == conversation_id,
                             Ticket.status.in_(OPEN))
    ).scalar_one_or_none()


def owner(conversation_id: str, database_url: str | None = None) -> tuple[str, TicketView | None]:
    """('bot' | 'waiting' | 'assigned', the open ticket if any)."""
    with session_scope(database_url) as session:
        ticket = open_ticket(session, conversation_id)
        return ("bot", None) if ticket is None else (ticket.status, TicketView.of(ticket))


def get_ticket(ticket_id: int, database_url: str | None = None) -> TicketView | None:
    """One ticket by id, or None if there is no such ticket."""
    with session_scope(database_url) as session:
        ticket = session.get(Ticket, ticket_id)
        return None if ticket is None else TicketView.of(ticket)


def list_tickets(statuses: tuple[str, ...] = OPEN, limit: int = 200,
                 database_url: str | None = None) -> list[TicketView]:
    """Tickets in queue order (priority, then arrival), for the desk's lists."""
    with session_scope(database_url) as session:
        rows = session.execute(
            select(Ticket).where(Ticket.status.in_(statuses))
            .order_by(Ticket.priority.desc(), Ticket.created_at, Ticket.id).limit(limit)
        ).scalars()
        return [TicketView.of(t) for t in rows]


def abandon(conversation_id: str, why: str = "customer", database_url: str | None = None) -> bool:
    """The customer left the queue (typed BOT): the bot owns the conversation again."""
    with session_scope(database_url) as session:
        ticket = open_ticket(session, conversation_id)
        if ticket is None:
            return False
        _transition(ticket, "abandoned")
        ticket.resolved_at = utcnow()
        add_message(session, conversation_id, "system", f"Left the queue ({why})",
                    ticket_id=ticket.id, delivery="none")
        events.publish(session, "ticket_abandoned", ticket_id=ticket.id,
                       conversation_id=conversation_id, why=why)
        return True
