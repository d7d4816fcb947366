"""The live-agent queue: tickets, their state machine, and atomic claims.

A conversation is owned by the bot, waiting in the queue, or held by one agent.
Ownership is derived from the conversation's open ticket (status waiting or
assigned); a partial unique index makes a second open ticket impossible.

    waiting --claim--> assigned --resolve--> resolved
       |                  |  \\--transfer--> assigned (another agent)
       +--BOT/dismiss-----+-----> abandoned
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from parley.bot import events
from parley.bot.conversations import add_message, ensure_conversation
from parley.bot.storage import Base, UTCDateTime, get_engine, session_scope, utcnow

OPEN = ("waiting", "assigned")
# "external": a person answered in the platform's own inbox (e.g. Meta Business Suite).
REASONS = ("keyword", "intent", "low_confidence", "complaint", "external")
PRIORITY_NORMAL, PRIORITY_HIGH = 0, 1
DEFAULT_HANDLE_TIME = timedelta(minutes=5)

# Allowed transitions: every state change goes through `_transition`.
TRANSITIONS: dict[str, set[str]] = {
    "waiting": {"assigned", "abandoned"},
    "assigned": {"assigned", "resolved", "abandoned"},
    "resolved": set(),
    "abandoned": set(),
}


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        # One open ticket per conversation: the "one owner" invariant, in the schema.
        Index("one_open_ticket_per_conversation", "conversation_id", unique=True,
              sqlite_where=text("status IN ('waiting', 'assigned')"),
              postgresql_where=text("status IN ('waiting', 'assigned')")),
        Index("queue_order", "status", "priority", "created_at"),
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
    __tablename__ = "ratings"

    id = Column(Integer, primary_key=True, autoincrement=True)
    ticket_id = Column(Integer, ForeignKey("tickets.id"), nullable=False, unique=True)
    score = Column(Integer, nullable=False)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)


class TransitionError(Exception):
    """A change the state machine does not allow (e.g. resolving a waiting ticket)."""


@dataclass(frozen=True)
class TicketView:
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


@dataclass(frozen=True)
class QueuePlace:
    ticket: TicketView
    position: int  # 1 = next; 0 once an agent holds it
    eta: timedelta
    created: bool  # False when the conversation already had an open ticket


def _transition(ticket: Ticket, new_status: str) -> None:
    if new_status not in TRANSITIONS[ticket.status]:
        raise TransitionError(f"ticket {ticket.id} is {ticket.status}; cannot become {new_status}")
    ticket.status = new_status


def open_ticket(session: Session, conversation_id: str) -> Ticket | None:
    return session.execute(
        select(Ticket).where(Ticket.conversation_id == conversation_id,
                             Ticket.status.in_(OPEN))
    ).scalar_one_or_none()


def owner(conversation_id: str, url: str | None = None) -> tuple[str, TicketView | None]:
    """('bot' | 'waiting' | 'assigned', the open ticket if any)."""
    with session_scope(url) as session:
        ticket = open_ticket(session, conversation_id)
        return ("bot", None) if ticket is None else (ticket.status, TicketView.of(ticket))


def _position(session: Session, ticket: Ticket) -> int:
    if ticket.status != "waiting":
        return 0
    ahead = session.execute(
        select(Ticket.id).where(
            Ticket.status == "waiting", Ticket.team == ticket.team,
            (Ticket.priority > ticket.priority)
            | ((Ticket.priority == ticket.priority) & (Ticket.created_at < ticket.created_at))
            | ((Ticket.priority == ticket.priority) & (Ticket.created_at == ticket.created_at)
               & (Ticket.id < ticket.id)),
        )
    ).all()
    return len(ahead) + 1


def recent_handle_time(session: Session, sample: int = 50) -> timedelta:
    """Median time an agent held a ticket, over the last `sample` resolved ones."""
    rows = session.execute(
        select(Ticket.assigned_at, Ticket.resolved_at)
        .where(Ticket.status == "resolved", Ticket.assigned_at.is_not(None))
        .order_by(Ticket.resolved_at.desc()).limit(sample)
    ).all()
    durations = [(r - a).total_seconds() for a, r in rows if a and r and r > a]
    if not durations:
        return DEFAULT_HANDLE_TIME
    return timedelta(seconds=statistics.median(durations))


def estimate_wait(position: int, handle_time: timedelta, agents_online: int) -> timedelta:
    """Each agent clears one ticket per handle time: the wait for place n is
    ceil(n / agents) handle times, minus the one already in progress (half, on average)."""
    if position <= 0:
        return timedelta(0)
    rounds = math.ceil(position / max(1, agents_online))
    return handle_time * (rounds - 0.5)


def place_of(session: Session, ticket: Ticket, agents_online: int) -> QueuePlace:
    position = _position(session, ticket)
    eta = estimate_wait(position, recent_handle_time(session), agents_online)
    return QueuePlace(TicketView.of(ticket), position, eta, created=False)


def escalate(conversation_id: str, reason: str, *, context: dict[str, Any] | None = None,
             priority: int = PRIORITY_NORMAL, display_name: str = "", team: str = "support",
             agents_online: int = 1, url: str | None = None) -> QueuePlace:
    """Put the conversation in the queue (or return its existing place)."""
    if reason not in REASONS:
        raise ValueError(f"unknown handoff reason {reason!r}")
    try:
        with session_scope(url) as session:
            ensure_conversation(session, conversation_id, display_name)
            existing = open_ticket(session, conversation_id)
            if existing is not None:
                if priority > existing.priority:
                    existing.priority = priority
                    events.publish(session, "ticket_updated", ticket_id=existing.id,
                                   conversation_id=conversation_id, priority=priority)
                return place_of(session, existing, agents_online)
            ticket = Ticket(conversation_id=conversation_id, status="waiting", priority=priority,
                            team=team, reason=reason, context=context or {}, tags=[],
                            created_at=utcnow())
            session.add(ticket)
            session.flush()
            add_message(session, conversation_id, "system",
                        f"Handed to the queue ({reason.replace('_', ' ')})", ticket_id=ticket.id,
                        delivery="none")
            events.publish(session, "ticket_created", ticket_id=ticket.id,
                           conversation_id=conversation_id, reason=reason, priority=priority)
            place = place_of(session, ticket, agents_online)
            return QueuePlace(place.ticket, place.position, place.eta, created=True)
    except IntegrityError:
        # Lost a race with a concurrent escalation of the same conversation.
        with session_scope(url) as session:
            existing = open_ticket(session, conversation_id)
            if existing is None:
                raise
            return place_of(session, existing, agents_online)


def queue_place(conversation_id: str, agents_online: int = 1,
                url: str | None = None) -> QueuePlace | None:
    with session_scope(url) as session:
        ticket = open_ticket(session, conversation_id)
        return None if ticket is None else place_of(session, ticket, agents_online)


def _assign(session: Session, ticket_id: int, agent_id: int) -> TicketView | None:
    """waiting -> assigned, guarded: the UPDATE re-checks `status = 'waiting'` under
    the row's write lock (PostgreSQL) or the database lock (SQLite), so of several
    concurrent claimers exactly one changes a row. None for the losers."""
    result = session.execute(
        update(Ticket).where(Ticket.id == ticket_id, Ticket.status == "waiting")
        .values(status="assigned", assigned_agent_id=agent_id, assigned_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    ticket = session.get(Ticket, ticket_id)
    assert ticket is not None
    session.refresh(ticket)
    events.publish(session, "ticket_claimed", ticket_id=ticket_id,
                   conversation_id=ticket.conversation_id, agent_id=agent_id)
    return TicketView.of(ticket)


def claim_ticket(ticket_id: int, agent_id: int, url: str | None = None) -> TicketView | None:
    """Take a waiting ticket (an agent clicked it); None if someone else has it."""
    with session_scope(url) as session:
        return _assign(session, ticket_id, agent_id)


def claim_next(agent_id: int, team: str = "support", url: str | None = None,
               attempts: int = 20) -> TicketView | None:
    """Take the head of the queue. On PostgreSQL, `FOR UPDATE SKIP LOCKED` lets
    concurrent claimers each lock a different row instead of queueing on one."""
    engine = get_engine(url)
    for _ in range(attempts):
        with session_scope(url) as session:
            query = (select(Ticket.id)
                     .where(Ticket.status == "waiting", Ticket.team == team)
                     .order_by(Ticket.priority.desc(), Ticket.created_at, Ticket.id).limit(1))
            if engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ticket_id = session.execute(query).scalar()
            if ticket_id is None:
                return None
            claimed = _assign(session, ticket_id, agent_id)
            if claimed is not None:
                return claimed
        # Someone else took it between our SELECT and UPDATE (SQLite): try the next.
    return None


def _held_ticket(session: Session, ticket_id: int) -> Ticket:
    ticket = session.execute(
        select(Ticket).where(Ticket.id == ticket_id).with_for_update()
    ).scalar_one_or_none()
    if ticket is None:
        raise LookupError(f"no ticket {ticket_id}")
    return ticket


def transfer(ticket_id: int, from_agent: int, to_agent: int,
             url: str | None = None) -> TicketView:
    with session_scope(url) as session:
        ticket = _held_ticket(session, ticket_id)
        if ticket.status != "assigned" or ticket.assigned_agent_id != from_agent:
            raise TransitionError(f"ticket {ticket_id} is not held by agent {from_agent}")
        _transition(ticket, "assigned")
        ticket.assigned_agent_id = to_agent
        events.publish(session, "ticket_transferred", ticket_id=ticket_id,
                       conversation_id=ticket.conversation_id, from_agent=from_agent,
                       to_agent=to_agent)
        return TicketView.of(ticket)


def resolve(ticket_id: int, agent_id: int, url: str | None = None) -> TicketView:
    """Hand back to the bot; the next bot answer is followed by a rating question."""
    from parley.bot.conversations import Conversation

    with session_scope(url) as session:
        ticket = _held_ticket(session, ticket_id)
        if ticket.status != "assigned" or ticket.assigned_agent_id != agent_id:
            raise TransitionError(f"ticket {ticket_id} is not held by agent {agent_id}")
        _transition(ticket, "resolved")
        ticket.resolved_at = utcnow()
        conversation = session.get(Conversation, ticket.conversation_id)
        if conversation is not None:
            conversation.rating_state = "pending"
            conversation.rating_ticket_id = ticket.id
        events.publish(session, "ticket_resolved", ticket_id=ticket_id,
                       conversation_id=ticket.conversation_id, agent_id=agent_id)
        return TicketView.of(ticket)


def abandon(conversation_id: str, why: str = "customer", url: str | None = None) -> bool:
    """The customer left the queue (typed BOT): the bot owns the conversation again."""
    with session_scope(url) as session:
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


def dismiss(ticket_ids: list[int], agent_id: int, url: str | None = None) -> list[int]:
    """Close tickets that need no reply (spam, "thanks!"); returns those closed."""
    closed = []
    with session_scope(url) as session:
        for ticket in session.execute(
            select(Ticket).where(Ticket.id.in_(ticket_ids), Ticket.status.in_(OPEN))
            .with_for_update()
        ).scalars():
            _transition(ticket, "abandoned")
            ticket.resolved_at = utcnow()
            ticket.assigned_agent_id = ticket.assigned_agent_id or agent_id
            closed.append(ticket.id)
            events.publish(session, "ticket_dismissed", ticket_id=ticket.id,
                           conversation_id=ticket.conversation_id, agent_id=agent_id)
    return sorted(closed)


def set_tags(ticket_id: int, tags: list[str], url: str | None = None) -> TicketView:
    clean = sorted({t.strip().lower()[:32] for t in tags if t and t.strip()})
    with session_scope(url) as session:
        ticket = _held_ticket(session, ticket_id)
        ticket.tags = clean
        events.publish(session, "ticket_updated", ticket_id=ticket_id,
                       conversation_id=ticket.conversation_id, tags=clean)
        return TicketView.of(ticket)


def get_ticket(ticket_id: int, url: str | None = None) -> TicketView | None:
    with session_scope(url) as session:
        ticket = session.get(Ticket, ticket_id)
        return None if ticket is None else TicketView.of(ticket)


def list_tickets(statuses: tuple[str, ...] = OPEN, limit: int = 200,
                 url: str | None = None) -> list[TicketView]:
    with session_scope(url) as session:
        rows = session.execute(
            select(Ticket).where(Ticket.status.in_(statuses))
            .order_by(Ticket.priority.desc(), Ticket.created_at, Ticket.id).limit(limit)
        ).scalars()
        return [TicketView.of(t) for t in rows]


def record_rating(ticket_id: int, score: int, url: str | None = None) -> None:
    if not 1 <= score <= 5:
        raise ValueError("a rating is 1 to 5")
    with session_scope(url) as session:
        session.add(Rating(ticket_id=ticket_id, score=score, created_at=utcnow()))


def _record(ticket_id: int, agent_id: int, text: str, author: str,
            url: str | None) -> int:
    text = text.strip()
    if not text:
        raise ValueError(f"a {'reply' if author == 'agent' else author} needs some text")
    with session_scope(url) as session:
        ticket = _held_ticket(session, ticket_id)
        if author == "agent":
            if ticket.status != "assigned" or ticket.assigned_agent_id != agent_id:
                raise TransitionError(f"ticket {ticket_id} is not held by agent {agent_id}")
            ticket.first_reply_at = ticket.first_reply_at or utcnow()
        message = add_message(session, ticket.conversation_id, author, text,
                              ticket_id=ticket_id, agent_id=agent_id,
                              delivery="push" if author == "agent" else "none")
        events.publish(session, "message", ticket_id=ticket_id,
                       conversation_id=ticket.conversation_id, author=author,
                       message_id=message.id)
        return int(message.id)


def agent_reply(ticket_id: int, agent_id: int, text: str, url: str | None = None) -> int:
    """Record an agent's reply for the customer's channel to push; returns its id."""
    return _record(ticket_id, agent_id, text, "agent", url)


def add_note(ticket_id: int, agent_id: int, text: str, url: str | None = None) -> int:
    """An internal note: in the transcript for agents, never sent to the customer."""
    return _record(ticket_id, agent_id, text, "note", url)


def push_notice(conversation_id: str, text: str, ticket_id: int | None = None,
                payload: dict[str, Any] | None = None, url: str | None = None) -> int:
    """A message from the system to the customer outside a webhook answer."""
    with session_scope(url) as session:
        message = add_message(session, conversation_id, "system", text, ticket_id=ticket_id,
                              payload=payload, delivery="push")
        return int(message.id)


def send_follow_ups(after: timedelta, text: str, now: datetime | None = None,
                    url: str | None = None) -> list[int]:
    """Check in once on held conversations where the agent spoke last and the
    customer has been silent for `after`. Returns the tickets followed up."""
    from parley.bot.conversations import Message

    now = now or utcnow()
    sent = []
    with session_scope(url) as session:
        held = session.execute(
            select(Ticket).where(Ticket.status == "assigned", Ticket.follow_up_at.is_(None))
        ).scalars().all()
        for ticket in held:
            last = session.execute(
                select(Message.author, Message.created_at)
                .where(Message.conversation_id == ticket.conversation_id,
                       Message.author.in_(("customer", "agent")))
                .order_by(Message.id.desc()).limit(1)
            ).first()
            if last is None or last.author != "agent" or now - last.created_at < after:
                continue
            ticket.follow_up_at = now
            add_message(session, ticket.conversation_id, "system", text, ticket_id=ticket.id,
                        delivery="push")
            events.publish(session, "message", ticket_id=ticket.id,
                           conversation_id=ticket.conversation_id, author="system")
            sent.append(ticket.id)
    return sent


def hold_externally(conversation_id: str, who: str, text: str = "",
                    url: str | None = None) -> TicketView:
    """A person answered outside the desk (the platform's own inbox): the
    conversation is human-owned from now on, so the bot goes quiet. Their words go
    into the transcript. The desk can dismiss the ticket to hand back to the bot."""
    place = escalate(conversation_id, "external", context={"held_by": who}, url=url)
    with session_scope(url) as session:
        ticket = _held_ticket(session, place.ticket.id)
        if ticket.status == "waiting":
            _transition(ticket, "assigned")
            ticket.assigned_at = utcnow()
            events.publish(session, "ticket_claimed", ticket_id=ticket.id,
                           conversation_id=conversation_id, agent_id=None, held_by=who)
        if text:
            ticket.first_reply_at = ticket.first_reply_at or utcnow()
            add_message(session, conversation_id, "agent", text, ticket_id=ticket.id,
                        delivery="none")
        return TicketView.of(ticket)
