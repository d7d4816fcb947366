"""The manager's numbers, read from the stored conversations, messages, tickets and surveys.

One function per chart (`CHARTS`), each taking `Filters` and returning plain JSON-able
data: `columns` (each value's key, label and kind) and `rows`, so that the page's
chart, its accessible table and the CSV download show the very same numbers. Core
statements that run unchanged on SQLite and PostgreSQL; medians are taken in Python
from durations the database computes, as SQLite has no percentile function.

Words the definitions below use:
- *in range*: created (messages, tickets, ratings) or started (surveys) at or after
  `start` 00:00 UTC and before the day after `end`, 00:00 UTC.
- *the filters*: the conversation's channel is one of `channels` and its language (the
  default language while none is known) one of `languages`; empty means any.
- *sent*: a bot, agent or system message delivered in the webhook's answer or through
  the outbox (delivery sync or push) without a lasting delivery error. Withheld bot
  replies (delivery none), internal notes and transcript-only lines are not sent.
- *followed by*: later in the same conversation, in the order messages were stored.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import (
    Float,
    and_,
    case,
    cast,
    distinct,
    exists,
    extract,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement, FromClause

from parley.bot.agents import Agent
from parley.bot.contract import REASONS
from parley.bot.conversations import Conversation, Message
from parley.bot.handoff.tickets import Rating, Ticket
from parley.bot.responses.channels import CHANNELS, DEFAULT_LANGUAGE, LANGUAGES
from parley.bot.storage import session_scope, utcnow
from parley.bot.survey import Survey, SurveyAnswer

MAX_DAYS = 366
DEFAULT_DAYS = 30
HOURLY_DAYS = 2  # a range of this many days or fewer is counted per hour
TOP = 20  # rows of the "top …" charts
TOP_INTENTS = 10
# A handoff this many customer turns after a bot reply counts against the reply.
HANDOFF_TURNS = 2
OUT_AUTHORS = ("bot", "agent", "system")
ANSWER_AUTHORS = ("bot", "agent")
SCORED_QUESTIONS = ("answer", "time", "agent")  # the 1-5 survey questions
SATISFIED = 4  # a score this high or higher is a satisfied customer (CSAT)
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2999, 12, 31)

M = Message.__table__
C = Conversation.__table__
T = Ticket.__table__
A = Agent.__table__
R = Rating.__table__
S = Survey.__table__
SA = SurveyAnswer.__table__

Row = dict[str, Any]


class FilterError(ValueError):
    """A filter the charts cannot use; the message says why, for a 400."""


def _listed(args: Mapping[str, Sequence[str]], key: str, known: Sequence[str]) -> tuple[str, ...]:
    """`?channel=a&channel=b` or `?channel=a,b`; every value must be a known one."""
    values = [v.strip() for raw in args.get(key, ()) for v in str(raw).split(",") if v.strip()]
    unknown = sorted({v for v in values if v not in known})
    if unknown:
        raise FilterError(f"unknown {key} {', '.join(repr(u[:40]) for u in unknown[:5])}; "
                          f"known: {', '.join(known)}")
    return tuple(dict.fromkeys(values))


def _day(args: Mapping[str, Sequence[str]], key: str) -> date | None:
    values = list(args.get(key, ()))
    if not values:
        return None
    if len(values) > 1:
        raise FilterError(f"'{key}' given {len(values)} times; give one date")
    try:
        value = date.fromisoformat(str(values[0]))
    except ValueError:
        raise FilterError(f"'{key}' must be a date such as 2026-11-24 (UTC), "
                          f"not {str(values[0])[:40]!r}") from None
    if not FIRST_DAY <= value <= LAST_DAY:
        raise FilterError(f"'{key}' must be between {FIRST_DAY} and {LAST_DAY}")
    return value


@dataclass(frozen=True)
class Filters:
    """What the manager asked for: whole UTC days from `start` to `end`, both included."""

    start: date
    end: date
    channels: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()

    KEYS = ("from", "to", "channel", "language")

    @classmethod
    def parse(cls, args: Mapping[str, Sequence[str]], today: date | None = None) -> Filters:
        """From query parameters (`from`, `to`, `channel`, `language`); the last
        DEFAULT_DAYS days up to today when no dates are given."""
        today = today or utcnow().date()
        start, end = _day(args, "from"), _day(args, "to")
        end = end or (max(today, start) if start else today)
        start = start or end - timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise FilterError(f"'from' ({start}) is after 'to' ({end})")
        if (end - start).days + 1 > MAX_DAYS:
            raise FilterError(f"the range is {(end - start).days + 1} days; "
                              f"at most {MAX_DAYS} days")
        return cls(start, end, _listed(args, "channel", tuple(CHANNELS)),
                   _listed(args, "language", LANGUAGES))

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time(), tzinfo=timezone.utc)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.end + timedelta(days=1), time(), tzinfo=timezone.utc)

    @property
    def hourly(self) -> bool:
        return (self.end - self.start).days + 1 <= HOURLY_DAYS

    def buckets(self) -> list[str]:
        """Every bucket's label, in the format `_bucket` gives the database's rows."""
        days = [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]
        if not self.hourly:
            return [d.isoformat() for d in days]
        return [f"{d.isoformat()} {h:02d}:00" for d in days for h in range(24)]

    def as_json(self) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(),
                "channels": list(self.channels), "languages": list(self.languages),
                "bucket": "hour" if self.hourly else "day"}

    def in_range(self, column: Any) -> list[ColumnElement]:
        return [column >= self.since, column < self.until]

    def scoped(self) -> list[ColumnElement]:
        """The conversation filters, on `conversations` (the caller joins it)."""
        where = []
        if self.channels:
            where.append(C.c.channel.in_(self.channels))
        if self.languages:
            where.append(func.coalesce(C.c.language, DEFAULT_LANGUAGE).in_(self.languages))
        return where

    @property
    def narrowed(self) -> bool:
        return bool(self.channels or self.languages)


def _join_scope(f: Filters, source: FromClause, conversation_id: Any) -> FromClause:
    """`source` joined to its conversation when the filters need it (it costs a join)."""
    return source.join(C, C.c.id == conversation_id) if f.narrowed else source


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _bucket(session: Session, column: Any, hourly: bool) -> ColumnElement:
    """The day ('2026-11-24') or hour ('2026-11-24 09:00') of a stored UTC time.
    Formats are literal SQL, so the select and GROUP BY spell the same expression."""
    if _dialect(session) == "postgresql":
        fmt = "'YYYY-MM-DD HH24:00'" if hourly else "'YYYY-MM-DD'"
        return func.to_char(column, literal_column(fmt))
    fmt = "'%Y-%m-%d %H:00'" if hourly else "'%Y-%m-%d'"
    return func.strftime(literal_column(fmt), column)


def _seconds(session: Session, start: Any, end: Any) -> ColumnElement:
    """`end - start` in seconds (NULL if either is)."""
    if _dialect(session) == "postgresql":
        return cast(extract("epoch", end - start), Float)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def _sent(table: Any) -> ColumnElement:
    return and_(table.c.author.in_(OUT_AUTHORS), table.c.delivery.in_(("sync", "push")),
                table.c.delivery_error.is_(None))


def _count(condition: ColumnElement) -> ColumnElement:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 1) if present else None


def _mean(values: Iterable[float | None], digits: int = 2) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.fmean(present), digits) if present else None


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _col(key: str, label: str, kind: str = "count") -> dict[str, str]:
    """kind: label (text), count, seconds, share (0-1), score (1-5), link (a path)."""
    return {"key": key, "label": label, "kind": kind}


@dataclass(frozen=True)
class Chart:
    title: str
    about: str  # the definition, shown under the chart
    compute: Callable[[Session, Filters], dict[str, Any]]
    columns: list[dict[str, str]] = field(default_factory=list)


# --- volume ---------------------------------------------------------------------------

def volume(session: Session, f: Filters) -> dict[str, Any]:
    """Inbound: customer messages in range. Outbound: sent messages in range. One row
    per bucket and channel that has either."""
    bucket = _bucket(session, M.c.created_at, f.hourly)
    rows = session.execute(
        select(bucket, C.c.channel, _count(M.c.author == "customer"), _count(_sent(M)))
        .select_from(M.join(C, C.c.id == M.c.conversation_id))
        # Naming the authors lets the (author, created_at) index find the range.
        .where(M.c.author.in_(("customer", *OUT_AUTHORS)), *f.in_range(M.c.created_at),
               *f.scoped())
        .group_by(bucket, C.c.channel).order_by(bucket, C.c.channel)).all()
    return {"rows": [{"bucket": b, "channel": ch, "inbound": int(i), "outbound": int(o)}
                     for b, ch, i, o in rows if i or o]}


# --- handled --------------------------------------------------------------------------

def _answer(table: Any) -> ColumnElement:
    """An answer to the customer: a sent bot or agent message. The system's notices
    (queue place, "an agent joined", survey questions) tell, they do not answer."""
    return and_(table.c.author.in_(ANSWER_AUTHORS), table.c.delivery.in_(("sync", "push")),
                table.c.delivery_error.is_(None))


def _last_answer(since: datetime | None) -> Any:
    """Per conversation, the id of its last answer (in or after the range, if `since`:
    an answer to a message in range can only come after the range began)."""
    query = select(M.c.conversation_id, func.max(M.c.id).label("last_id")).where(_answer(M))
    if since is not None:
        query = query.where(M.c.created_at >= since)
    return query.group_by(M.c.conversation_id).subquery("last_answer")


def _handled_parts(last: Any) -> tuple[Any, ColumnElement, ColumnElement]:
    source = M.outerjoin(last, last.c.conversation_id == M.c.conversation_id) \
        .join(C, C.c.id == M.c.conversation_id)
    # The gate finishes some messages itself (a survey answer, BOT in the queue): the
    # inbox marks them answered.
    answered = or_(last.c.last_id > M.c.id, M.c.inbox_state == "answered")
    waiting = and_(or_(last.c.last_id.is_(None), last.c.last_id < M.c.id),
                   or_(M.c.inbox_state.is_(None), M.c.inbox_state != "answered"))
    return source, answered, waiting


def handled(session: Session, f: Filters) -> dict[str, Any]:
    """Customer messages in range, per bucket: handled when the bot or an agent answered
    after it (a sent bot or agent message later in the conversation), or the gate
    finished it (a survey answer, BOT in the queue); not handled otherwise (no answer
    from anyone yet: a queue notice is not an answer). The oldest message not handled
    yet is searched over all time, not only the range (the filters still apply)."""
    source, answered, waiting = _handled_parts(_last_answer(f.since))
    where = [M.c.author == "customer", *f.in_range(M.c.created_at), *f.scoped()]
    bucket = _bucket(session, M.c.created_at, f.hourly)
    rows = session.execute(
        select(bucket, _count(answered), _count(waiting)).select_from(source)
        .where(*where).group_by(bucket).order_by(bucket)).all()
    source, _answered, waiting = _handled_parts(_last_answer(None))
    oldest = session.execute(
        select(M.c.id, M.c.conversation_id, C.c.channel, M.c.created_at).select_from(source)
        .where(M.c.author == "customer", M.c.created_at < f.until, *f.scoped(), waiting)
        .order_by(M.c.created_at, M.c.id).limit(1)).first()
    unhandled = None
    if oldest is not None:
        at = oldest.created_at.replace(tzinfo=timezone.utc)
        unhandled = {"message_id": oldest.id, "conversation_id": oldest.conversation_id,
                     "channel": oldest.channel, "created_at": at.isoformat(),
                     "waiting_seconds": int((utcnow() - at).total_seconds())}
    return {"rows": [{"bucket": b, "handled": int(h), "not_handled": int(n)}
                     for b, h, n in rows],
            "oldest_unhandled": unhandled}


# --- containment and handoffs ---------------------------------------------------------

def _active(f: Filters) -> Any:
    """Conversations with a customer message in range."""
    return (select(M.c.conversation_id).where(M.c.author == "customer",
                                              *f.in_range(M.c.created_at))
            .distinct().subquery("active"))


def containment(session: Session, f: Filters) -> dict[str, Any]:
    """Conversations with a customer message in range, per channel. Handed off: a
    ticket of theirs was open at some time in the range (created before its end, not
    resolved or abandoned before its start). Contained (the bot finished without a
    person): no such ticket, and every customer message of theirs in range answered
    (inbox state answered). The rest are still open (a message not answered yet).
    Containment = contained / conversations."""
    # One pass over the range's customer messages (a correlated EXISTS per conversation
    # took minutes on SQLite at 100,000 messages).
    not_answered = or_(M.c.inbox_state.is_(None), M.c.inbox_state != "answered")
    active = (select(M.c.conversation_id,
                     func.max(case((not_answered, 1), else_=0)).label("unanswered"))
              .where(M.c.author == "customer", *f.in_range(M.c.created_at))
              .group_by(M.c.conversation_id).subquery("active"))
    handed = exists(select(T.c.id).where(
        T.c.conversation_id == active.c.conversation_id, T.c.created_at < f.until,
        or_(T.c.resolved_at.is_(None), T.c.resolved_at >= f.since)))
    rows = session.execute(
        select(C.c.channel, func.count(), _count(handed),
               _count(and_(~handed, active.c.unanswered == 0)))
        .select_from(active.join(C, C.c.id == active.c.conversation_id))
        .where(*f.scoped()).group_by(C.c.channel).order_by(C.c.channel)).all()
    out = [{"channel": ch, "conversations": int(n), "contained": int(k),
            "handed_off": int(h), "open": int(n) - int(h) - int(k),
            "containment": _share(int(k), int(n))}
           for ch, n, h, k in rows]
    total = sum(r["conversations"] for r in out)
    kept, gave = sum(r["contained"] for r in out), sum(r["handed_off"] for r in out)
    return {"rows": out, "total": {"channel": "all", "conversations": total, "contained": kept,
                                   "handed_off": gave, "open": total - kept - gave,
                                   "containment": _share(kept, total)}}


def handoff_reasons(session: Session, f: Filters) -> dict[str, Any]:
    """Tickets created in range, per reason (every reason listed, zeros too). Rate =
    tickets with the reason / conversations with a customer message in range."""
    active = _active(f)
    conversations = int(session.execute(
        select(func.count()).select_from(_join_scope(f, active, active.c.conversation_id))
        .where(*f.scoped())).scalar() or 0)
    counts = dict(session.execute(
        select(T.c.reason, func.count()).select_from(_join_scope(f, T, T.c.conversation_id))
        .where(*f.in_range(T.c.created_at), *f.scoped()).group_by(T.c.reason)).all())
    reasons = list(REASONS) + sorted(set(counts) - set(REASONS))
    return {"rows": [{"reason": r, "handoffs": int(counts.get(r, 0)),
                      "rate": _share(int(counts.get(r, 0)), conversations)} for r in reasons],
            "conversations": conversations}


def _last_intent(context: Any) -> tuple[str, float | None] | None:
    """The intent that led to the handoff: the last of the ticket's context intents."""
    intents = context.get("intents") if isinstance(context, dict) else None
    if not isinstance(intents, list) or not intents or not isinstance(intents[-1], dict):
        return None
    name, confidence = intents[-1].get("intent"), intents[-1].get("confidence")
    if not isinstance(name, str) or not name:
        return None
    ok = isinstance(confidence, (int, float)) and not isinstance(confidence, bool)
    return name, float(confidence) if ok else None


