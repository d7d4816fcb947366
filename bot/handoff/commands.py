"""What agents do with tickets from the desk: claim, transfer, resolve, dismiss, tag, write.

Each command is one transaction that locks the rows it changes, so two agents acting
on the same ticket at once cannot both succeed.

Who may act on a ticket another agent holds is decided here, in `_may_act_on`,
inside the command's transaction (the holder read under the row lock): any desk
user may note and tag any ticket; only its holder may reply to or resolve it;
dismissing or transferring a ticket another agent holds takes a supervisor or an
admin (`agents.SUPERVISING_ROLES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from parley.bot import contract, events, responses, survey
from parley.bot.agents import SUPERVISING_ROLES, Agent
from parley.bot.conversations import Conversation, add_message
from parley.bot.handoff import approvals
from parley.bot.handoff.tickets import (
    OPEN,
    Ticket,
    TicketView,
    TransitionError,
    _held_ticket,
    _transition,
)
from parley.bot.responses import channels
from parley.bot.storage import session_scope, utcnow


class NotPermitted(PermissionError):
    """The actor's role does not allow this on a ticket another agent holds."""


def _may_act_on(session: Session, ticket: Ticket, agent_id: int, doing: str) -> None:
    """Waiting tickets and one's own: anyone; another agent's: supervisors and admins."""
    if ticket.status != "assigned" or ticket.assigned_agent_id in (None, agent_id):
        return
    role = session.execute(select(Agent.role).where(Agent.id == agent_id)).scalar()
    if role not in SUPERVISING_ROLES:
        raise NotPermitted(f"ticket {ticket.id} is held by another agent; only a supervisor "
                           f"or an admin may {doing} it")


