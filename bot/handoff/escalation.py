"""Entering the queue: a bot conversation becomes a ticket.

Its own module because escalating answers with the queue place: it sits above both
`tickets` and `queue` (tickets <- queue <- escalation), so no import runs in a circle.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError

from parley.bot import events
from parley.bot.contract import REASONS
from parley.bot.conversations import add_message, ensure_conversation
from parley.bot.handoff.queue import QueuePlace, place_of
from parley.bot.handoff.tickets import (
    PRIORITY_NORMAL,
    Ticket,
    TicketView,
    _held_ticket,
    _transition,
    open_ticket,
)
from parley.bot.storage import session_scope, utcnow


def escalate(conversation_id: str, reason: str, *, context: dict[str, Any] | None = None,
             priority: int = PRIORITY_NORMAL, display_name: str = "", team: str = "support",
             agents_online: int = 1, database_url: str | None = None) -> QueuePlace:
    """Put the conversation in the queue (or return its existing place)."""
    if reason not in REASONS:
        raise ValueError(f"unknown handoff reason {reason!r}")
    try:
        with session_scope(database_url) as session:
            ensure_conversation(session, conversation_id, display_name)
            existing = open_ticket(session, conversation_id)
            if existing is not None:
                if priority > existing.priority:
                    existing.priority = priority
                    events.publish(session, "ticket_updated", ticket_id=existing.id,
                                   conversation_id=conversation_id, priority=priority)
                return place_of(session, existing, agents_online)
            ticket = Ticket(conversation_id=conversation_id, status="waiting", priority=priority,
                            team=team, reason=reason, context=context or {}, tags=[],
                            created_at=utcnow())
            session.add(ticket)
            session.flush()
            add_message(session, conversation_id, "system",
                        f"Handed to the queue ({reason.replace('_', ' ')})", ticket_id=ticket.id,
                        delivery="none")
            events.publish(session, "ticket_created", ticket_id=ticket.id,
                           conversation_id=conversation_id, reason=reason, priority=priority)
            place = place_of(session, ticket, agents_online)
            return QueuePlace(place.ticket, place.position, place.eta, created=True)
    except IntegrityError:
        # Lost a race with a concurrent escalation of the same conversation.
        with session_scope(database_url) as session:
            existing = open_ticket(session, conversation_id)
            if existing is None:
                raise
            return place_of(session, existing, agents_online)


def hold_externally(conversation_id: str, who: str, text: str = "",
                    database_url: str | None = None) -> TicketView:
    """A person answered outside the desk (the platform's own inbox): the
    conversation is human-owned from now on, so the bot goes quiet. Their words go
    into the transcript. The desk can dismiss the ticket to hand back to the bot."""
    place = escalate(conversation_id, "external", context={"held_by": who},
                     database_url=database_url)
    with session_scope(database_url) as session:
        ticket = _held_ticket(session, place.ticket.id)
        if ticket.status == "waiting":
            _transition(ticket, "assigned")
            ticket.assigned_at = utcnow()
            events.publish(session, "ticket_claimed", ticket_id=ticket.id,
                           conversation_id=conversation_id, agent_id=None, held_by=who)
        if text:
            ticket.first_reply_at = ticket.first_reply_at or utcnow()
            add_message(session, conversation_id, "agent", text, ticket_id=ticket.id,
                        delivery="none")
        return TicketView.of(ticket)