def handoff_intents(session: Session, f: Filters) -> dict[str, Any]:
    """Tickets created in range, per the intent that led to the handoff (the last of
    the ticket's context intents), the 10 most frequent, with that intent's mean
    confidence. Tickets whose context holds no intent are left out."""
    contexts = session.execute(
        select(T.c.context).select_from(_join_scope(f, T, T.c.conversation_id))
        .where(*f.in_range(T.c.created_at), *f.scoped())).scalars()
    counts: Counter[str] = Counter()
    confidences: dict[str, list[float | None]] = defaultdict(list)
    for context in contexts:
        last = _last_intent(context)
        if last is not None:
            counts[last[0]] += 1
            confidences[last[0]].append(last[1])
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_INTENTS]
    return {"rows": [{"intent": name, "handoffs": n,
                      "confidence": _mean(confidences[name], 4)} for name, n in top]}


# --- times ----------------------------------------------------------------------------

def first_answer(session: Session, f: Filters) -> dict[str, Any]:
    """Per bucket, medians in seconds. Bot: customer messages in range the bot
    answered, from the message to the bot's first sent reply to it. Person: tickets
    created in range with an agent's reply, from the handoff to that first reply."""
    bot = M.alias("bot_reply")
    first = (select(bot.c.reply_to, func.min(bot.c.created_at).label("at"))
             .where(bot.c.author == "bot", _sent(bot), bot.c.reply_to.is_not(None),
                    bot.c.created_at >= f.since)
             .group_by(bot.c.reply_to).subquery("first_bot"))
    bot_rows = session.execute(
        select(_bucket(session, M.c.created_at, f.hourly),
               _seconds(session, M.c.created_at, first.c.at))
        .select_from(_join_scope(f, M.join(first, first.c.reply_to == M.c.id),
                                 M.c.conversation_id))
        .where(M.c.author == "customer", *f.in_range(M.c.created_at), *f.scoped())).all()
    person_rows = session.execute(
        select(_bucket(session, T.c.created_at, f.hourly),
               _seconds(session, T.c.created_at, T.c.first_reply_at))
        .select_from(_join_scope(f, T, T.c.conversation_id))
        .where(*f.in_range(T.c.created_at), T.c.first_reply_at.is_not(None),
               *f.scoped())).all()
    by_bot, by_person = defaultdict(list), defaultdict(list)
    for b, s in bot_rows:
        by_bot[b].append(float(s))
    for b, s in person_rows:
        by_person[b].append(float(s))
    return {"rows": [{"bucket": b, "bot_median": _median(by_bot[b]),
                      "bot_answered": len(by_bot[b]), "person_median": _median(by_person[b]),
                      "person_answered": len(by_person[b])}
                     for b in sorted(set(by_bot) | set(by_person))]}


