"""A customer's data: export it, erase it, and forget old conversations (retention).

"One customer" is a list of conversation ids, one per channel they wrote from
(`telegram:123`, `whatsapp:351912345678`); an export includes their contacts
(`parley.bot.contacts`), each with those of the ids it groups and a count of its
other conversations (never their ids: a WhatsApp id is a phone number). What is
stored about a conversation, and covered here:

- Parley's database: the conversation (name, language), its messages (customer,
  bot and agent turns, agents' notes), its tickets (reason, context packet, tags,
  and the old 1-5 ratings), its surveys and their answers, the desk events that
  name it or its tickets, and its contact data: the phone and email hashes seen in
  it and its link to a contact (a contact left with fewer than two conversations
  goes too);
- Rasa's tracker store: every event of the conversation (`parley.bot.tracker_events`).

Each act is in the audit trail (`parley.bot.audit`), with counts, never content.
An erasure deletes in one transaction per store: Parley's first, with its audit
entry, then the tracker's, whose count is added to the entry. If the tracker
store fails, the error says so and erasing again finishes the job (what is gone
stays gone; an erasure is idempotent). A conversation with an open ticket is not
erased: an agent is working on it; resolve or dismiss the ticket first. If the
customer writes again later, that is a new conversation record from then on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from parley.bot import audit, contacts, tracker_events
from parley.bot.agents import Agent
from parley.bot.conversations import Conversation, Message
from parley.bot.events import DeskEvent
from parley.bot.handoff.approvals import ReplyReview
from parley.bot.handoff.tickets import OPEN, Rating, Ticket
from parley.bot.storage import Base, session_scope, utcnow
from parley.bot.survey import Survey, SurveyAnswer

EXPORT_FORMAT = "parley-customer-export/1"
MAX_CONVERSATIONS = 50  # per export or erasure: one customer's channels, with room
# "<channel>:<the platform's id>", as the connectors build them (Telegram's group
# chats are negative numbers; the web chat's senders are letters, digits, - and _).
CONVERSATION_ID = re.compile(r"[a-z][a-z0-9_]{0,31}:[A-Za-z0-9_.@+=-]{1,160}")
# Worker plumbing (leases, send claims, retries): about our processes, not the customer.
INTERNAL = {"lease_owner", "lease_until", "claimed_by", "claimed_until", "attempts",
            "retry_at", "failed_turn"}
RETENTION_BATCH = 1000  # rows per table per run: a backlog goes in short transactions


class NotErased(Exception):
    """Refused as things stand; nothing was erased."""


class OpenTickets(NotErased):
    """Conversations an agent may be working on."""

    def __init__(self, tickets: dict[int, str]) -> None:
        self.tickets = tickets
        listed = ", ".join(f"ticket {t} ({c})" for t, c in sorted(tickets.items()))
        super().__init__(f"{listed} still open: resolve or dismiss it first; "
                         "nothing was erased")


class InProgress(NotErased):
    """A worker is answering one of the conversations: Rasa would write its tracker
    (and we our reply) after the erasure, so it waits for the turn to end."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(f"a message of {', '.join(sorted(ids))} is being answered right now; "
                         "nothing was erased: try again in a few seconds")


class ChangedMeanwhile(NotErased):
    def __init__(self) -> None:
        super().__init__("the conversation changed while it was being erased (a new "
                         "message?); nothing was erased: try again")


class TrackerNotErased(Exception):
    """Parley's data is gone, Rasa's tracker events are not: erase again."""


def parse_ids(values: Iterable[object]) -> list[str]:
    """Distinct conversation ids in the order given; ValueError saying which is wrong."""
    ids: list[str] = []
    for value in values:
        if not isinstance(value, str) or not CONVERSATION_ID.fullmatch(value):
            shown = repr(value)[:80]
            raise ValueError(f"{shown} is not a conversation id such as telegram:123 or "
                             "whatsapp:351912345678 (<channel>:<id on the platform>)")
        if value not in ids:
            ids.append(value)
    if not ids:
        raise ValueError("name at least one conversation id, such as telegram:123")
    if len(ids) > MAX_CONVERSATIONS:
        raise ValueError(f"{len(ids)} conversations; at most {MAX_CONVERSATIONS} at once")
    return ids


