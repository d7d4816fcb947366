"""Reply revisions in the database: draft → submitted → published (or returned).

The YAML in data/ is the baseline; every published revision overrides one reply
on top of it. Nothing is edited in place once submitted, so every revision stays
with who wrote it, who reviewed it and when. Publishing bumps one counter row
(`reply_library.version`) in the same transaction: running Rasa processes poll
that one integer to know when to reload.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Integer, String, func, select, update

from parley.bot.agents import AgentView
from parley.bot.storage import Base, UTCDateTime, session_scope, utcnow

EDITABLE = ("draft", "returned")
STATES = ("draft", "submitted", "returned", "published")
WRITE_ROLES = ("writer", "admin")
REVIEW_ROLES = ("admin",)


class ReviewError(Exception):
    """A workflow step refused; `status` is what the desk answers (403 or 409)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class ReplyRevision(Base):
    __tablename__ = "reply_revisions"

    id = Column(Integer, primary_key=True, autoincrement=True)
    name = Column(String(120), nullable=False, index=True)
    body = Column(JSON, nullable=False)  # the reply's variations, as in the YAML
    state = Column(String(16), nullable=False, index=True)
    author_id = Column(Integer, ForeignKey("agents.id"), nullable=False)
    created_at = Column(UTCDateTime, nullable=False)
    updated_at = Column(UTCDateTime, nullable=False)
    submitted_at = Column(UTCDateTime, nullable=True)
    reviewer_id = Column(Integer, ForeignKey("agents.id"), nullable=True)
    reviewed_at = Column(UTCDateTime, nullable=True)
    review_comment = Column(String(1000), nullable=True)
    published_version = Column(Integer, nullable=True, unique=True)
    note = Column(String(300), nullable=True)


class ReplyLibrary(Base):
    """One row: the version of the published set."""

    __tablename__ = "reply_library"

    id = Column(Integer, primary_key=True, autoincrement=False)
    version = Column(Integer, nullable=False)