def _ticket_times(session: Session, f: Filters, *extra: Any) -> list[Any]:
    """Tickets created in range: status, agent, team, queue, first answer and handle
    seconds (NULL where the step did not happen)."""
    return session.execute(
        select(T.c.status, T.c.team, T.c.assigned_agent_id, T.c.assigned_at.is_(None),
               _seconds(session, T.c.created_at, T.c.assigned_at),
               _seconds(session, T.c.created_at, T.c.first_reply_at),
               _seconds(session, T.c.assigned_at, T.c.resolved_at), *extra)
        .select_from(_join_scope(f, T, T.c.conversation_id)
                     .outerjoin(A, A.c.id == T.c.assigned_agent_id))
        .where(*f.in_range(T.c.created_at), *f.scoped())).all()


def _times(rows: list[Any]) -> Row:
    return {"tickets": len(rows),
            "queue_median": _median(r[4] for r in rows),
            "first_answer_median": _median(r[5] for r in rows),
            "handle_median": _median(r[6] for r in rows if r[0] == "resolved")}


def agents(session: Session, f: Filters) -> dict[str, Any]:
    """Tickets created in range, per the agent holding them last (transfers move a
    ticket to its new holder): tickets, resolved, median seconds in queue (handoff to
    claim), to the first answer (handoff to the agent's first reply: what the customer
    waited for a person) and of handling (claim to resolved, resolved tickets only)."""
    grouped: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for row in _ticket_times(session, f, A.c.display_name):
        if row[2] is not None and not row[3]:  # held by an agent (not dismissed unclaimed)
            grouped[(row[7] or f"#{row[2]}", row[2])].append(row)
    out = [{"agent": name, **_times(rows),
            "resolved": sum(1 for r in rows if r[0] == "resolved")}
           for (name, _id), rows in grouped.items()]
    out.sort(key=lambda r: (-r["tickets"], r["agent"]))
    return {"rows": out}