# -- export -----------------------------------------------------------------------------


def _value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (datetime, date)) else value


def _row(obj: Base, leave_out: Iterable[str] = ()) -> dict[str, Any]:
    skip = INTERNAL | set(leave_out)
    return {c.key: _value(getattr(obj, c.key)) for c in obj.__mapper__.column_attrs
            if c.key not in skip}


@dataclass
class Gathered:
    """Everything Parley's database holds about some conversations, as plain data."""

    conversations: dict[str, dict[str, Any]] = field(default_factory=dict)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    agent_ids: set[int] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)


def _empty(conversation_id: str) -> dict[str, Any]:
    return {"id": conversation_id, "messages": [], "tickets": [], "surveys": [],
            "desk_events": [], "contact_identifiers": [], "contact_link": None}


def _gather(session: Session, ids: list[str]) -> Gathered:
    out = Gathered()
    rows = 0
    for conversation in session.execute(select(Conversation).where(Conversation.id.in_(ids))
                                        ).scalars():
        rows += 1
        out.conversations[conversation.id] = {**_empty(conversation.id), **_row(conversation)}

    def holder(conversation_id: str) -> dict[str, Any]:
        # Rows of a conversation whose own row is gone (never expected: the keys are
        # foreign keys) are still exported.
        return out.conversations.setdefault(conversation_id, _empty(conversation_id))

    notes: dict[int, list[dict[str, Any]]] = {}
    messages = session.execute(select(Message).where(Message.conversation_id.in_(ids))
                               .order_by(Message.id)).scalars().all()
    for message in messages:
        row = _row(message)
        if message.agent_id:
            out.agent_ids.add(message.agent_id)
        if message.author == "note" and message.ticket_id:
            notes.setdefault(message.ticket_id, []).append(row)
        else:
            holder(message.conversation_id)["messages"].append(row)
    tickets = session.execute(select(Ticket).where(Ticket.conversation_id.in_(ids))
                              .order_by(Ticket.id)).scalars().all()
    ticket_ids = [t.id for t in tickets]
    ratings = {r.ticket_id: r for r in session.execute(
        select(Rating).where(Rating.ticket_id.in_(ticket_ids))).scalars()} if ticket_ids else {}
    reviews: dict[int, list[dict[str, Any]]] = {}  # trainees' replies held for approval
    for review in session.execute(select(ReplyReview).where(
            ReplyReview.conversation_id.in_(ids)).order_by(ReplyReview.id)).scalars():
        out.agent_ids.update(i for i in (review.agent_id, review.decided_by) if i)
        reviews.setdefault(review.ticket_id, []).append(
            _row(review, ("ticket_id", "conversation_id")))
    for ticket in tickets:
        if ticket.assigned_agent_id:
            out.agent_ids.add(ticket.assigned_agent_id)
        rating = ratings.get(ticket.id)
        holder(ticket.conversation_id)["tickets"].append({
            **_row(ticket), "notes": notes.get(ticket.id, []),
            "reply_reviews": reviews.get(ticket.id, []),
            "rating": _row(rating, ("ticket_id",)) if rating else None})
    surveys = session.execute(select(Survey).where(Survey.conversation_id.in_(ids))
                              .order_by(Survey.id)).scalars().all()
    answers: dict[int, list[dict[str, Any]]] = {}
    if surveys:
        for answer in session.execute(select(SurveyAnswer).where(
                SurveyAnswer.survey_id.in_([s.id for s in surveys])).order_by(SurveyAnswer.id)
                                      ).scalars():
            answers.setdefault(answer.survey_id, []).append(_row(answer, ("survey_id",)))
    for survey in surveys:
        if survey.agent_id:
            out.agent_ids.add(survey.agent_id)
        holder(survey.conversation_id)["surveys"].append(
            {**_row(survey), "answers": answers.get(survey.id, [])})
    of_ticket = {t.id: t.conversation_id for t in tickets}
    named = [DeskEvent.conversation_id.in_(ids)]
    if ticket_ids:
        named.append(DeskEvent.ticket_id.in_(ticket_ids))
    desk_events = session.execute(select(DeskEvent).where(or_(*named)).order_by(DeskEvent.id)
                                  ).scalars().all()
    for desk_event in desk_events:
        owner = of_ticket.get(desk_event.ticket_id) or desk_event.conversation_id
        holder(owner)["desk_events"].append(_row(desk_event))
    identifiers, links, linked, members, others = contacts.rows_of(session, ids)
    for identifier in identifiers:
        holder(identifier.conversation_id)["contact_identifiers"].append(
            _row(identifier, ("conversation_id",)))
    for link in links:
        if link.agent_id:
            out.agent_ids.add(link.agent_id)
        holder(link.conversation_id)["contact_link"] = _row(link, ("conversation_id",))
    out.contacts = [{**_row(contact), "conversations": members.get(contact.id, []),
                     "other_conversations": others.get(contact.id, 0)} for contact in linked]
    out.counts = {"conversations": rows,
                  "messages": len(messages), "tickets": len(tickets), "ratings": len(ratings),
                  "surveys": len(surveys),
                  "survey_answers": sum(len(a) for a in answers.values()),
                  "desk_events": len(desk_events),
                  "reply_reviews": sum(len(r) for r in reviews.values()),
                  "contact_identifiers": len(identifiers), "contact_links": len(links)}
    return out


