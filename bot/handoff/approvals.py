"""Supervised agents: a trainee's replies wait for a supervisor's approval.

An admin marks an agent as a trainee (`agents.set_trainee`). From then on a reply
the trainee writes is not a message but a review (`reply_reviews`, status
`pending`): nothing reaches the customer. A supervisor or an admin sees the queue
live and approves it as written, edits then approves it, or sends it back with a
comment. Approval writes the customer's message in the same transaction (author
the trainee, `approved_by` the supervisor), so it goes out through the outbox
like any agent reply, with no wait of its own: approve-to-delivered is the
outbox's usual delay, measured from the stored times (`timings`).

Everything stays on record: the review keeps the trainee's draft and what was
sent; a sent-back reply leaves a note in the transcript with the comment; the
approved message names its approver.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, Integer, String, Text, func, select, update
from sqlalchemy.orm import Session

from parley.bot import events
from parley.bot.agents import SUPERVISING_ROLES, Agent
from parley.bot.conversations import Message, add_message
from parley.bot.handoff.tickets import Ticket, TransitionError
from parley.bot.storage import Base, UTCDateTime, session_scope, utcnow

STATUSES = ("pending", "approved", "returned", "withdrawn")


class ReplyReview(Base):
    __tablename__ = "reply_reviews"
    __table_args__ = (Index("ix_reply_reviews_status", "status", "id"),)

    id = Column(Integer, primary_key=True, autoincrement=True)
    ticket_id = Column(Integer, nullable=False, index=True)
    conversation_id = Column(String(200), nullable=False)
    agent_id = Column(Integer, nullable=False)  # the trainee who wrote it
    draft = Column(Text, nullable=False)  # as the trainee wrote it
    text = Column(Text, nullable=False)  # as it was (or would be) sent
    reply_name = Column(String(100), nullable=True)  # picked canned reply, unedited
    status = Column(String(16), nullable=False, default="pending")
    comment = Column(Text, nullable=True)  # the supervisor's, when sent back
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    decided_at = Column(UTCDateTime, nullable=True)
    decided_by = Column(Integer, nullable=True)
    message_id = Column(Integer, nullable=True)  # the customer's message, once approved


class NotASupervisor(PermissionError):
    """Only supervisors and admins review trainees' replies."""


class AlreadyDecided(TransitionError):
    """Another supervisor (or the trainee, withdrawing) got there first."""


@dataclass(frozen=True)
class ReviewView:
    id: int
    ticket_id: int
    conversation_id: str
    agent_id: int
    draft: str
    text: str
    status: str
    comment: str | None
    created_at: datetime
    decided_at: datetime | None
    decided_by: int | None
    message_id: int | None

    @classmethod
    def of(cls, r: ReplyReview) -> ReviewView:
        return cls(r.id, r.ticket_id, r.conversation_id, r.agent_id, r.draft, r.text,
                   r.status, r.comment, r.created_at, r.decided_at, r.decided_by,
                   r.message_id)

    def as_json(self, names: dict[int, str] | None = None) -> dict[str, Any]:
        names = names or {}
        return {"id": self.id, "ticket_id": self.ticket_id,
                "conversation_id": self.conversation_id, "agent_id": self.agent_id,
                "agent_name": names.get(self.agent_id), "draft": self.draft,
                "text": self.text, "edited": self.text != self.draft, "status": self.status,
                "comment": self.comment, "created_at": self.created_at.isoformat(),
                "decided_at": self.decided_at.isoformat() if self.decided_at else None,
                "decided_by": self.decided_by,
                "decided_by_name": names.get(self.decided_by or -1),
                "message_id": self.message_id}


def is_trainee(session: Session, agent_id: int) -> bool:
    return bool(session.execute(select(Agent.trainee).where(Agent.id == agent_id)).scalar())


