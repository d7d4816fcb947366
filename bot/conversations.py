"""Conversations and their transcript: every customer, bot, agent and system turn.

The connectors record each accepted customer message here before answering the
platform, so nothing accepted is lost, and a redelivered platform message id is
recognised and produces no second reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import Session

from parley.bot.storage import Base, UTCDateTime, session_scope, utcnow

AUTHORS = ("customer", "bot", "agent", "system", "note")
# How a message reaches the customer: in the webhook's own answer ("sync", the web
# chat), through the outbox ("push": everything we send on platforms we call), or
# not at all ("none": customer messages, notes, transcript-only lines).
DELIVERIES = ("sync", "push", "none")


class Conversation(Base):
    __tablename__ = "conversations"

    id = Column(String(200), primary_key=True)  # "<channel>:<platform id>"
    channel = Column(String(32), nullable=False)
    display_name = Column(String(200), nullable=False, default="")
    # The 1-5 rating before the survey (`parley.bot.survey`) replaced it: kept for
    # old data, no longer written.
    rating_state = Column(String(16), nullable=False, default="none")
    rating_ticket_id = Column(Integer, nullable=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    last_customer_at = Column(UTCDateTime, nullable=True)
    # The inbox lease: the worker (process) processing this conversation's messages,
    # and until when; a dead worker's lease runs out and another takes over.
    lease_owner = Column(String(120), nullable=True)
    lease_until = Column(UTCDateTime, nullable=True)
    # The language replies are chosen in ("pt"), and who said so: "platform" (its
    # locale), "detected" (the first messages) or "agent" (the desk); None until one
    # did, and the default language meanwhile. The rules: `parley.bot.language`.
    language = Column(String(16), nullable=True)
    language_source = Column(String(16), nullable=True)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("conversation_id", "platform_message_id"),
                      Index("ix_messages_outbox", "delivery", "sent_at"),
                      # inbound counts by time (spike alerts)
                      Index("ix_messages_author_created_at", "author", "created_at"))

    id = Column(Integer, primary_key=True, autoincrement=True)
    conversation_id = Column(String(200), ForeignKey("conversations.id"), nullable=False,
                             index=True)
    ticket_id = Column(Integer, nullable=True, index=True)
    author = Column(String(16), nullable=False)
    agent_id = Column(Integer, nullable=True)
    text = Column(Text, nullable=False, default="")
    payload = Column(JSON, nullable=True)  # buttons, image, … as Rasa sends them
    delivery = Column(String(8), nullable=False, default="sync")
    platform_message_id = Column(String(200), nullable=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    # For pushed messages on platforms we call (Telegram, Meta): when a worker took
    # it to send, and the platform's error if sending failed for good.
    sent_at = Column(UTCDateTime, nullable=True)
    delivery_error = Column(String(300), nullable=True)
    # Customer messages: received -> processing -> answered | routed | failed (inbox).
    inbox_state = Column(String(16), nullable=True, index=True)
    attempts = Column(Integer, nullable=False, default=0)  # processing or sending tries
    reply_to = Column(Integer, nullable=True, index=True)  # the customer message answered
    retry_at = Column(UTCDateTime, nullable=True)  # not before: after a failed try
    failed_turn = Column(Integer, nullable=True)  # the last try whose Rasa turn failed
    claimed_by = Column(String(120), nullable=True)  # outbox: the sender holding it
    claimed_until = Column(UTCDateTime, nullable=True)
    # The writer-owned reply this message was rendered from (`utter_…`): the bot's
    # replies, and an agent's when they picked a canned reply (analytics).
    reply_name = Column(String(100), nullable=True)
    # A trainee's reply: the supervisor who approved it (`parley.bot.approvals`).
    approved_by = Column(Integer, nullable=True)


@dataclass(frozen=True)
class TranscriptLine:
    id: int
    author: str
    text: str
    payload: dict[str, Any] | None
    agent_id: int | None
    created_at: datetime
    delivery_error: str | None = None
    approved_by: int | None = None  # a trainee's reply: its approver
    sent_at: datetime | None = None

    @classmethod
    def of(cls, m: Message) -> TranscriptLine:
        return cls(m.id, m.author, m.text, m.payload, m.agent_id, m.created_at,
                   m.delivery_error, m.approved_by, m.sent_at)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "author": self.author, "text": self.text,
                "payload": self.payload, "agent_id": self.agent_id,
                "created_at": self.created_at.isoformat(),
                "delivery_error": self.delivery_error, "approved_by": self.approved_by,
                "sent_at": self.sent_at.isoformat() if self.sent_at else None}


def channel_of(conversation_id: str) -> str:
    return conversation_id.split(":", 1)[0]


def get_conversation(session: Session, conversation_id: str) -> Conversation | None:
    """A plain SELECT: on SQLAlchemy 1.4, `session.get` re-annotates its query on
    every call, which showed in the connectors' profile."""
    return session.execute(select(Conversation).where(Conversation.id == conversation_id)
                           ).scalar_one_or_none()