def export(conversation_ids: Iterable[str], actor: str,
           database_url: str | None = None) -> dict[str, Any]:
    """Everything stored about these conversations, JSON-able, grouped by conversation
    (messages, tickets with their notes and rating, surveys with their answers, desk
    events, contact identifiers and link, Rasa's tracker events), with their contacts
    (each listing those of these conversations it groups, and counting its others),
    recorded in the audit trail. Ids with nothing stored are listed in `not_found`."""
    ids = parse_ids(conversation_ids)
    location = tracker_events.locate()  # a configuration error stops the export here
    tracker = tracker_events.events_of(location, ids)
    with session_scope(database_url) as session:
        gathered = _gather(session, ids)
        names = dict(session.execute(select(Agent.id, Agent.display_name)
                                     .where(Agent.id.in_(gathered.agent_ids))).all()
                     ) if gathered.agent_ids else {}
        conversations = []
        for cid in ids:
            data = gathered.conversations.get(cid)
            if data is None and cid not in tracker:
                continue
            data = data or _empty(cid)
            conversations.append({**data, "tracker_events": tracker.get(cid, [])})
        found = [c["id"] for c in conversations]
        counts = {**gathered.counts,
                  "tracker_events": sum(len(events) for events in tracker.values())}
        if found:
            audit.record(session, actor, "export", found, counts)
    return {"format": EXPORT_FORMAT, "exported_at": utcnow().isoformat(),
            "conversations": conversations,
            "not_found": [cid for cid in ids if cid not in found],
            "contacts": gathered.contacts,
            "agents": {str(agent_id): name for agent_id, name in sorted(names.items())},
            "counts": counts}


def preview(conversation_ids: Iterable[str], database_url: str | None = None
            ) -> dict[str, int]:
    """What an erasure would delete, in counts (nothing is read out, nothing recorded)."""
    ids = parse_ids(conversation_ids)
    tracker = tracker_events.events_of(tracker_events.locate(), ids)
    with session_scope(database_url) as session:
        counts = _gather(session, ids).counts
    return {**counts, "tracker_events": sum(len(events) for events in tracker.values())}


# -- erasure ----------------------------------------------------------------------------


def _delete_conversations(session: Session, ids: list[str]) -> dict[str, int]:
    ticket_ids = session.execute(select(Ticket.id).where(Ticket.conversation_id.in_(ids))
                                 ).scalars().all()
    survey_ids = session.execute(select(Survey.id).where(Survey.conversation_id.in_(ids))
                                 ).scalars().all()

    def gone(statement: Any) -> int:
        return int(session.execute(statement.execution_options(synchronize_session=False)
                                   ).rowcount)

    named = [DeskEvent.conversation_id.in_(ids)]
    if ticket_ids:
        named.append(DeskEvent.ticket_id.in_(ticket_ids))
    counts = {
        "survey_answers": gone(delete(SurveyAnswer).where(SurveyAnswer.survey_id.in_(survey_ids)))
        if survey_ids else 0,
        "surveys": gone(delete(Survey).where(Survey.conversation_id.in_(ids))),
        "ratings": gone(delete(Rating).where(Rating.ticket_id.in_(ticket_ids)))
        if ticket_ids else 0,
        "desk_events": gone(delete(DeskEvent).where(or_(*named))),
        "reply_reviews": gone(delete(ReplyReview).where(ReplyReview.conversation_id.in_(ids))),
        "messages": gone(delete(Message).where(Message.conversation_id.in_(ids))),
        "tickets": gone(delete(Ticket).where(Ticket.conversation_id.in_(ids))),
        **contacts.forget(session, ids),
    }
    counts["conversations"] = gone(delete(Conversation).where(Conversation.id.in_(ids)))
    return counts


