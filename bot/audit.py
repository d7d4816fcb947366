"""The audit trail: who exported or erased a customer's data, and what retention removed.

One row per act, written in the same transaction as the deletion it records
(`parley.bot.privacy`), so data never goes without a trace. `subject` holds the
conversation ids acted on: the proof of an erasure names whose data it was, and
keeps nothing else of theirs. `details` holds counts and settings, never message
text, names or anything else a customer said.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Integer, String, select
from sqlalchemy.orm import Session

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


def record(session: Session, actor: str, action: str, subject: list[str],
           details: dict[str, Any]) -> AuditEntry:
    """Add an entry inside the caller's transaction: it commits with the act or not at all."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    entry = AuditEntry(at=utcnow(), actor=actor[:80], action=action, subject=list(subject),
                       details=details)
    session.add(entry)
    session.flush()
    return entry


def amend(entry_id: int, details: dict[str, Any], database_url: str | None = None) -> None:
    """Add what a second store reported (the tracker's count) to an entry."""
    with session_scope(database_url) as session:
        entry = session.get(AuditEntry, entry_id)
        if entry is not None:
            entry.details = {**(entry.details or {}), **details}


def recent(limit: int = 50, database_url: str | None = None) -> list[Entry]:
    """The newest entries first."""
    with session_scope(database_url) as session:
        rows = session.execute(select(AuditEntry).order_by(AuditEntry.id.desc())
                               .limit(min(limit, MAX_LIMIT))).scalars()
        return [Entry(e.id, e.at, e.actor, e.action, list(e.subject or []),
                      dict(e.details or {})) for e in rows]
