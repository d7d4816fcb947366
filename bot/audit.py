"""The audit trail: who exported or erased a customer's data, and what retention removed.

One row per act, written in the same transaction as the deletion it records
(`parley.bot.privacy`), so data never goes without a trace. `subject` holds the
conversations acted on as pseudonyms: the channel and a keyed hash of the id
(`whatsapp:#3f2a…`), since an id can be a phone number (WhatsApp's). Whoever knows
the id can still prove what happened to it (`pseudonym`, `about`); the trail alone
names no one. `details` holds counts and settings, never message text, names or
anything else a customer said.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Integer, String, select
from sqlalchemy.orm import Session

from parley.bot import personal_data
from parley.bot.storage import Base, UTCDateTime, session_scope, utcnow

ACTIONS = ("export", "erase", "retention")
CLI = "cli"
RETENTION_JOB = "retention job"
MAX_LIMIT = 200


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id = Column(Integer, primary_key=True, autoincrement=True)
    at = Column(UTCDateTime, nullable=False, default=utcnow, index=True)
    actor = Column(String(80), nullable=False)  # "agent:<id>", "cli", "retention job"
    action = Column(String(16), nullable=False)
    subject = Column(JSON, nullable=False, default=list)  # conversation ids
    details = Column(JSON, nullable=False, default=dict)  # counts, never personal data


@dataclass(frozen=True)
class Entry:
    id: int
    at: datetime
    actor: str
    action: str
    subject: list[str]
    details: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at.isoformat(), "actor": self.actor,
                "action": self.action, "subject": self.subject, "details": self.details}


def agent_actor(agent_id: int) -> str:
    return f"agent:{agent_id}"


def pseudonym(conversation_id: str) -> str:
    """What the trail keeps of a conversation id: its channel and a keyed hash."""
    channel = conversation_id.split(":", 1)[0]
    return f"{channel}:#{personal_data.digest('conversation', conversation_id)[:20]}"


def record(session: Session, actor: str, action: str, subject: list[str],
           details: dict[str, Any]) -> AuditEntry:
    """Add an entry inside the caller's transaction: it commits with the act or not at all."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    entry = AuditEntry(at=utcnow(), actor=actor[:80], action=action,
                       subject=[pseudonym(cid) for cid in subject], details=details)
    session.add(entry)
    session.flush()
    return entry


def amend(entry_id: int, details: dict[str, Any], database_url: str | None = None) -> None:
    """Add what a second store reported (the tracker's count) to an entry."""
    with session_scope(database_url) as session:
        entry = session.get(AuditEntry, entry_id)
        if entry is not None:
            entry.details = {**(entry.details or {}), **details}


def about(conversation_id: str, database_url: str | None = None) -> list[Entry]:
    """Every entry that acted on this conversation, newest first (an erasure's proof)."""
    wanted = pseudonym(conversation_id)
    with session_scope(database_url) as session:
        rows = session.execute(select(AuditEntry).order_by(AuditEntry.id.desc())).scalars()
        return [_entry(e) for e in rows if wanted in (e.subject or [])]


def _entry(e: AuditEntry) -> Entry:
    return Entry(e.id, e.at, e.actor, e.action, list(e.subject or []), dict(e.details or {}))


def recent(limit: int = 50, database_url: str | None = None) -> list[Entry]:
    """The newest entries first."""
    with session_scope(database_url) as session:
        rows = session.execute(select(AuditEntry).order_by(AuditEntry.id.desc())
                               .limit(min(limit, MAX_LIMIT))).scalars()
        return [_entry(e) for e in rows]