def ensure_conversation(session: Session, conversation_id: str,
                        display_name: str = "") -> Conversation:
    conversation = get_conversation(session, conversation_id)
    if conversation is None:
        conversation = Conversation(id=conversation_id, channel=channel_of(conversation_id),
                                    display_name=display_name, rating_state="none")
        session.add(conversation)
        session.flush()
    elif display_name and conversation.display_name != display_name:
        conversation.display_name = display_name
    return conversation


def message_values(conversation_id: str, author: str, text: str, *,
                   ticket_id: int | None = None, agent_id: int | None = None,
                   payload: dict[str, Any] | None = None, delivery: str = "sync",
                   platform_message_id: str | None = None, inbox_state: str | None = None,
                   reply_to: int | None = None, delivery_error: str | None = None,
                   reply_name: str | None = None) -> dict[str, Any]:
    if author not in AUTHORS:
        raise ValueError(f"unknown author {author!r}")
    if delivery not in DELIVERIES:
        raise ValueError(f"unknown delivery {delivery!r}")
    return {"conversation_id": conversation_id, "author": author, "text": text,
            "ticket_id": ticket_id, "agent_id": agent_id, "payload": payload,
            "delivery": delivery, "platform_message_id": platform_message_id,
            "inbox_state": inbox_state, "reply_to": reply_to, "attempts": 0,
            "delivery_error": delivery_error, "reply_name": reply_name,
            "created_at": utcnow()}


def add_message(session: Session, conversation_id: str, author: str, text: str,
                **fields: Any) -> Message:
    message = Message(**message_values(conversation_id, author, text, **fields))
    session.add(message)
    session.flush()
    return message


def transcript(conversation_id: str, database_url: str | None = None,
               include_notes: bool = True, limit: int = 500) -> list[TranscriptLine]:
    with session_scope(database_url) as session:
        query = select(Message).where(Message.conversation_id == conversation_id)
        if not include_notes:
            query = query.where(Message.author != "note")
        rows = session.execute(query.order_by(Message.id.desc()).limit(limit)).scalars()
        lines = [TranscriptLine.of(m) for m in rows]
    return list(reversed(lines))


def pushed_after(conversation_id: str, after_id: int,
                 database_url: str | None = None) -> list[TranscriptLine]:
    """What we said to the customer after a message id (agent replies, notices, and
    the web chat's answers, which a page may also have had in its post's reply)."""
    with session_scope(database_url) as session:
        rows = session.execute(
            select(Message).where(Message.conversation_id == conversation_id,
                                  Message.delivery.in_(("push", "sync")),
                                  Message.author != "customer", Message.id > after_id)
            .order_by(Message.id)
        ).scalars()
        return [TranscriptLine.of(m) for m in rows]


def latest_message_id(conversation_id: str, database_url: str | None = None) -> int:
    with session_scope(database_url) as session:
        value = session.execute(
            select(Message.id).where(Message.conversation_id == conversation_id)
            .order_by(Message.id.desc()).limit(1)
        ).scalar()
        return int(value or 0)


def display_names(conversation_ids: list[str], database_url: str | None = None) -> dict[str, str]:
    if not conversation_ids:
        return {}
    with session_scope(database_url) as session:
        rows = session.execute(
            select(Conversation.id, Conversation.display_name)
            .where(Conversation.id.in_(set(conversation_ids)))
        ).all()
        return {cid: name or cid for cid, name in rows}


def last_customer_at(conversation_id: str, database_url: str | None = None) -> datetime | None:
    """When the customer last wrote: the start of the platform's messaging window."""
    with session_scope(database_url) as session:
        conversation = session.get(Conversation, conversation_id)
        return conversation.last_customer_at if conversation else None