def erase(conversation_ids: Iterable[str], actor: str,
          database_url: str | None = None) -> dict[str, Any]:
    """Delete everything stored about these conversations, on every channel named,
    Rasa's tracker included; returns the counts (recorded in the audit trail)."""
    ids = parse_ids(conversation_ids)
    location = tracker_events.locate()  # a configuration error stops it before anything goes
    in_tracker = tracker_events.present(location, ids)
    try:
        with session_scope(database_url) as session:
            # The contact lock first, as contact changes take it before they lock a
            # conversation's row (`contacts.serialise`): a link waits, or is waited for.
            contacts.serialise(session)
            # Row locks: a handoff racing the erasure waits, then finds no conversation.
            found = set(session.execute(select(Conversation.id).where(Conversation.id.in_(ids))
                                        .with_for_update()).scalars())
            still_open = dict(session.execute(
                select(Ticket.id, Ticket.conversation_id)
                .where(Ticket.conversation_id.in_(ids), Ticket.status.in_(OPEN))).all())
            if still_open:
                raise OpenTickets(still_open)
            answering = session.execute(select(Conversation.id).where(
                Conversation.id.in_(ids), Conversation.lease_until > utcnow())).scalars().all()
            if answering:
                raise InProgress(list(answering))
            counts = _delete_conversations(session, ids)
            entry = audit.record(session, actor, "erase", ids,
                                 {**counts, "tracker_events": None})
    except IntegrityError:
        # A message stored for the conversation in the meantime (PostgreSQL's foreign
        # keys refuse the delete): the transaction rolled back whole.
        raise ChangedMeanwhile() from None
    try:
        removed = tracker_events.delete_events(location, ids)
    except Exception as exc:
        audit.amend(entry.id, {"tracker_error": exc.__class__.__name__}, database_url)
        raise TrackerNotErased(f"Parley's data for {', '.join(ids)} is erased, but Rasa's "
                               f"tracker store failed ({exc.__class__.__name__}); "
                               "erase again to finish") from exc
    audit.amend(entry.id, {"tracker_events": removed}, database_url)
    return {"erased": {**counts, "tracker_events": removed},
            "not_found": [cid for cid in ids if cid not in found and cid not in in_tracker]}


# -- retention --------------------------------------------------------------------------


@dataclass(frozen=True)
class Retention:
    counts: dict[str, int]
    more: bool  # a batch was full: run again soon


def _oldest(session: Session, query: Any, batch: int) -> list[Any]:
    """Up to `batch` ids, locked; other desk replicas running the same job skip them
    (PostgreSQL) or wait for the file lock (SQLite), so each row goes once."""
    return list(session.execute(query.limit(batch).with_for_update(skip_locked=True)
                                ).scalars())