def hold(session: Session, ticket: Ticket, agent_id: int, text: str,
         reply_name: str | None) -> int:
    """A trainee's reply, kept for review instead of sent; returns the review's id."""
    review = ReplyReview(ticket_id=ticket.id, conversation_id=ticket.conversation_id,
                         agent_id=agent_id, draft=text, text=text, reply_name=reply_name,
                         status="pending", created_at=utcnow())
    session.add(review)
    session.flush()
    events.publish(session, "reply_held", ticket_id=ticket.id,
                   conversation_id=ticket.conversation_id, review_id=review.id,
                   agent_id=agent_id)
    return int(review.id)


def pending_by(session: Session, ticket_id: int, agent_id: int) -> int:
    return int(session.execute(
        select(func.count(ReplyReview.id)).where(ReplyReview.ticket_id == ticket_id,
                                                 ReplyReview.agent_id == agent_id,
                                                 ReplyReview.status == "pending")
    ).scalar() or 0)


def withdraw_all(session: Session, ticket_ids: list[int]) -> None:
    """A closed ticket's waiting replies will never be sent: say so on the reviews
    (withdrawn by no one: the ticket closed). Called with the ticket row locked."""
    session.execute(
        update(ReplyReview).where(ReplyReview.ticket_id.in_(ticket_ids),
                                  ReplyReview.status == "pending")
        .values(status="withdrawn", decided_at=utcnow(), decided_by=None)
        .execution_options(synchronize_session=False))


def _supervisor(session: Session, agent_id: int) -> Agent:
    agent = session.get(Agent, agent_id)
    if agent is None or agent.role not in SUPERVISING_ROLES or agent.disabled_at is not None:
        raise NotASupervisor("only a supervisor or an admin may review a trainee's reply")
    return agent


def _decide(session: Session, review_id: int, status: str, by: int) -> ReplyReview:
    """pending -> `status`, guarded: the UPDATE re-checks `status = 'pending'` under
    the row's write lock (PostgreSQL) or the database lock (SQLite), so of two
    supervisors deciding at once exactly one does; AlreadyDecided for the other."""
    done = session.execute(
        update(ReplyReview).where(ReplyReview.id == review_id, ReplyReview.status == "pending")
        .values(status=status, decided_at=utcnow(), decided_by=by)
        .execution_options(synchronize_session=False)).rowcount
    review = session.get(ReplyReview, review_id)
    if review is None:
        raise LookupError(f"no reply {review_id} awaits review")
    session.refresh(review)
    if done != 1:
        raise AlreadyDecided(f"this reply was already {review.status}")
    return review


def approve(review_id: int, supervisor_id: int, text: str | None = None,
            database_url: str | None = None) -> ReviewView:
    """Send the reply (edited to `text` if given) to the customer now. Refused if the
    ticket is no longer with a person (the bot has the conversation back)."""
    if text is not None:
        text = text.strip()
        if not text:
            raise ValueError("an edited reply needs some text")
    with session_scope(database_url) as session:
        _supervisor(session, supervisor_id)
        # The ticket's row lock first, as every ticket command takes it (a dismiss
        # locks the ticket, then withdraws its reviews): one order, no deadlock.
        ticket_id = session.execute(select(ReplyReview.ticket_id).where(
            ReplyReview.id == review_id)).scalar()
        if ticket_id is None:
            raise LookupError(f"no reply {review_id} awaits review")
        ticket = session.execute(
            select(Ticket).where(Ticket.id == ticket_id).with_for_update()).scalar_one()
        review = _decide(session, review_id, "approved", supervisor_id)
        if ticket.status != "assigned":
            raise TransitionError(f"ticket {ticket.id} is {ticket.status}: the customer is "
                                  "no longer with a person, so the reply was not sent")
        final = text if text is not None else review.draft
        message = add_message(session, review.conversation_id, "agent", final,
                              ticket_id=ticket.id, agent_id=review.agent_id,
                              delivery="push",
                              reply_name=review.reply_name if final == review.draft else None)
        message.approved_by = supervisor_id
        ticket.first_reply_at = ticket.first_reply_at or review.decided_at
        review.text, review.message_id = final, message.id
        events.publish(session, "message", ticket_id=ticket.id,
                       conversation_id=ticket.conversation_id, author="agent",
                       message_id=message.id)
        events.publish(session, "reply_reviewed", ticket_id=ticket.id,
                       conversation_id=ticket.conversation_id, review_id=review.id,
                       status="approved", agent_id=review.agent_id)
        return ReviewView.of(review)


