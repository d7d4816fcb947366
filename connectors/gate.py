"""The ownership gate: who answers a stored customer message.

Runs in the worker that holds the conversation's lease, once per message, in
order. The bot (Rasa) answers unless a person owns the conversation: in the queue
the customer gets their place (`BOT` leaves it); with an agent the bot stays
silent and the desk sees the message. While a satisfaction survey is asking
(`parley.bot.survey`) it takes the answers, and after the bot's goodbye it may
start one. Everything it says goes into the transcript as the channel's
outgoing messages (the outbox, or the web chat's answer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.orm import Session

from parley.bot import (
    agents,
    contract,
    conversations,
    events,
    handoff,
    inbox,
    responses,
    survey,
)
from parley.bot.conversations import Conversation, Message, add_message
from parley.bot.inbox import Pending
from parley.bot.outbox import WITHHELD
from parley.bot.queue_messages import update_reply
from parley.bot.responses import channels
from parley.bot.storage import session_scope

Route = Literal["bot", "queue", "agent", "handled", "lost"]
BOT_KEYWORD = re.compile(r"^\W*bot\W*$", re.IGNORECASE)


@dataclass(frozen=True)
class Inbound:
    """A customer message as a platform module parsed it."""

    conversation_id: str
    text: str
    platform_message_id: str | None = None
    display_name: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    route: Route
    ticket_id: int | None = None


def _say(session: Session, conversation_id: str, name: str, delivery: str, reply_to: int,
         ticket_id: int | None = None, database_url: str | None = None,
         **values: Any) -> None:
    """Render a writer-owned reply for this channel, in the conversation's language
    (`parley.bot.language`), and put it in the transcript, to be sent as the channel
    sends (`delivery`)."""
    conversation = conversations.get_conversation(session, conversation_id)
    rendered = responses.render(name, channels.of_conversation(conversation_id),
                                channels.language_code(conversation.language if conversation
                                                       else None),
                                database_url=database_url,
                                display_name=conversation.display_name if conversation
                                else None, **values)
    extra = {k: v for k, v in rendered.items() if k != "text"}
    add_message(session, conversation_id, "system", rendered["text"], ticket_id=ticket_id,
                payload=extra or None, delivery=delivery, reply_to=reply_to)


def route(pending: Pending, owner: str, delivery: str,
          database_url: str | None = None) -> Decision:
    """Decide who answers. For anything but the bot the message is finished here,
    in the same transaction as what the gate says."""
    conv_id = pending.conversation_id
    with session_scope(database_url) as session:
        if not inbox.holds(session, conv_id, owner):
            return Decision("lost")  # another worker took over; it will do this
        message = session.get(Message, pending.id)
        conversation = session.get(Conversation, conv_id)
        assert message is not None and conversation is not None
        ticket = handoff.open_ticket(session, conv_id)
        if ticket is None:
            if survey.take(session, conversation, message, delivery, database_url):
                message.inbox_state = "answered"
                return Decision("handled")
            return Decision("bot")
        survey.stop_open(session, conv_id)  # a person is on it again
        message.ticket_id = ticket.id
        events.publish(session, "message", ticket_id=ticket.id, conversation_id=conv_id,
                       author="customer", message_id=message.id)
        if ticket.status == "assigned":
            message.inbox_state = "routed"
            return Decision("agent", ticket.id)
        if not BOT_KEYWORD.match(message.text):
            place = handoff.place_of(session, ticket, agents.agents_online(database_url))
            name, values = update_reply(place, language=channels.language_code(
                conversation.language))
            _say(session, conv_id, name, delivery, message.id, ticket.id, database_url,
                 **values)
            message.inbox_state = "routed"
            return Decision("queue", ticket.id)
    # `BOT` in the queue: leave it, then say so.
    handoff.abandon(conv_id, "customer typed BOT", database_url=database_url)
    with session_scope(database_url) as session:
        message = session.get(Message, pending.id)
        assert message is not None
        _say(session, conv_id, contract.BACK_TO_BOT, delivery, message.id,
             database_url=database_url)
        message.inbox_state = "answered"
    return Decision("handled")


def finish_bot(pending: Pending, owner: str, replies: list[dict[str, Any]], delivery: str,
               database_url: str | None = None) -> bool:
    """Record the bot's replies to this message as outgoing, and the message as
    answered, in one transaction; after the bot's goodbye, follow them with a
    survey's first question when one is due. If a person took the conversation
    during the turn the replies are kept in the transcript, withheld. False if
    another worker took the message over meanwhile (it will answer; we record
    nothing)."""
    conv_id = pending.conversation_id
    with session_scope(database_url) as session:
        message = session.get(Message, pending.id)
        if message is None or message.inbox_state != "processing" \
                or not inbox.holds(session, conv_id, owner):
            return False
        ticket = handoff.open_ticket(session, conv_id)
        held = ticket is not None and ticket.status == "assigned"
        for reply in replies:
            payload = {k: v for k, v in reply.items()
                       if k not in {"text", "recipient_id", "utter_action"}}
            reply_name = reply.get("utter_action")
            add_message(session, conv_id, "bot", reply.get("text") or "",
                        ticket_id=ticket.id if ticket else None, payload=payload or None,
                        delivery="none" if held else delivery, reply_to=message.id,
                        delivery_error=WITHHELD if held else None,
                        reply_name=reply_name if isinstance(reply_name, str) else None)
        if ticket is None:
            names = [r["utter_action"] for r in replies
                     if isinstance(r.get("utter_action"), str)]
            survey.after_bot_answer(session, message, names, delivery, database_url)
        else:
            survey.stop_open(session, conv_id)
        message.inbox_state = "answered"
        return True


def give_up(pending: Pending, error: str, database_url: str | None = None) -> None:
    """The bot failed this message MAX_ATTEMPTS times: a person takes over."""
    handoff.escalate(pending.conversation_id, "bot_error",
                     context={"error": error[:200], "message_id": pending.id},
                     display_name=pending.display_name, database_url=database_url)