def _retain(session: Session, cutoff: datetime, now: datetime, batch: int) -> dict[str, int]:
    def gone(statement: Any) -> int:
        return int(session.execute(statement.execution_options(synchronize_session=False)
                                   ).rowcount)

    counts: dict[str, int] = {}
    contacts.serialise(session)  # before any row lock, as in `erase`
    survey_ids = _oldest(session, select(Survey.id).where(
        func.coalesce(Survey.finished_at, Survey.started_at) < cutoff).order_by(Survey.id),
        batch)
    counts["survey_answers"] = gone(delete(SurveyAnswer).where(
        SurveyAnswer.survey_id.in_(survey_ids))) if survey_ids else 0
    counts["surveys"] = gone(delete(Survey).where(Survey.id.in_(survey_ids))) \
        if survey_ids else 0
    ticket_ids = _oldest(session, select(Ticket.id).where(
        Ticket.status.not_in(OPEN),
        func.coalesce(Ticket.resolved_at, Ticket.created_at) < cutoff).order_by(Ticket.id),
        batch)
    counts["ratings"] = gone(delete(Rating).where(Rating.ticket_id.in_(ticket_ids))) \
        if ticket_ids else 0
    counts["reply_reviews"] = gone(delete(ReplyReview).where(
        ReplyReview.ticket_id.in_(ticket_ids))) if ticket_ids else 0
    counts["tickets"] = gone(delete(Ticket).where(Ticket.id.in_(ticket_ids))) \
        if ticket_ids else 0
    with_open_ticket = select(Ticket.conversation_id).where(Ticket.status.in_(OPEN))
    message_ids = _oldest(session, select(Message.id).where(
        Message.created_at < cutoff, Message.conversation_id.not_in(with_open_ticket))
        .order_by(Message.id), batch)
    counts["messages"] = gone(delete(Message).where(Message.id.in_(message_ids))) \
        if message_ids else 0
    event_ids = _oldest(session, select(DeskEvent.id).where(DeskEvent.created_at < cutoff)
                        .order_by(DeskEvent.id), batch)
    counts["desk_events"] = gone(delete(DeskEvent).where(DeskEvent.id.in_(event_ids))) \
        if event_ids else 0
    conversation_ids = _oldest(session, select(Conversation.id).where(
        Conversation.created_at < cutoff,
        or_(Conversation.last_customer_at.is_(None), Conversation.last_customer_at < cutoff),
        or_(Conversation.lease_until.is_(None), Conversation.lease_until < now),
        ~select(Message.id).where(Message.conversation_id == Conversation.id).exists(),
        ~select(Ticket.id).where(Ticket.conversation_id == Conversation.id).exists(),
        ~select(Survey.id).where(Survey.conversation_id == Conversation.id).exists())
        .order_by(Conversation.id), batch)
    counts.update(contacts.forget(session, conversation_ids))  # the hashes go with them
    counts["conversations"] = gone(delete(Conversation).where(
        Conversation.id.in_(conversation_ids))) if conversation_ids else 0
    return counts


def apply_retention(days: int, database_url: str | None = None, now: datetime | None = None,
                    batch: int = RETENTION_BATCH) -> Retention:
    """Delete what is older than `days` (one batch per table; `more` if there is more).

    Deleted, not anonymised: a row that outlived its purpose goes whole.
    - messages written before the cutoff, but not while the conversation has an open
      ticket (an agent is reading its transcript);
    - closed tickets resolved (or opened, if never resolved) before it, with their
      rating and their trainees' reviewed replies; surveys finished (or started)
      before it, with their answers;
    - desk events before it;
    - conversations with nothing left, that began and last heard from the customer
      before it (the row holds their name and platform id), with their contact
      identifiers and link;
    - Rasa's tracker events before it that Rasa no longer reads (`tracker_events.trim`).
    The manager's analytics count messages and tickets, so periods older than the
    retention show less, then nothing: an accepted cost of keeping no old transcripts.
    The run is in the audit trail, with counts only, when it deleted something.
    """
    now = now or utcnow()
    cutoff = now - timedelta(days=days)
    with session_scope(database_url) as session:
        counts = _retain(session, cutoff, now, batch)
        entry = audit.record(session, audit.RETENTION_JOB, "retention", [], {
            "days": days, "cutoff": cutoff.isoformat(), **counts, "tracker_events": None,
        }) if any(counts.values()) else None
        entry_id = entry.id if entry is not None else None
    try:
        trimmed = tracker_events.trim(tracker_events.locate(), cutoff, batch)
    except Exception as exc:
        if entry_id is not None:
            audit.amend(entry_id, {"tracker_error": exc.__class__.__name__}, database_url)
        raise
    if entry_id is not None:
        audit.amend(entry_id, {"tracker_events": trimmed}, database_url)
    elif trimmed:
        with session_scope(database_url) as session:
            audit.record(session, audit.RETENTION_JOB, "retention", [], {
                "days": days, "cutoff": cutoff.isoformat(), **counts,
                "tracker_events": trimmed})
    counts["tracker_events"] = trimmed
    return Retention(counts, more=any(count >= batch for count in counts.values()))