@dataclass(frozen=True)
class RevisionView:
    id: int
    name: str
    body: list[dict[str, Any]]
    state: str
    author_id: int
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    reviewer_id: int | None
    reviewed_at: datetime | None
    review_comment: str | None
    published_version: int | None
    note: str | None

    def as_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("created_at", "updated_at", "submitted_at", "reviewed_at"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


def _view(row: ReplyRevision) -> RevisionView:
    return RevisionView(row.id, row.name, row.body, row.state, row.author_id, row.created_at,
                        row.updated_at, row.submitted_at, row.reviewer_id, row.reviewed_at,
                        row.review_comment, row.published_version, row.note)


def _require_role(actor: AgentView, roles: tuple[str, ...], doing: str) -> None:
    if actor.role not in roles:
        raise ReviewError(f"a {actor.role} cannot {doing}", 403)


def _held(session: Any, revision_id: int) -> ReplyRevision:
    row = session.get(ReplyRevision, revision_id, with_for_update=True)
    if row is None:
        raise ReviewError(f"no revision {revision_id}", 404)
    return row


def _under_review(session: Any, revision_id: int, actor: AgentView,
                  outcome: str) -> ReplyRevision:
    """A submitted revision, reviewed now by `actor`, who must not be its author."""
    row = _held(session, revision_id)
    if row.author_id == actor.id:
        raise ReviewError("you cannot review your own draft; ask another admin", 403)
    if row.state != "submitted":
        raise ReviewError(f"revision {revision_id} is {row.state}; only submitted drafts "
                          f"can be {outcome}")
    row.reviewer_id, row.reviewed_at = actor.id, utcnow()
    return row


def _publish(session: Any, row: ReplyRevision) -> None:
    """Bump the library version (a row lock serialises publishers) and stamp it."""
    session.execute(update(ReplyLibrary).where(ReplyLibrary.id == 1)
                    .values(version=ReplyLibrary.version + 1))
    row.published_version = session.execute(
        select(ReplyLibrary.version).where(ReplyLibrary.id == 1)).scalar_one()
    row.state = "published"


def save_draft(name: str, body: list[dict[str, Any]], actor: AgentView,
               database_url: str | None = None) -> RevisionView:
    """The actor's open draft of this reply, created or overwritten."""
    _require_role(actor, WRITE_ROLES, "edit replies")
    now = utcnow()
    with session_scope(database_url) as session:
        row = session.execute(
            select(ReplyRevision).where(ReplyRevision.name == name,
                                        ReplyRevision.author_id == actor.id,
                                        ReplyRevision.state.in_(EDITABLE))
            .order_by(ReplyRevision.id.desc()).limit(1).with_for_update()
        ).scalar_one_or_none()
        if row is None:
            row = ReplyRevision(name=name, author_id=actor.id, created_at=now, state="draft")
            session.add(row)
        row.body, row.updated_at = body, now
        session.flush()
        return _view(row)


def submit(revision_id: int, actor: AgentView, database_url: str | None = None) -> RevisionView:
    _require_role(actor, WRITE_ROLES, "submit replies")
    with session_scope(database_url) as session:
        row = _held(session, revision_id)
        if row.author_id != actor.id:
            raise ReviewError("only the author can submit this draft", 403)
        if row.state not in EDITABLE:
            raise ReviewError(f"revision {revision_id} is {row.state}; only drafts are submitted")
        row.state, row.submitted_at = "submitted", utcnow()
        return _view(row)


def approve(revision_id: int, actor: AgentView, database_url: str | None = None) -> RevisionView:
    """Publish a submitted draft. The author can never approve their own."""
    _require_role(actor, REVIEW_ROLES, "approve replies")
    with session_scope(database_url) as session:
        row = _under_review(session, revision_id, actor, "approved")
        _publish(session, row)
        return _view(row)


def send_back(revision_id: int, actor: AgentView, comment: str,
              database_url: str | None = None) -> RevisionView:
    _require_role(actor, REVIEW_ROLES, "review replies")
    if not comment.strip():
        raise ReviewError("say what to change: a comment is required", 400)
    with session_scope(database_url) as session:
        row = _under_review(session, revision_id, actor, "sent back")
        row.state, row.review_comment = "returned", comment.strip()
        return _view(row)


def rollback(name: str, to_revision_id: int, actor: AgentView,
             database_url: str | None = None) -> RevisionView:
    """Publish an earlier published text again, as a new revision (history grows)."""
    _require_role(actor, REVIEW_ROLES, "roll back replies")
    now = utcnow()
    with session_scope(database_url) as session:
        old = session.get(ReplyRevision, to_revision_id)
        if old is None or old.name != name or old.published_version is None:
            raise ReviewError(f"revision {to_revision_id} is not a published revision of "
                              f"{name}", 404)
        row = ReplyRevision(name=name, body=old.body, author_id=actor.id, created_at=now,
                            updated_at=now, submitted_at=now, reviewer_id=actor.id,
                            reviewed_at=now, state="draft",
                            note=f"rollback to revision {to_revision_id}")
        session.add(row)
        session.flush()
        _publish(session, row)
        return _view(row)


def get(revision_id: int, database_url: str | None = None) -> RevisionView | None:
    with session_scope(database_url) as session:
        row = session.get(ReplyRevision, revision_id)
        return _view(row) if row else None


def history(name: str, database_url: str | None = None) -> list[RevisionView]:
    """Newest first."""
    with session_scope(database_url) as session:
        rows = session.execute(select(ReplyRevision).where(ReplyRevision.name == name)
                               .order_by(ReplyRevision.id.desc())).scalars()
        return [_view(r) for r in rows]


def in_review(database_url: str | None = None) -> list[RevisionView]:
    with session_scope(database_url) as session:
        rows = session.execute(select(ReplyRevision)
                               .where(ReplyRevision.state == "submitted")
                               .order_by(ReplyRevision.submitted_at)).scalars()
        return [_view(r) for r in rows]


def library_version(database_url: str | None = None) -> int:
    with session_scope(database_url) as session:
        return session.execute(select(ReplyLibrary.version)
                               .where(ReplyLibrary.id == 1)).scalar_one_or_none() or 0


def published(database_url: str | None = None) -> tuple[int, dict[str, list[dict[str, Any]]]]:
    """The library version and, per reply, its newest published body."""
    with session_scope(database_url) as session:
        version = session.execute(select(ReplyLibrary.version)
                                  .where(ReplyLibrary.id == 1)).scalar_one_or_none() or 0
        newest = (select(ReplyRevision.name, func.max(ReplyRevision.published_version)
                         .label("v"))
                  .where(ReplyRevision.published_version.is_not(None))
                  .group_by(ReplyRevision.name).subquery())
        rows = session.execute(
            select(ReplyRevision.name, ReplyRevision.body)
            .join(newest, (ReplyRevision.name == newest.c.name)
                  & (ReplyRevision.published_version == newest.c.v))).all()
        return version, {name: body for name, body in rows}


def diff(before: list[dict[str, Any]] | None, after: list[dict[str, Any]] | None,
         name: str) -> str:
    """A unified diff of two bodies as YAML, the form writers know from git."""
    from parley.bot.responses.library import yaml_text

    def lines(body: list[dict[str, Any]] | None) -> list[str]:
        return yaml_text({name: body}).splitlines(keepends=True) if body else []
    return "".join(difflib.unified_diff(lines(before), lines(after), "before", "after"))