def teams(session: Session, f: Filters) -> dict[str, Any]:
    """Tickets created in range, per team: the same medians as per agent, and the
    tickets abandoned while waiting: closed (status abandoned) before any agent claimed
    them, the customer never served (they typed BOT, or went quiet and an agent
    dismissed the ticket from the queue)."""
    grouped: dict[str, list[Any]] = defaultdict(list)
    for row in _ticket_times(session, f):
        grouped[row[1]].append(row)
    out = []
    for team, rows in sorted(grouped.items()):
        gone = sum(1 for r in rows if r[0] == "abandoned" and r[3])
        out.append({"team": team, **_times(rows), "abandoned_waiting": gone,
                    "abandoned_share": _share(gone, len(rows))})
    return {"rows": out}


# --- satisfaction ---------------------------------------------------------------------

def _scores(session: Session, f: Filters) -> list[Any]:
    """Scored answers of surveys started in range: survey, ticket, agent, question, score."""
    return session.execute(
        select(S.c.id, S.c.ticket_id, S.c.agent_id, SA.c.question, SA.c.score)
        .select_from(_join_scope(f, S.join(SA, SA.c.survey_id == S.c.id), S.c.conversation_id))
        .where(*f.in_range(S.c.started_at), SA.c.question.in_(SCORED_QUESTIONS),
               SA.c.score.is_not(None), *f.scoped())).all()


