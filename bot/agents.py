"""Desk users (agents, supervisors, admins, writers, managers) and their login sessions.

Passwords are hashed with Argon2id (argon2-cffi). A session is a random token:
the cookie carries it, the database only its SHA-256 (a copy of the table lets no
one log in), with the session's own CSRF token beside it. A session ends at
logout, after SESSION_LIFETIME, after the idle time (PARLEY_DESK_IDLE_MINUTES)
without a request, or when an admin disables its user, resets the user's
password or ends the user's sessions; a password change ends the user's other
sessions. Failed password checks are throttled (`parley.bot.login_throttle`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    delete,
    false,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from parley.bot import events, login_throttle
from parley.bot.storage import Base, UTCDateTime, session_scope, utcnow

ROLES = ("agent", "admin", "writer", "manager", "supervisor")
# Who answers customers; writers edit replies only. Supervisors also oversee agents.
DESK_ROLES = ("agent", "supervisor", "admin")
# Who may act on a ticket another agent holds (dismiss it, transfer it).
SUPERVISING_ROLES = ("supervisor", "admin")
# Who reads the numbers (analytics, alerts history); managers see no transcripts.
ANALYTICS_ROLES = ("manager", "admin")
SESSION_LIFETIME = timedelta(hours=12)
IDLE_ENV = "PARLEY_DESK_IDLE_MINUTES"
IDLE_MINUTES = 30.0
TOUCH_EVERY = timedelta(minutes=1)  # last_used_at: one write a minute, not one a request
ONLINE_WINDOW = timedelta(minutes=2)
PASSWORD_MIN = 10
PASSWORD_MAX = 200
# pg_notify payload that makes every desk replica's live streams check their session.
SESSIONS_NOTICE = "sessions"
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
    disabled_at = Column(UTCDateTime, nullable=True)  # set: no login, no session
    # A trainee's replies wait for a supervisor's approval (`parley.bot.approvals`).
    trainee = Column(Boolean, nullable=False, default=False, server_default=false())


class DeskSession(Base):
    __tablename__ = "desk_sessions"
    __table_args__ = (Index("ix_desk_sessions_agent_id", "agent_id"),)

    token_hash = Column(String(64), primary_key=True)  # SHA-256 hex of the cookie's token
    agent_id = Column(Integer, ForeignKey("agents.id"), nullable=False)
    csrf_token = Column(String(64), nullable=False)
    expires_at = Column(UTCDateTime, nullable=False)
    last_used_at = Column(UTCDateTime, nullable=False)


@dataclass(frozen=True)
class AgentView:
    id: int
    username: str
    display_name: str
    role: str
    disabled: bool = False
    trainee: bool = False


@dataclass(frozen=True)
class UserSummary:
    """A row of the admins' user list."""

    id: int
    username: str
    display_name: str
    role: str
    disabled_at: datetime | None
    last_seen_at: datetime | None
    sessions: int  # open sessions
    trainee: bool = False

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "username": self.username, "display_name": self.display_name,
                "role": self.role, "disabled": self.disabled_at is not None,
                "disabled_at": self.disabled_at.isoformat() if self.disabled_at else None,
                "last_seen_at": self.last_seen_at.isoformat() if self.last_seen_at else None,
                "sessions": self.sessions, "trainee": self.trainee}


@dataclass(frozen=True)
class SessionView:
    token: str  # the cookie's value; the database holds only its hash
    csrf_token: str
    agent: AgentView


class DuplicateUser(ValueError):
    pass


class Throttled(Exception):
    """Too many failed password checks for the name or the address: refused unchecked."""

    def __init__(self, lock: login_throttle.Lock, now: datetime) -> None:
        super().__init__(lock.message(now))
        self.message = lock.message(now)
        self.retry_after = lock.seconds_left(now)


class AccountDisabled(Exception):
    """The password was right, but an admin has disabled the account."""


class NoSuchUser(LookupError):
    pass


class LastAdmin(Exception):
    """Refused: it would leave no active admin to run the accounts."""


def _view(agent: Agent) -> AgentView:
    return AgentView(agent.id, agent.username, agent.display_name, agent.role,
                     agent.disabled_at is not None, bool(agent.trainee))


