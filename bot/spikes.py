"""Inbound spike alerts: customers suddenly writing far more than usual.

The rule, checked by the desk every minute (`check`):

- *count*: customer messages (`messages.author = 'customer'`) created in the last
  10 minutes, `now - 10 min < created_at <= now`.
- *usual*: the mean count per 10 minutes during the same hour of the week in the
  previous weeks that have data. The hour is the clock hour holding `now` in the
  team's time zone (support hours'), so it follows the local clock across daylight
  saving changes. Week k (1 to 4) is the hour [h - k weeks, h - k weeks + 1 h) on the
  same wall clock; it has data when the first customer message ever stored is at or
  before its start (the bot was already live: an empty hour then means a quiet one,
  not a bot that did not exist). usual = messages in those hours / (6 × weeks);
  with no such week, usual is unknown and nothing is raised (no history to compare).
- A spike starts when count >= minimum and count > factor × usual, and none is
  active; it ends at the first check where that no longer holds.

Desk replicas share the database and each runs the check: the row is inserted
with ON CONFLICT DO NOTHING against a partial unique index (one active spike per
kind), and ended by a guarded update, so each spike is raised and ended once.
The webhook's delivery state lives in the same row (`parley.bot.alert_webhook`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from sqlalchemy import Column, Float, Index, Integer, String, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from parley.bot.conversations import Message
from parley.bot.storage import Base, UTCDateTime, session_scope, utcnow

WINDOW = timedelta(minutes=10)
SLOTS_PER_HOUR = 6  # 10-minute windows in an hour
HISTORY_WEEKS = 4
KIND = "inbound"  # all customer messages; room for per-channel kinds later
# The webhook's delivery: "off" (none configured when the spike started), "pending",
# "sending" (a desk process holds it until webhook_claimed_until), "sent", "failed".
WEBHOOK_STATES = ("off", "pending", "sending", "sent", "failed")
_ACTIVE = text("ended_at IS NULL")


class SpikeAlert(Base):
    __tablename__ = "spike_alerts"
    __table_args__ = (Index("one_active_spike", "kind", unique=True,
                            sqlite_where=_ACTIVE, postgresql_where=_ACTIVE),)

    id = Column(Integer, primary_key=True, autoincrement=True)
    kind = Column(String(16), nullable=False, default=KIND)
    started_at = Column(UTCDateTime, nullable=False)
    ended_at = Column(UTCDateTime, nullable=True)
    count = Column(Integer, nullable=False)  # in the 10 minutes before it started
    latest_count = Column(Integer, nullable=False)  # at the last check that saw it
    peak_count = Column(Integer, nullable=False)
    checked_at = Column(UTCDateTime, nullable=False)
    usual = Column(Float, nullable=False)  # per 10 minutes, when it started
    weeks = Column(Integer, nullable=False)  # weeks of history behind `usual`
    factor = Column(Float, nullable=False)  # the rule it broke
    minimum = Column(Integer, nullable=False)
    webhook_state = Column(String(16), nullable=False, default="off")
    webhook_attempts = Column(Integer, nullable=False, default=0)
    webhook_error = Column(String(300), nullable=True)
    webhook_sent_at = Column(UTCDateTime, nullable=True)
    webhook_claimed_until = Column(UTCDateTime, nullable=True)


@dataclass(frozen=True)
class Rule:
    factor: float = 3.0
    minimum: int = 20
    zone: tzinfo = timezone.utc  # whose clock "the same hour of the week" is read on


@dataclass(frozen=True)
class Reading:
    at: datetime
    count: int
    usual: float | None  # None: no earlier week with data
    weeks: int

    def is_spike(self, rule: Rule) -> bool:
        return (self.usual is not None and self.count >= rule.minimum
                and self.count > rule.factor * self.usual)


@dataclass(frozen=True)
class Spike:
    id: int
    started_at: datetime
    ended_at: datetime | None
    count: int
    latest_count: int
    peak_count: int
    usual: float
    weeks: int
    factor: float
    minimum: int
    webhook_state: str
    webhook_attempts: int
    webhook_error: str | None
    webhook_sent_at: datetime | None

    @classmethod
    def of(cls, row: SpikeAlert) -> Spike:
        return cls(row.id, row.started_at, row.ended_at, row.count, row.latest_count,
                   row.peak_count, row.usual, row.weeks, row.factor, row.minimum,
                   row.webhook_state, row.webhook_attempts or 0, row.webhook_error,
                   row.webhook_sent_at)

    def as_json(self, webhook: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "count": self.count, "latest_count": self.latest_count,
            "peak_count": self.peak_count, "usual": round(self.usual, 2), "weeks": self.weeks,
            "factor": self.factor, "minimum": self.minimum,
            "window_minutes": int(WINDOW.total_seconds() // 60)}
        if webhook:
            data["webhook"] = {
                "state": self.webhook_state, "attempts": self.webhook_attempts,
                "error": self.webhook_error,
                "sent_at": self.webhook_sent_at.isoformat() if self.webhook_sent_at else None}
        return data


@dataclass(frozen=True)
class Outcome:
    """What one check saw and did; `started`/`ended` only for the process that did it."""

    reading: Reading
    active: Spike | None
    started: Spike | None = None
    ended: Spike | None = None


def _count(session: Session, *window: Any) -> int:
    return int(session.execute(select(func.count()).select_from(Message)
                               .where(Message.author == "customer", *window)).scalar() or 0)


def history_hours(now: datetime, zone: tzinfo) -> list[tuple[datetime, datetime]]:
    """The same hour of the week in each previous week, newest first, on the local
    wall clock (across a daylight saving change it is 167 or 169 hours back)."""
    hour = now.astimezone(zone).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    hours = []
    for weeks in range(1, HISTORY_WEEKS + 1):
        start = (hour - timedelta(weeks=weeks)).replace(tzinfo=zone).astimezone(timezone.utc)
        hours.append((start, start + timedelta(hours=1)))
    return hours


def measure(session: Session, now: datetime, zone: tzinfo = timezone.utc) -> Reading:
    count = _count(session, Message.created_at > now - WINDOW, Message.created_at <= now)
    first = session.execute(
        select(func.min(Message.created_at)).where(Message.author == "customer")).scalar()
    if first is None:
        return Reading(now, count, None, 0)
    first = first if first.tzinfo else first.replace(tzinfo=timezone.utc)
    live = [(start, end) for start, end in history_hours(now, zone) if first <= start]
    if not live:
        return Reading(now, count, None, 0)
    total = sum(_count(session, Message.created_at >= start, Message.created_at < end)
                for start, end in live)
    return Reading(now, count, total / (SLOTS_PER_HOUR * len(live)), len(live))


def _active(session: Session) -> SpikeAlert | None:
    return session.execute(
        select(SpikeAlert).where(SpikeAlert.kind == KIND, SpikeAlert.ended_at.is_(None))
    ).scalar_one_or_none()


def _start(session: Session, reading: Reading, rule: Rule, webhook: bool) -> bool:
    """Insert the spike unless one is active (another replica's included): True if ours."""
    assert reading.usual is not None
    values = {"kind": KIND, "started_at": reading.at, "count": reading.count,
              "latest_count": reading.count, "peak_count": reading.count,
              "checked_at": reading.at, "usual": reading.usual, "weeks": reading.weeks,
              "factor": rule.factor, "minimum": rule.minimum,
              "webhook_state": "pending" if webhook else "off", "webhook_attempts": 0}
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    return session.execute(insert(SpikeAlert).values(**values).on_conflict_do_nothing()
                           ).rowcount == 1


def check(rule: Rule, *, webhook: bool = False, now: datetime | None = None,
          database_url: str | None = None) -> Outcome:
    """Measure, then start, update or end the active spike. `webhook`: whether this
    process has a webhook to call (the new spike's delivery is then pending)."""
    now = now or utcnow()
    with session_scope(database_url) as session:
        reading = measure(session, now, rule.zone)
        calm = not reading.is_spike(rule) and _active(session) is None
    if calm:  # the usual case: nothing to write
        return Outcome(reading, None)
    with session_scope(database_url) as session:
        # Each write comes first in its transaction: no stale snapshot to upgrade.
        if reading.is_spike(rule):
            started = _start(session, reading, rule, webhook)
            active = _active(session)
            if active is not None and not started:
                active.latest_count = reading.count
                active.peak_count = max(active.peak_count, reading.count)
                active.checked_at = now
                session.flush()
            spike = Spike.of(active) if active is not None else None
            return Outcome(reading, spike, started=spike if started else None)
        ended = session.execute(
            update(SpikeAlert).where(SpikeAlert.kind == KIND, SpikeAlert.ended_at.is_(None))
            .values(ended_at=now, latest_count=reading.count, checked_at=now)
            .execution_options(synchronize_session=False)).rowcount == 1
        if not ended:
            return Outcome(reading, None)
        row = session.execute(select(SpikeAlert).where(SpikeAlert.kind == KIND)
                              .order_by(SpikeAlert.id.desc()).limit(1)).scalar_one()
        return Outcome(reading, None, ended=Spike.of(row))


def active(database_url: str | None = None) -> Spike | None:
    with session_scope(database_url) as session:
        row = _active(session)
        return Spike.of(row) if row is not None else None


def history(limit: int = 50, database_url: str | None = None) -> list[Spike]:
    with session_scope(database_url) as session:
        rows = session.execute(select(SpikeAlert).order_by(SpikeAlert.id.desc()).limit(limit)
                               ).scalars()
        return [Spike.of(row) for row in rows]


def claim_webhooks(lease: timedelta, now: datetime | None = None,
                   database_url: str | None = None) -> list[Spike]:
    """Take the spikes whose webhook is due: pending, or held by a process whose
    lease ran out (it died mid-send). Each is taken by one process."""
    now = now or utcnow()
    due = or_(SpikeAlert.webhook_state == "pending",
              (SpikeAlert.webhook_state == "sending") & (SpikeAlert.webhook_claimed_until < now))
    taken = []
    with session_scope(database_url) as session:
        ids = session.execute(select(SpikeAlert.id).where(due).order_by(SpikeAlert.id)
                              ).scalars().all()
        for spike_id in ids:
            won = session.execute(
                update(SpikeAlert).where(SpikeAlert.id == spike_id, due)
                .values(webhook_state="sending", webhook_claimed_until=now + lease)
                .execution_options(synchronize_session=False)).rowcount == 1
            if won:
                taken.append(spike_id)
        rows = session.execute(select(SpikeAlert).where(SpikeAlert.id.in_(taken))
                               .order_by(SpikeAlert.id)).scalars()
        return [Spike.of(row) for row in rows]


def record_webhook(spike_id: int, *, error: str | None, final: bool,
                   database_url: str | None = None) -> None:
    """One attempt's result: sent (error None), failed for good (`final`), or to retry."""
    values: dict[str, Any] = {"webhook_attempts": SpikeAlert.webhook_attempts + 1,
                              "webhook_error": error[:300] if error else None}
    if error is None:
        values.update(webhook_state="sent", webhook_sent_at=utcnow(),
                      webhook_claimed_until=None)
    elif final:
        values.update(webhook_state="failed", webhook_claimed_until=None)
    with session_scope(database_url) as session:
        session.execute(update(SpikeAlert).where(SpikeAlert.id == spike_id,
                                                 SpikeAlert.webhook_state == "sending")
                        .values(**values).execution_options(synchronize_session=False))
