"""The live-agent queue: tickets, their state machine, and atomic claims.

One module per concept, imported in one direction only:
`tickets` (tables, states, ownership) <- `queue` (positions, waits) <- `escalation`
(entering the queue); `commands` (what agents do; a resolve starts the survey in
`parley.bot.survey`; a trainee's reply waits in `approvals`) and `follow_ups`
(check-ins) build on `tickets`. Callers keep
using `handoff.<name>`: the names are re-exported here.
"""

from __future__ import annotations

from parley.bot.contract import REASONS
from parley.bot.handoff.commands import (
    Written,
    add_note,
    agent_reply,
    claim_ticket,
    dismiss,
    push_notice,
    resolve,
    set_tags,
    transfer,
)
from parley.bot.handoff.escalation import escalate, hold_externally
from parley.bot.handoff.follow_ups import send_follow_ups
from parley.bot.handoff.queue import (
    DEFAULT_HANDLE_TIME,
    QueuePlace,
    estimate_wait,
    place_of,
    recent_handle_time,
)
from parley.bot.handoff.tickets import (
    OPEN,
    PRIORITY_HIGH,
    PRIORITY_NORMAL,
    TRANSITIONS,
    Rating,
    Ticket,
    TicketView,
    TransitionError,
    abandon,
    get_ticket,
    list_tickets,
    open_ticket,
    owner,
)

__all__ = [
    "DEFAULT_HANDLE_TIME",
    "OPEN",
    "PRIORITY_HIGH",
    "PRIORITY_NORMAL",
    "REASONS",
    "TRANSITIONS",
    "QueuePlace",
    "Rating",
    "Ticket",
    "TicketView",
    "TransitionError",
    "Written",
    "abandon",
    "add_note",
    "agent_reply",
    "claim_ticket",
    "dismiss",
    "escalate",
    "estimate_wait",
    "get_ticket",
    "hold_externally",
    "list_tickets",
    "open_ticket",
    "owner",
    "place_of",
    "push_notice",
    "recent_handle_time",
    "resolve",
    "send_follow_ups",
    "set_tags",
    "transfer",
]
