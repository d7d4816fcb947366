"""Where a waiting ticket stands in the queue and how long it will likely wait.

Read-only: nothing here changes a ticket, so both escalation and the gate can ask
freely. The estimate learns from recently resolved tickets instead of a fixed figure.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from parley.bot.handoff.tickets import Ticket, TicketView

DEFAULT_HANDLE_TIME = timedelta(minutes=5)  # until there are resolved tickets to learn from


@dataclass(frozen=True)
class QueuePlace:
    """What the customer is told on joining (or asking about) the queue."""

    ticket: TicketView
    position: int  # 1 = next; 0 once an agent holds it
    eta: timedelta
    created: bool  # False when the conversation already had an open ticket


def _position(session: Session, ticket: Ticket) -> int:
    """1 + the waiting tickets of the same team served first (priority, arrival, id)."""
    if ticket.status != "waiting":
        return 0
    ahead = session.execute(
        select(Ticket.id).where(
            Ticket.status == "waiting", Ticket.team == ticket.team,
            (Ticket.priority > ticket.priority)
            | ((Ticket.priority == ticket.priority) & (Ticket.created_at < ticket.created_at))
            | ((Ticket.priority == ticket.priority) & (Ticket.created_at == ticket.created_at)
               & (Ticket.id < ticket.id)),
        )
    ).all()
    return len(ahead) + 1


def recent_handle_time(session: Session, sample: int = 50) -> timedelta:
    """Median time an agent held a ticket, over the last `sample` resolved ones."""
    rows = session.execute(
        select(Ticket.assigned_at, Ticket.resolved_at)
        .where(Ticket.status == "resolved", Ticket.assigned_at.is_not(None))
        .order_by(Ticket.resolved_at.desc()).limit(sample)
    ).all()
    durations = [(r - a).total_seconds() for a, r in rows if a and r and r > a]
    if not durations:
        return DEFAULT_HANDLE_TIME
    return timedelta(seconds=statistics.median(durations))


def estimate_wait(position: int, handle_time: timedelta, agents_online: int) -> timedelta:
    """Each agent clears one ticket per handle time: the wait for place n is
    ceil(n / agents) handle times, minus the one already in progress (half, on average)."""
    if position <= 0:
        return timedelta(0)
    rounds = math.ceil(position / max(1, agents_online))
    return handle_time * (rounds - 0.5)


def place_of(session: Session, ticket: Ticket, agents_online: int) -> QueuePlace:
    """The ticket's place and wait, inside the caller's session (the gate holds one open)."""
    position = _position(session, ticket)
    eta = estimate_wait(position, recent_handle_time(session), agents_online)
    return QueuePlace(TicketView.of(ticket), position, eta, created=False)