def token_hash(token: str) -> str:
    """What the database keeps of a session token. A plain SHA-256 is enough: the
    token is 256 random bits, so there is nothing to guess from its hash."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@cache
def _idle_minutes(raw: str) -> float:
    try:
        minutes = float(raw)
    except ValueError:
        raise ValueError(f"{IDLE_ENV} must be a number of minutes, got {raw!r}") from None
    if not 0 < minutes <= SESSION_LIFETIME.total_seconds() / 60:
        raise ValueError(f"{IDLE_ENV} must be more than 0 and at most "
                         f"{SESSION_LIFETIME.total_seconds() / 60:.0f}, got {raw!r}")
    return minutes


def idle_timeout() -> timedelta:
    """How long a session lasts without a request (PARLEY_DESK_IDLE_MINUTES, 30)."""
    return timedelta(minutes=_idle_minutes(os.environ.get(IDLE_ENV, str(IDLE_MINUTES))))


def _storable(text: str) -> bool:
    """Text a query can carry: no NUL (PostgreSQL refuses it), valid Unicode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return "\x00" not in text


def password_problem(password: str, username: str) -> str | None:
    """Why `password` is refused for `username`, or None. Length is what makes a
    password hard to guess; no composition rules (NIST SP 800-63B)."""
    if not isinstance(password, str) or len(password) < PASSWORD_MIN:
        return f"the password must be at least {PASSWORD_MIN} characters"
    if len(password) > PASSWORD_MAX:
        return f"the password must be at most {PASSWORD_MAX} characters"
    if not _storable(password):
        return "the password must be plain text (no NUL, valid Unicode)"
    if password.strip().lower() == username.strip().lower():
        return "the password must not be the username"
    return None


def create_user(username: str, password: str, role: str = "agent",
                display_name: str | None = None, database_url: str | None = None) -> AgentView:
    username = username.strip().lower()
    if not username or len(username) > 64 or not username.replace("_", "").replace(
            "-", "").replace(".", "").isalnum():
        raise ValueError("username: 1-64 letters, digits, '.', '-' or '_'")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    problem = password_problem(password, username)
    if problem:
        raise ValueError(problem)
    try:
        with session_scope(database_url) as session:
            agent = Agent(username=username, display_name=display_name or username.title(),
                          password_hash=_hasher.hash(password), role=role, created_at=utcnow(),
                          trainee=False)
            session.add(agent)
            session.flush()
            return _view(agent)
    except IntegrityError:
        raise DuplicateUser(f"user {username!r} already exists") from None


def count_users(database_url: str | None = None) -> int:
    with session_scope(database_url) as session:
        return int(session.execute(select(func.count(Agent.id))).scalar() or 0)


def list_agents(database_url: str | None = None) -> list[AgentView]:
    """Everyone, disabled users included (their names stay on the tickets they held)."""
    with session_scope(database_url) as session:
        return [_view(a) for a in session.execute(select(Agent).order_by(Agent.username))
                .scalars()]


def list_users(database_url: str | None = None) -> list[UserSummary]:
    now = utcnow()
    with session_scope(database_url) as session:
        open_sessions = dict(session.execute(
            select(DeskSession.agent_id, func.count()).where(
                DeskSession.expires_at > now,
                DeskSession.last_used_at > now - idle_timeout())
            .group_by(DeskSession.agent_id)).all())
        return [UserSummary(a.id, a.username, a.display_name, a.role, a.disabled_at,
                            a.last_seen_at, int(open_sessions.get(a.id, 0)), bool(a.trainee))
                for a in session.execute(select(Agent).order_by(Agent.username)).scalars()]


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _new_session(session: Session, agent: Agent, now: datetime) -> SessionView:
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    # Ended sessions are refused when read; here they are also cleared away.
    session.execute(delete(DeskSession).where(
        (DeskSession.expires_at <= now) | (DeskSession.last_used_at <= now - idle_timeout()))
        .execution_options(synchronize_session=False))
    session.add(DeskSession(token_hash=token_hash(token), agent_id=agent.id, csrf_token=csrf,
                            expires_at=now + SESSION_LIFETIME, last_used_at=now))
    return SessionView(token, csrf, _view(agent))