def _survey_stats(rows: list[Any]) -> Row:
    per_question = {q: [r[4] for r in rows if r[3] == q] for q in SCORED_QUESTIONS}
    answer = per_question["answer"]
    return {"surveys": len({r[0] for r in rows}),
            **{f"{q}_mean": _mean(per_question[q]) for q in SCORED_QUESTIONS},
            "csat": _share(sum(1 for s in answer if s >= SATISFIED), len(answer))}


def satisfaction(session: Session, f: Filters) -> dict[str, Any]:
    """Surveys started in range with at least one scored answer, bot-only (no ticket)
    against handled by a person: the mean 1-5 score per question, and CSAT: the share
    of "answer" scores of 4 or 5."""
    rows = _scores(session, f)
    groups = (("bot only", [r for r in rows if r[1] is None]),
              ("person", [r for r in rows if r[1] is not None]))
    return {"rows": [{"handled_by": name, **_survey_stats(part)} for name, part in groups]}


def satisfaction_agents(session: Session, f: Filters) -> dict[str, Any]:
    """Per agent: the person-handled surveys started in range (as in `satisfaction`),
    and the older post-handoff ratings (1-5 per ticket) given in range."""
    names = dict(session.execute(select(A.c.id, A.c.display_name)).all())
    surveys: dict[int, list[Any]] = defaultdict(list)
    for row in _scores(session, f):
        if row[1] is not None and row[2] is not None:
            surveys[row[2]].append(row)
    ratings: dict[int, list[int]] = defaultdict(list)
    for agent_id, score in session.execute(
            select(T.c.assigned_agent_id, R.c.score)
            .select_from(_join_scope(f, R.join(T, T.c.id == R.c.ticket_id), T.c.conversation_id))
            .where(*f.in_range(R.c.created_at), T.c.assigned_agent_id.is_not(None),
                   *f.scoped())).all():
        ratings[agent_id].append(score)
    out = [{"agent": names.get(agent_id, f"#{agent_id}"), **_survey_stats(surveys[agent_id]),
            "ratings": len(ratings[agent_id]), "rating_mean": _mean(ratings[agent_id])}
           for agent_id in set(surveys) | set(ratings)]
    out.sort(key=lambda r: (-r["surveys"], -r["ratings"], r["agent"]))
    return {"rows": out}


