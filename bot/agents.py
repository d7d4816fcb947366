"""Desk users (agents, admins) and their login sessions.

Passwords are hashed with Argon2id (argon2-cffi); sessions are random tokens
stored server-side, each with its own CSRF token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Column, ForeignKey, Integer, String, delete, func, select
from sqlalchemy.exc import IntegrityError

from parley.bot.storage import Base, UTCDateTime, session_scope, utcnow

ROLES = ("agent", "admin", "writer", "manager")
DESK_ROLES = ("agent", "admin")  # who answers customers; writers edit replies only
# Who reads the numbers (analytics, alerts history); managers see no transcripts.
ANALYTICS_ROLES = ("manager", "admin")
SESSION_LIFETIME = timedelta(hours=12)
ONLINE_WINDOW = timedelta(minutes=2)
_hasher = PasswordHasher()
# Verified against when the user does not exist, so a wrong name takes as long
# as a wrong password and does not reveal which names exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class Agent(Base):
    __tablename__ = "agents"

    id = Column(Integer, primary_key=True, autoincrement=True)
    username = Column(String(64), nullable=False, unique=True)
    display_name = Column(String(120), nullable=False)
    password_hash = Column(String(200), nullable=False)
    role = Column(String(16), nullable=False, default="agent")
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    last_seen_at = Column(UTCDateTime, nullable=True)


class DeskSession(Base):
    __tablename__ = "desk_sessions"

    token = Column(String(64), primary_key=True)
    agent_id = Column(Integer, ForeignKey("agents.id"), nullable=False)
    csrf_token = Column(String(64), nullable=False)
    expires_at = Column(UTCDateTime, nullable=False)


@dataclass(frozen=True)
class AgentView:
    id: int
    username: str
    display_name: str
    role: str


@dataclass(frozen=True)
class SessionView:
    token: str
    csrf_token: str
    agent: AgentView


class DuplicateUser(ValueError):
    pass


def _view(agent: Agent) -> AgentView:
    return AgentView(agent.id, agent.username, agent.display_name, agent.role)


def create_user(username: str, password: str, role: str = "agent",
                display_name: str | None = None, database_url: str | None = None) -> AgentView:
    username = username.strip().lower()
    if not username or len(username) > 64 or not username.replace("_", "").replace(
            "-", "").replace(".", "").isalnum():
        raise ValueError("username: 1-64 letters, digits, '.', '-' or '_'")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise ValueError("password must be at least 8 characters")
    try:
        with session_scope(database_url) as session:
            agent = Agent(username=username, display_name=display_name or username.title(),
                          password_hash=_hasher.hash(password), role=role, created_at=utcnow())
            session.add(agent)
            session.flush()
            return _view(agent)
    except IntegrityError:
        raise DuplicateUser(f"user {username!r} already exists") from None


def count_users(database_url: str | None = None) -> int:
    with session_scope(database_url) as session:
        return int(session.execute(select(func.count(Agent.id))).scalar() or 0)


def list_agents(database_url: str | None = None) -> list[AgentView]:
    with session_scope(database_url) as session:
        return [_view(a) for a in session.execute(select(Agent).order_by(Agent.username))
                .scalars()]


def _storable(text: str) -> bool:
    """Text a query can carry: no NUL (PostgreSQL refuses it), valid Unicode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return "\x00" not in text


def login(username: str, password: str, database_url: str | None = None) -> SessionView | None:
    username = username.strip().lower()
    # A name no user can have is not looked up, but still costs a verification.
    possible = 0 < len(username) <= 64 and _storable(username) and _storable(password)
    with session_scope(database_url) as session:
        agent = session.execute(
            select(Agent).where(Agent.username == username)
        ).scalar_one_or_none() if possible else None
        try:
            _hasher.verify(agent.password_hash if agent else _DUMMY_HASH,
                           password if possible else "")
        except (VerificationError, InvalidHashError):
            return None
        if agent is None:
            return None
        if _hasher.check_needs_rehash(agent.password_hash):
            agent.password_hash = _hasher.hash(password)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = utcnow()
        agent.last_seen_at = now
        session.add(DeskSession(token=token, agent_id=agent.id, csrf_token=csrf,
                                expires_at=now + SESSION_LIFETIME))
        return SessionView(token, csrf, _view(agent))


def session_for(token: str | None, database_url: str | None = None) -> SessionView | None:
    if not token or len(token) > 64 or not token.isascii() or "\x00" in token:
        return None  # not a token this module makes (a forged cookie): not looked up
    with session_scope(database_url) as session:
        row = session.get(DeskSession, token)
        now = utcnow()
        if row is None or row.expires_at <= now:
            return None
        agent = session.get(Agent, row.agent_id)
        if agent is None:
            return None
        if agent.last_seen_at is None or now - agent.last_seen_at > timedelta(seconds=30):
            agent.last_seen_at = now  # presence for the queue's wait estimate
        return SessionView(row.token, row.csrf_token, _view(agent))


def logout(token: str, database_url: str | None = None) -> None:
    with session_scope(database_url) as session:
        session.execute(delete(DeskSession).where(DeskSession.token == token))


def agents_online(database_url: str | None = None, now: datetime | None = None) -> int:
    now = now or utcnow()
    with session_scope(database_url) as session:
        return int(session.execute(
            select(func.count(Agent.id)).where(Agent.last_seen_at >= now - ONLINE_WINDOW,
                                               Agent.role.in_(DESK_ROLES))
        ).scalar() or 0)
