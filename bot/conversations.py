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
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
    update,
)
from sqlalchemy.orm import Session

from parley.bot.storage import Base, UTCDateTime, session_scope, utcnow

AUTHORS = ("customer", "bot", "agent", "system", "note")
# How a message reaches the customer: in the webhook's own answer ("sync"),
# or pushed later by the channel's sender ("push", e.g. agent replies).
DELIVERIES = ("sync", "push", "none")


class Conversation(Base):
    __tablename__ = "conversations"

    id = Column(String(200), primary_key=True)  # "<channel>:<platform id>"
    channel = Column(String(32), nullable=False)
    display_name = Column(String(200), nullable=False, default="")
    # After a resolved handoff: "pending" (ask after the next bot answer),
    # "asked" (waiting for 1-5), or "none".
    rating_state = Column(String(16), nullable=False, default="none")
    rating_ticket_id = Column(Integer, nullable=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    last_customer_at = Column(UTCDateTime, nullable=True)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("conversation_id", "platform_message_id"),)

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


@dataclass(frozen=True)
class TranscriptLine:
    id: int
    author: str
    text: str
    payload: dict[str, Any] | None
    agent_id: int | None
    created_at: datetime
    delivery_error: str | None = None

    @classmethod
    def of(cls, m: Message) -> TranscriptLine:
        return cls(m.id, m.author, m.text, m.payload, m.agent_id, m.created_at,
                   m.delivery_error)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "author": self.author, "text": self.text,
                "payload": self.payload, "agent_id": self.agent_id,
                "created_at": self.created_at.isoformat(),
                "delivery_error": self.delivery_error}


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
                   platform_message_id: str | None = None) -> dict[str, Any]:
    if author not in AUTHORS:
        raise ValueError(f"unknown author {author!r}")
    if delivery not in DELIVERIES:
        raise ValueError(f"unknown delivery {delivery!r}")
    return {"conversation_id": conversation_id, "author": author, "text": text,
            "ticket_id": ticket_id, "agent_id": agent_id, "payload": payload,
            "delivery": delivery, "platform_message_id": platform_message_id,
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
    """Messages the channel must push to the customer (agent replies, notices)."""
    with session_scope(database_url) as session:
        rows = session.execute(
            select(Message).where(Message.conversation_id == conversation_id,
                                  Message.delivery == "push", Message.id > after_id)
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


def take_pending_pushes(channel: str, limit: int = 50,
                        database_url: str | None = None) -> list[tuple[str, TranscriptLine]]:
    """Claim pushed messages of one channel that no worker has taken yet, oldest
    first. The guarded UPDATE makes each message go to exactly one worker, even
    with several Rasa replicas polling."""
    taken: list[tuple[str, TranscriptLine]] = []
    with session_scope(database_url) as session:
        rows = session.execute(
            select(Message).join(Conversation, Conversation.id == Message.conversation_id)
            .where(Conversation.channel == channel, Message.delivery == "push",
                   Message.sent_at.is_(None))
            .order_by(Message.id).limit(limit)
        ).scalars().all()
        for message in rows:
            won = session.execute(
                update(Message).where(Message.id == message.id, Message.sent_at.is_(None))
                .values(sent_at=utcnow()).execution_options(synchronize_session=False)
            ).rowcount
            if won == 1:
                taken.append((message.conversation_id, TranscriptLine.of(message)))
    return taken


def mark_failed(message_id: int, error: str, database_url: str | None = None) -> None:
    """Keep the platform's reason so the agent sees the reply did not arrive."""
    from parley.bot import events

    with session_scope(database_url) as session:
        message = session.get(Message, message_id)
        if message is None:
            return
        message.delivery_error = error[:300]
        events.publish(session, "message", ticket_id=message.ticket_id,
                       conversation_id=message.conversation_id, author="system",
                       delivery_error=message.delivery_error)


def last_customer_at(conversation_id: str, database_url: str | None = None) -> datetime | None:
    """When the customer last wrote: the start of the platform's messaging window."""
    with session_scope(database_url) as session:
        conversation = session.get(Conversation, conversation_id)
        return conversation.last_customer_at if conversation else None