# --- canned replies -------------------------------------------------------------------

def canned(session: Session, f: Filters) -> dict[str, Any]:
    """Sent messages in range rendered from a writer-owned reply (`reply_name`): the
    bot's, and agents' who picked a canned reply and sent it unchanged. The 20 most used."""
    rows = session.execute(
        select(M.c.reply_name, _count(M.c.author == "bot"), _count(M.c.author == "agent"))
        .select_from(_join_scope(f, M, M.c.conversation_id))
        .where(M.c.reply_name.is_not(None), M.c.author.in_(("bot", "agent")), _sent(M),
               *f.in_range(M.c.created_at), *f.scoped())
        .group_by(M.c.reply_name)).all()
    out = [{"reply": name, "by_bot": int(b), "by_agents": int(a), "total": int(b) + int(a)}
           for name, b, a in rows]
    out.sort(key=lambda r: (-r["total"], r["reply"]))
    return {"rows": out[:TOP]}


def canned_handoffs(session: Session, f: Filters) -> dict[str, Any]:
    """Bot replies sent in range (per `reply_name`) followed by a handoff within two
    turns: a ticket of the conversation created at or after the reply
    and before the customer's third message after it. A reply customers keep asking
    past is a reply whose text does not help. The 20 with the most such handoffs."""
    reply = M.alias("reply")
    later = M.alias("later")
    base = [reply.c.author == "bot", reply.c.reply_name.is_not(None), _sent(reply),
            *f.in_range(reply.c.created_at), *f.scoped()]
    sent = dict(session.execute(
        select(reply.c.reply_name, func.count())
        .select_from(_join_scope(f, reply, reply.c.conversation_id))
        .where(*base).group_by(reply.c.reply_name)).all())
    after = and_(T.c.conversation_id == reply.c.conversation_id,
                 T.c.created_at >= reply.c.created_at)
    # The customer's (HANDOFF_TURNS + 1)th message after the reply; only looked up
    # for replies that a ticket followed at all.
    cutoff = (select(later.c.created_at)
              .where(later.c.conversation_id == reply.c.conversation_id,
                     later.c.author == "customer", later.c.id > reply.c.id)
              .order_by(later.c.id).limit(1).offset(HANDOFF_TURNS).scalar_subquery())
    candidates = (select(reply.c.id, reply.c.conversation_id, reply.c.created_at,
                         reply.c.reply_name, cutoff.label("cutoff"))
                  .select_from(_join_scope(f, reply, reply.c.conversation_id))
                  .where(*base, exists(select(T.c.id).where(after)))
                  .subquery("candidates"))
    followed = dict(session.execute(
        select(candidates.c.reply_name, func.count(distinct(candidates.c.id)))
        .select_from(candidates.join(T, and_(
            T.c.conversation_id == candidates.c.conversation_id,
            T.c.created_at >= candidates.c.created_at,
            or_(candidates.c.cutoff.is_(None), T.c.created_at < candidates.c.cutoff))))
        .group_by(candidates.c.reply_name)).all())
    out = [{"reply": name, "sent": int(sent.get(name, 0)), "followed_by_handoff": int(n),
            "share": _share(int(n), int(sent.get(name, 0))),
            "editor": f"/library?reply={name}"} for name, n in followed.items() if n]
    out.sort(key=lambda r: (-r["followed_by_handoff"], -(r["share"] or 0), r["reply"]))
    return {"rows": out[:TOP]}