def _assign(session: Session, ticket_id: int, agent_id: int) -> TicketView | None:
    """waiting -> assigned, guarded: the UPDATE re-checks `status = 'waiting'` under
    the row's write lock (PostgreSQL) or the database lock (SQLite), so of several
    concurrent claimers exactly one changes a row. None for the losers."""
    result = session.execute(
        update(Ticket).where(Ticket.id == ticket_id, Ticket.status == "waiting")
        .values(status="assigned", assigned_agent_id=agent_id, assigned_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    ticket = session.get(Ticket, ticket_id)
    assert ticket is not None
    session.refresh(ticket)
    events.publish(session, "ticket_claimed", ticket_id=ticket_id,
                   conversation_id=ticket.conversation_id, agent_id=agent_id)
    return TicketView.of(ticket)


def claim_ticket(ticket_id: int, agent_id: int,
                 database_url: str | None = None) -> TicketView | None:
    """Take a waiting ticket (an agent clicked it); None if someone else has it."""
    with session_scope(database_url) as session:
        return _assign(session, ticket_id, agent_id)


def transfer(ticket_id: int, by_agent: int, to_agent: int,
             database_url: str | None = None) -> TicketView:
    """Hand a held ticket to another agent: its holder may, and so may a
    supervisor or an admin (NotPermitted for anyone else)."""
    with session_scope(database_url) as session:
        ticket = _held_ticket(session, ticket_id)
        if ticket.status != "assigned":
            raise TransitionError(f"ticket {ticket_id} is not held by anyone; claim it first")
        _may_act_on(session, ticket, by_agent, "transfer")
        from_agent = ticket.assigned_agent_id
        _transition(ticket, "assigned")
        ticket.assigned_agent_id = to_agent
        events.publish(session, "ticket_transferred", ticket_id=ticket_id,
                       conversation_id=ticket.conversation_id, from_agent=from_agent,
                       to_agent=to_agent, by_agent=by_agent)
        return TicketView.of(ticket)


def resolve(ticket_id: int, agent_id: int, database_url: str | None = None,
            agent_name: str | None = None) -> TicketView:
    """Hand back to the bot and start the satisfaction survey; with `agent_name`,
    the customer is told first ("Ana has handed you back"). One transaction, so
    the notice and the survey's first question are queued in that order, or not
    at all."""
    with session_scope(database_url) as session:
        ticket = _held_ticket(session, ticket_id)
        if ticket.status != "assigned" or ticket.assigned_agent_id != agent_id:
            raise TransitionError(f"ticket {ticket_id} is not held by agent {agent_id}")
        waiting = approvals.pending_by(session, ticket_id, agent_id)
        if waiting:  # (another's, from before a transfer, close with the ticket)
            raise TransitionError(f"{waiting} of your replies still wait for a supervisor's "
                                  "approval; wait for them or withdraw them first")
        _transition(ticket, "resolved")
        ticket.resolved_at = utcnow()
        conversation = session.get(Conversation, ticket.conversation_id)
        if conversation is not None and agent_name is not None:
            notice = responses.render(
                contract.HANDOFF_RESOLVED, channels.of_conversation(conversation.id),
                channels.language_code(conversation.language), database_url=database_url,
                display_name=conversation.display_name, agent_name=agent_name)
            add_message(session, conversation.id, "system", notice.get("text") or "",
                        ticket_id=ticket.id, delivery="push",
                        payload={k: v for k, v in notice.items() if k != "text"} or None,
                        reply_name=contract.HANDOFF_RESOLVED)
        survey.start_for_ticket(session, ticket, agent_id, database_url)
        events.publish(session, "ticket_resolved", ticket_id=ticket_id,
                       conversation_id=ticket.conversation_id, agent_id=agent_id)
        return TicketView.of(ticket)


def dismiss(ticket_ids: list[int], agent_id: int, database_url: str | None = None) -> list[int]:
    """Close tickets that need no reply (spam, "thanks!"); returns those closed.
    All or none: NotPermitted if one is held by another agent and `agent_id` is
    not a supervisor or an admin."""
    closed: list[int] = []
    with session_scope(database_url) as session:
        tickets = list(session.execute(
            select(Ticket).where(Ticket.id.in_(ticket_ids), Ticket.status.in_(OPEN))
            .order_by(Ticket.id).with_for_update()
        ).scalars())
        for ticket in tickets:
            _may_act_on(session, ticket, agent_id, "dismiss")
        for ticket in tickets:
            _transition(ticket, "abandoned")
            ticket.resolved_at = utcnow()
            ticket.assigned_agent_id = ticket.assigned_agent_id or agent_id
            closed.append(ticket.id)
            events.publish(session, "ticket_dismissed", ticket_id=ticket.id,
                           conversation_id=ticket.conversation_id, agent_id=agent_id)
    return sorted(closed)


def set_tags(ticket_id: int, tags: list[str], database_url: str | None = None) -> TicketView:
    """Replace the ticket's tags, normalised (trimmed, lower case, unique, sorted) for reports."""
    clean = sorted({t.strip().lower()[:32] for t in tags if t and t.strip()})
    with session_scope(database_url) as session:
        ticket = _held_ticket(session, ticket_id)
        ticket.tags = clean
        events.publish(session, "ticket_updated", ticket_id=ticket_id,
                       conversation_id=ticket.conversation_id, tags=clean)
        return TicketView.of(ticket)


@dataclass(frozen=True)
class Written:
    """A reply or note on record: `id` is the message's, or, for a trainee's reply
    held for approval (`held`), the review's (`parley.bot.handoff.approvals`)."""

    id: int
    held: bool = False


def _record(ticket_id: int, agent_id: int, text: str, author: str,
            database_url: str | None, reply_name: str | None = None) -> Written:
    """Replies and notes share a path; only a reply needs the ticket held by its
    writer, and a trainee's reply waits for a supervisor instead of going out."""
    text = text.strip()
    if not text:
        raise ValueError(f"a {'reply' if author == 'agent' else author} needs some text")
    with session_scope(database_url) as session:
        ticket = _held_ticket(session, ticket_id)
        if author == "agent":
            if ticket.status != "assigned" or ticket.assigned_agent_id != agent_id:
                raise TransitionError(f"ticket {ticket_id} is not held by agent {agent_id}")
            if approvals.is_trainee(session, agent_id):
                return Written(approvals.hold(session, ticket, agent_id, text, reply_name),
                               held=True)
            ticket.first_reply_at = ticket.first_reply_at or utcnow()
        message = add_message(session, ticket.conversation_id, author, text,
                              ticket_id=ticket_id, agent_id=agent_id,
                              delivery="push" if author == "agent" else "none",
                              reply_name=reply_name)
        events.publish(session, "message", ticket_id=ticket_id,
                       conversation_id=ticket.conversation_id, author=author,
                       message_id=message.id)
        return Written(int(message.id))


def agent_reply(ticket_id: int, agent_id: int, text: str, database_url: str | None = None,
                reply_name: str | None = None) -> Written:
    """Record an agent's reply for the customer's channel to push (a trainee's waits
    for approval). `reply_name`: the canned reply it was sent from unchanged (analytics)."""
    return _record(ticket_id, agent_id, text, "agent", database_url, reply_name)


def add_note(ticket_id: int, agent_id: int, text: str, database_url: str | None = None) -> int:
    """An internal note: in the transcript for agents, never sent to the customer."""
    return _record(ticket_id, agent_id, text, "note", database_url).id


def push_notice(conversation_id: str, text: str, ticket_id: int | None = None,
                payload: dict[str, Any] | None = None, database_url: str | None = None) -> int:
    """A message from the system to the customer outside a webhook answer."""
    with session_scope(database_url) as session:
        message = add_message(session, conversation_id, "system", text, ticket_id=ticket_id,
                              payload=payload, delivery="push")
        return int(message.id)