def send_back(review_id: int, supervisor_id: int, comment: str,
              database_url: str | None = None) -> ReviewView:
    """Not sent: the trainee gets the comment (also a note in the transcript)."""
    comment = comment.strip()
    if not comment:
        raise ValueError("say what to change: a reply is sent back with a comment")
    with session_scope(database_url) as session:
        supervisor = _supervisor(session, supervisor_id)
        review = _decide(session, review_id, "returned", supervisor_id)
        review.comment = comment
        add_message(session, review.conversation_id, "note",
                    f"Reply sent back by {supervisor.display_name}: {comment}",
                    ticket_id=review.ticket_id, agent_id=supervisor_id, delivery="none")
        events.publish(session, "reply_reviewed", ticket_id=review.ticket_id,
                       conversation_id=review.conversation_id, review_id=review.id,
                       status="returned", agent_id=review.agent_id)
        return ReviewView.of(review)


def withdraw(review_id: int, agent_id: int, database_url: str | None = None) -> ReviewView:
    """The trainee takes back a reply that still waits (to rewrite it, or to hand
    the customer back to the bot)."""
    with session_scope(database_url) as session:
        review = _decide(session, review_id, "withdrawn", agent_id)
        if review.agent_id != agent_id:  # (rolled back with the error)
            raise NotASupervisor("only the reply's writer may withdraw it")
        events.publish(session, "reply_reviewed", ticket_id=review.ticket_id,
                       conversation_id=review.conversation_id, review_id=review.id,
                       status="withdrawn", agent_id=agent_id)
        return ReviewView.of(review)


def waiting(database_url: str | None = None, limit: int = 200) -> list[ReviewView]:
    """The approval queue, oldest first."""
    with session_scope(database_url) as session:
        rows = session.execute(select(ReplyReview).where(ReplyReview.status == "pending")
                               .order_by(ReplyReview.id).limit(limit)).scalars()
        return [ReviewView.of(r) for r in rows]


def of_ticket(ticket_id: int, database_url: str | None = None) -> list[ReviewView]:
    with session_scope(database_url) as session:
        rows = session.execute(select(ReplyReview).where(ReplyReview.ticket_id == ticket_id)
                               .order_by(ReplyReview.id)).scalars()
        return [ReviewView.of(r) for r in rows]


def approvers(message_ids: list[int], database_url: str | None = None) -> dict[int, int]:
    """Who approved each of these messages (those that were a trainee's)."""
    if not message_ids:
        return {}
    with session_scope(database_url) as session:
        return dict(session.execute(
            select(Message.id, Message.approved_by).where(Message.id.in_(message_ids),
                                                          Message.approved_by.isnot(None))
        ).all())


@dataclass(frozen=True)
class Timings:
    """Seconds, over approved replies: how long they waited for a supervisor, and
    from approval to the platform's acceptance (channels we push to; the web chat's
    page fetches its replies itself, so it has no delivery time here)."""

    approved: int
    review_p50: float | None
    review_p95: float | None
    delivered: int
    delivery_p50: float | None
    delivery_p95: float | None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def timings(database_url: str | None = None, limit: int = 1000) -> Timings:
    """Over the last `limit` approved replies."""
    with session_scope(database_url) as session:
        rows = session.execute(
            select(ReplyReview.created_at, ReplyReview.decided_at, Message.sent_at)
            .join(Message, Message.id == ReplyReview.message_id)
            .where(ReplyReview.status == "approved")
            .order_by(ReplyReview.id.desc()).limit(limit)
        ).all()
    review = [(decided - held).total_seconds() for held, decided, _ in rows]
    delivery = [(sent - decided).total_seconds() for _, decided, sent in rows if sent]
    return Timings(len(rows), _percentile(review, 0.5), _percentile(review, 0.95),
                   len(delivery), _percentile(delivery, 0.5), _percentile(delivery, 0.95))