def login(username: str, password: str, database_url: str | None = None,
          address: str | None = None) -> SessionView | None:
    """A new session, or None for a wrong name or password. Raises Throttled
    (nothing checked) while the name or `address` is locked, and AccountDisabled
    for the right password of a disabled user. The attempt is counted before the
    password is checked (`login_throttle.reserve`), and the check runs outside any
    transaction: Argon2 takes tens of milliseconds."""
    username = username.strip().lower()
    # A name no user can have is not looked up, but still costs a verification.
    possible = 0 < len(username) <= 64 and _storable(username) and _storable(password)
    pairs = login_throttle.keys(username, address)
    now = utcnow()
    with session_scope(database_url) as session:
        lock = login_throttle.locked(session, pairs, now)
        if lock is not None:
            raise Throttled(lock, now)
        found = session.execute(
            select(Agent.id, Agent.password_hash).where(Agent.username == username)
        ).first() if possible else None
        reserved = login_throttle.reserve(session, pairs, now)
    with session_scope(database_url) as session:
        lock = login_throttle.over_limit(session, pairs, now)
    if lock is not None:  # beyond the limit: refused unchecked, and still counted
        raise Throttled(lock, now)
    if not _verify(found[1] if found else _DUMMY_HASH, password if possible else "") \
            or found is None:
        return None  # the reservation stays: it was a failure
    with session_scope(database_url) as session:
        agent = session.get(Agent, found[0])
        if agent is None or agent.password_hash != found[1]:
            return None  # deleted, or its password changed meanwhile: still a failure
        login_throttle.release(session, reserved)  # the right password is no failure
        if agent.disabled_at is None:
            login_throttle.clear_user(session, username)
            if _hasher.check_needs_rehash(agent.password_hash):
                agent.password_hash = _hasher.hash(password)
            agent.last_seen_at = now
            return _new_session(session, agent, now)
    raise AccountDisabled("this account is disabled; ask an admin to enable it")


def session_for(token: str | None, database_url: str | None = None, touch: bool = True,
                now: datetime | None = None) -> SessionView | None:
    """The live session of a cookie's token, or None. `touch` (a request by the
    person) keeps it from going idle; the live stream's checks do not."""
    if not token or len(token) > 64 or not token.isascii() or "\x00" in token:
        return None  # not a token this module makes (a forged cookie): not looked up
    now = now or utcnow()
    with session_scope(database_url) as session:
        row = session.get(DeskSession, token_hash(token))
        if row is None:
            return None
        agent = session.get(Agent, row.agent_id)
        if (agent is None or agent.disabled_at is not None or row.expires_at <= now
                or row.last_used_at <= now - idle_timeout()):
            session.delete(row)
            return None
        if touch:
            if now - row.last_used_at >= TOUCH_EVERY:
                row.last_used_at = now
            if agent.last_seen_at is None or now - agent.last_seen_at > timedelta(seconds=30):
                agent.last_seen_at = now  # presence for the queue's wait estimate
        return SessionView(token, row.csrf_token, _view(agent))


def _sessions_ended(session: Session) -> None:
    """Tell every desk replica's live streams, on commit, to check their session
    (PostgreSQL; on SQLite the streams' own periodic check finds out)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": events.NOTIFY_CHANNEL, "payload": SESSIONS_NOTICE})


def _end_sessions(session: Session, agent_id: int, keep: str | None = None) -> int:
    query = delete(DeskSession).where(DeskSession.agent_id == agent_id)
    if keep is not None:
        query = query.where(DeskSession.token_hash != token_hash(keep))
    ended = session.execute(query.execution_options(synchronize_session=False)).rowcount
    _sessions_ended(session)
    return int(ended or 0)


def logout(token: str, database_url: str | None = None) -> None:
    with session_scope(database_url) as session:
        session.execute(delete(DeskSession).where(DeskSession.token_hash == token_hash(token)))
        _sessions_ended(session)


def _user(session: Session, user_id: int) -> Agent:
    agent = session.get(Agent, user_id)
    if agent is None:
        raise NoSuchUser(f"no user {user_id}")
    return agent


def end_sessions(user_id: int, database_url: str | None = None) -> int:
    """Log the user out everywhere; returns how many sessions ended."""
    with session_scope(database_url) as session:
        _user(session, user_id)
        return _end_sessions(session, user_id)


def disable_user(user_id: int, by_agent_id: int, database_url: str | None = None) -> AgentView:
    """No more logins, and every session of the user ends at once. Refused for
    oneself, and for the last active admin: under concurrent requests too (two
    admins disabling each other at once), as the guard is part of the UPDATE and
    the active admins' rows are locked first on PostgreSQL."""
    if user_id == by_agent_id:
        raise ValueError("you cannot disable your own account")
    now = utcnow()
    with session_scope(database_url) as session:
        session.execute(select(Agent.id).where(Agent.role == "admin",
                                               Agent.disabled_at.is_(None))
                        .order_by(Agent.id).with_for_update()).all()
        admin = aliased(Agent)
        other_admins = select(func.count(admin.id)).where(
            admin.role == "admin", admin.disabled_at.is_(None), admin.id != user_id
        ).correlate(None).scalar_subquery()
        done = session.execute(
            update(Agent).where(Agent.id == user_id, Agent.disabled_at.is_(None),
                                (Agent.role != "admin") | (other_admins > 0))
            .values(disabled_at=now).execution_options(synchronize_session=False)).rowcount
        agent = _user(session, user_id)
        session.refresh(agent)
        if done != 1 and agent.disabled_at is None:
            raise LastAdmin(f"{agent.username} is the last active admin; make another admin "
                            "first")
        _end_sessions(session, user_id)
        return _view(agent)