TIMES = [_col("tickets", "Tickets"), _col("queue_median", "Median time in queue", "seconds"),
         _col("first_answer_median", "Median time to first answer", "seconds"),
         _col("handle_median", "Median handle time", "seconds")]
SURVEY_COLUMNS = [_col("surveys", "Surveys answered"),
                  _col("answer_mean", "Answered the question (1-5)", "score"),
                  _col("time_mean", "Speed (1-5)", "score"),
                  _col("agent_mean", "Agent (1-5)", "score"),
                  _col("csat", "CSAT (answer 4-5)", "share")]

CHARTS: dict[str, Chart] = {
    "volume": Chart("Inbound and outbound messages", volume.__doc__ or "", volume, [
        _col("bucket", "Time", "label"), _col("channel", "Channel", "label"),
        _col("inbound", "Inbound"), _col("outbound", "Outbound")]),
    "handled": Chart("Handled and not handled", handled.__doc__ or "", handled, [
        _col("bucket", "Time", "label"), _col("handled", "Handled"),
        _col("not_handled", "Not handled")]),
    "containment": Chart("Containment", containment.__doc__ or "", containment, [
        _col("channel", "Channel", "label"), _col("conversations", "Conversations"),
        _col("contained", "Bot only"), _col("handed_off", "Handed off"), _col("open", "Open"),
        _col("containment", "Containment", "share")]),
    "handoff_reasons": Chart("Handoffs by reason", handoff_reasons.__doc__ or "",
                             handoff_reasons, [
        _col("reason", "Reason", "label"), _col("handoffs", "Handoffs"),
        _col("rate", "Rate (per conversation)", "share")]),
    "handoff_intents": Chart("Top intents ending in a handoff", handoff_intents.__doc__ or "",
                             handoff_intents, [
        _col("intent", "Intent", "label"), _col("handoffs", "Handoffs"),
        _col("confidence", "Mean confidence", "share")]),
    "first_answer": Chart("Time to first answer", first_answer.__doc__ or "", first_answer, [
        _col("bucket", "Time", "label"), _col("bot_median", "Bot: median", "seconds"),
        _col("bot_answered", "Bot: answered"),
        _col("person_median", "Person: median", "seconds"),
        _col("person_answered", "Person: answered")]),
    "agents": Chart("Per agent", agents.__doc__ or "", agents, [
        _col("agent", "Agent", "label"), *TIMES, _col("resolved", "Resolved")]),
    "teams": Chart("Per team", teams.__doc__ or "", teams, [
        _col("team", "Team", "label"), *TIMES,
        _col("abandoned_waiting", "Abandoned while waiting"),
        _col("abandoned_share", "Abandoned share", "share")]),
    "satisfaction": Chart("Satisfaction", satisfaction.__doc__ or "", satisfaction, [
        _col("handled_by", "Handled by", "label"), *SURVEY_COLUMNS]),
    "satisfaction_agents": Chart("Satisfaction per agent", satisfaction_agents.__doc__ or "",
                                 satisfaction_agents, [
        _col("agent", "Agent", "label"), *SURVEY_COLUMNS,
        _col("ratings", "Ratings"), _col("rating_mean", "Rating (1-5)", "score")]),
    "canned": Chart("Top canned replies", canned.__doc__ or "", canned, [
        _col("reply", "Reply", "label"), _col("by_bot", "By the bot"),
        _col("by_agents", "By agents"), _col("total", "Total")]),
    "canned_handoffs": Chart("Replies followed by a handoff", canned_handoffs.__doc__ or "",
                             canned_handoffs, [
        _col("reply", "Reply", "label"), _col("sent", "Sent by the bot"),
        _col("followed_by_handoff", "Followed by a handoff"),
        _col("share", "Share", "share"), _col("editor", "Edit", "link")]),
}


def about(text: str) -> str:
    """A docstring as one paragraph of plain text for the page."""
    return " ".join(text.replace("`", "").split())


def run(name: str, f: Filters, database_url: str | None = None) -> dict[str, Any]:
    """One chart's data: its rows and what they mean; KeyError for an unknown chart."""
    chart = CHARTS[name]
    with session_scope(database_url) as session:
        data = chart.compute(session, f)
    return {"chart": name, "title": chart.title, "about": about(chart.about),
            "filters": f.as_json(), "buckets": f.buckets(), "columns": chart.columns, **data}
