"""Failed password checks, counted per user name and per client address.

Kept in the database, not in a process, so every desk replica sees the same
count: guessing a password across replicas is as slow as against one. One row per
failure, written before the password is checked (`reserve`), so concurrent guesses
count too; while a name or an address is locked nothing more is recorded for it
(the attempt is refused before any password is checked), so a key never holds
more than a few rows and the rows older than `WINDOW + LOCKOUT` are pruned.

A name counts whether or not a user has it, so a lock says nothing about which
names exist. A success clears the name's count, not the address's: a guesser who
owns one account cannot reset its address's count by logging in to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Column, Index, Integer, String, delete, select
from sqlalchemy.orm import Session

from parley.bot.storage import Base, UTCDateTime

# A person mistypes a few times; a guesser tries thousands. Several people can
# share an address (an office behind one NAT), so it gets more room than a name.
LIMITS = {"user": 5, "address": 20}
WINDOW = timedelta(minutes=15)  # that many failures within this ...
LOCKOUT = timedelta(minutes=15)  # ... lock the name (or address) this long
KEY_MAX = 100


class LoginFailure(Base):
    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_key", "scope", "key", "failed_at"),
        Index("ix_login_failures_failed_at", "failed_at"),
    )

    id = Column(Integer, primary_key=True, autoincrement=True)
    scope = Column(String(8), nullable=False)  # "user" or "address"
    key = Column(String(KEY_MAX), nullable=False)
    failed_at = Column(UTCDateTime, nullable=False)


@dataclass(frozen=True)
class Lock:
    scope: str  # "user" or "address"
    until: datetime

    def seconds_left(self, now: datetime) -> int:
        return max(1, math.ceil((self.until - now).total_seconds()))

    def message(self, now: datetime) -> str:
        minutes = math.ceil(self.seconds_left(now) / 60)
        whose = "for this user" if self.scope == "user" else "from your address"
        return (f"Too many failed attempts {whose}; try again in {minutes} "
                f"minute{'s' if minutes != 1 else ''}.")


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def keys(username: str | None, address: str | None) -> list[tuple[str, str]]:
    """The (scope, key) pairs an attempt counts against; text no column can hold is
    left out (a name no user can have still counts against its address)."""
    out = []
    name = (username or "").strip().lower()
    if 0 < len(name) <= 64 and _storable(name):
        out.append(("user", name))
    if address and _storable(address):
        out.append(("address", address[:KEY_MAX]))
    return out


def _locked_until(times: list[datetime], limit: int, now: datetime) -> datetime | None:
    """The end of the latest lock still running: `limit` failures within WINDOW lock
    the key for LOCKOUT from the last of them."""
    times = sorted(times)
    until = None
    for last in range(limit - 1, len(times)):
        if times[last] - times[last - limit + 1] < WINDOW and times[last] + LOCKOUT > now:
            until = times[last] + LOCKOUT
    return until


def locked(session: Session, pairs: list[tuple[str, str]], now: datetime) -> Lock | None:
    """The lock on any of `pairs`, the user's first (its message is the clearer)."""
    for scope, key in pairs:
        times = list(session.execute(
            select(LoginFailure.failed_at).where(
                LoginFailure.scope == scope, LoginFailure.key == key,
                LoginFailure.failed_at > now - WINDOW - LOCKOUT)
        ).scalars())
        until = _locked_until(times, LIMITS[scope], now)
        if until is not None:
            return Lock(scope, until)
    return None


def record_failure(session: Session, pairs: list[tuple[str, str]], now: datetime
                   ) -> list[int]:
    """A failure for each pair; returns the rows' ids (see `reserve`)."""
    session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= now - WINDOW - LOCKOUT)
                    .execution_options(synchronize_session=False))
    rows = [LoginFailure(scope=scope, key=key, failed_at=now) for scope, key in pairs]
    session.add_all(rows)
    session.flush()
    return [int(row.id) for row in rows]


def reserve(session: Session, pairs: list[tuple[str, str]], now: datetime) -> list[int]:
    """Count an attempt as a failure before its password is checked, and commit that
    before `over_limit` counts: of many attempts at once, each sees at least every
    attempt committed before it, so no more than the limit are ever checked (a
    check-then-record would let them all through while Argon2 runs). A success
    takes its rows back (`release`)."""
    return record_failure(session, pairs, now)


def over_limit(session: Session, pairs: list[tuple[str, str]], now: datetime) -> Lock | None:
    """After `reserve`: a lock if this attempt is beyond a limit (more attempts within
    WINDOW than the limit), so it is refused unchecked. It stays counted: a burst of
    guesses locks the name as surely as the same guesses one by one."""
    for scope, key in pairs:
        times = list(session.execute(
            select(LoginFailure.failed_at).where(
                LoginFailure.scope == scope, LoginFailure.key == key,
                LoginFailure.failed_at > now - WINDOW)
        ).scalars())
        if len(times) > LIMITS[scope]:
            return Lock(scope, _locked_until(times, LIMITS[scope], now) or now + LOCKOUT)
    return None


def release(session: Session, ids: list[int]) -> None:
    """Take back a reservation: the right password is no failure."""
    if ids:
        session.execute(delete(LoginFailure).where(LoginFailure.id.in_(ids))
                        .execution_options(synchronize_session=False))


def clear_user(session: Session, username: str) -> None:
    """After a success (or an admin's reset): the name starts again from zero."""
    session.execute(delete(LoginFailure).where(LoginFailure.scope == "user",
                                               LoginFailure.key == username.strip().lower())
                    .execution_options(synchronize_session=False))