def set_trainee(user_id: int, trainee: bool, database_url: str | None = None) -> AgentView:
    """Mark an agent as a trainee (their replies wait for approval) or not. Only
    agents: supervisors and admins approve, they are never supervised."""
    with session_scope(database_url) as session:
        agent = _user(session, user_id)
        if trainee and agent.role != "agent":
            raise ValueError(f"only agents can be trainees; {agent.username} is a {agent.role}")
        agent.trainee = trainee
        return _view(agent)


def enable_user(user_id: int, database_url: str | None = None) -> AgentView:
    """Logins allowed again, from a clean slate of failed attempts."""
    with session_scope(database_url) as session:
        agent = _user(session, user_id)
        agent.disabled_at = None
        login_throttle.clear_user(session, agent.username)
        return _view(agent)


def reset_password(user_id: int, by_agent_id: int, password: str | None = None,
                   database_url: str | None = None) -> str:
    """An admin sets the user's password (or has one made: returned, to be shown
    once); the user's sessions end and any login lock on the name is lifted."""
    if user_id == by_agent_id:
        raise ValueError("to change your own password, use your account's password form")
    with session_scope(database_url) as session:
        username = _user(session, user_id).username
    if password is None:
        password = secrets.token_urlsafe(12)  # 16 characters, 96 random bits
    problem = password_problem(password, username)
    if problem:
        raise ValueError(problem)
    hashed = _hasher.hash(password)  # slow: outside the transaction
    with session_scope(database_url) as session:
        agent = _user(session, user_id)
        agent.password_hash = hashed
        login_throttle.clear_user(session, agent.username)
        _end_sessions(session, user_id)
    return password


class WrongPassword(ValueError):
    pass


def change_password(token: str, current: str, new: str, database_url: str | None = None,
                    address: str | None = None) -> None:
    """A user changes their own password: the current one is checked (and a wrong
    one counts as a failed login, so a stolen session cannot guess it); the user's
    other sessions end, this one stays."""
    now = utcnow()
    with session_scope(database_url) as session:
        row = session.get(DeskSession, token_hash(token))
        if row is None:
            raise NoSuchUser("this session has ended")
        agent = _user(session, row.agent_id)
        username, password_hash = agent.username, agent.password_hash
        pairs = login_throttle.keys(username, address)
        lock = login_throttle.locked(session, pairs, now)
        if lock is not None:
            raise Throttled(lock, now)
    if not _storable(current) or not _verify(password_hash, current):
        with session_scope(database_url) as session:
            login_throttle.record_failure(session, pairs, now)
        raise WrongPassword("the current password is wrong")
    problem = password_problem(new, username)
    if problem:
        raise ValueError(problem)
    if new == current:
        raise ValueError("the new password must differ from the current one")
    hashed = _hasher.hash(new)
    with session_scope(database_url) as session:
        agent = _user(session, row.agent_id)
        agent.password_hash = hashed
        login_throttle.clear_user(session, username)
        _end_sessions(session, agent.id, keep=token)


def agents_online(database_url: str | None = None, now: datetime | None = None) -> int:
    now = now or utcnow()
    with session_scope(database_url) as session:
        return int(session.execute(
            select(func.count(Agent.id)).where(Agent.last_seen_at >= now - ONLINE_WINDOW,
                                               Agent.role.in_(DESK_ROLES),
                                               Agent.disabled_at.is_(None))
        ).scalar() or 0)
