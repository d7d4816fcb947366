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
    driver_sql,
    events,
    handoff,
    inbox,
    responses,
    survey,
)
from parley.bot.conversations import Conversation, Message, add_message, message_values
from parley.bot.handoff.tickets import OPEN
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


# How many open tickets conversation `c` has (a person owns it): 0 or 1.
_OPEN_TICKETS = ("(SELECT COUNT(*) FROM tickets t WHERE t.conversation_id = c.id "
                 f"AND t.status IN ({', '.join(repr(s) for s in OPEN)}))")
# The lease, and whether anything but the bot may answer: an open ticket or an asking
# survey (it may take the message).
_BOT_ALONE = (
    f"SELECT c.lease_owner, c.lease_until, {_OPEN_TICKETS}, "
    "(SELECT COUNT(*) FROM surveys s WHERE s.conversation_id = c.id AND s.state = 'asking') "
    "FROM conversations c WHERE c.id = ?")


def _bot_alone(pending: Pending, owner: str, database_url: str | None) -> bool:
    """Whether this message is simply the bot's, read on the driver cursor: the
    lease is ours, no ticket is open and no survey asks. Most messages are; only
    the others need the full route, which writes."""
    with driver_sql.transaction(database_url) as cursor:
        row = cursor.execute(_BOT_ALONE, (pending.conversation_id,)).one()
        return row is not None and inbox.live(cursor, row[:2], owner) \
            and row[2] == 0 and row[3] == 0


def route(pending: Pending, owner: str, delivery: str,
          database_url: str | None = None) -> Decision:
    """Decide who answers. For anything but the bot the message is finished here,
    in the same transaction as what the gate says."""
    if _bot_alone(pending, owner, database_url):
        return Decision("bot")
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


_REPLY_COLUMNS = tuple(message_values("", "bot", ""))
_INSERT_REPLY = (f"INSERT INTO messages ({', '.join(_REPLY_COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(_REPLY_COLUMNS))})")
_REPLY_TYPES = tuple(Message.__table__.c[name] for name in _REPLY_COLUMNS)
_ANSWERING = (
    f"SELECT m.inbox_state, c.lease_owner, c.lease_until, {_OPEN_TICKETS} "
    "FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.id = ?")


def _reply_values(conversation_id: str, reply: dict[str, Any], reply_to: int, delivery: str,
                  ticket_id: int | None, held: bool) -> dict[str, Any]:
    payload = {k: v for k, v in reply.items()
               if k not in {"text", "recipient_id", "utter_action"}}
    reply_name = reply.get("utter_action")
    return message_values(conversation_id, "bot", reply.get("text") or "",
                          ticket_id=ticket_id, payload=payload or None,
                          delivery="none" if held else delivery, reply_to=reply_to,
                          delivery_error=WITHHELD if held else None,
                          reply_name=reply_name if isinstance(reply_name, str) else None)


def _finish_bot_alone(pending: Pending, owner: str, replies: list[dict[str, Any]],
                      delivery: str, database_url: str | None) -> bool | None:
    """`finish_bot` on the driver cursor when no person is involved (no open ticket)
    and no reply is one a survey follows: most turns. None when that is not the
    case; then nothing was written and the full path decides."""
    with driver_sql.transaction(database_url) as cursor:
        row = cursor.execute(_ANSWERING, (pending.id,)).one()
        if row is None or row[0] != "processing" or not inbox.live(cursor, row[1:3], owner):
            return False
        if row[3]:
            return None
        for reply in replies:
            values = _reply_values(pending.conversation_id, reply, pending.id, delivery,
                                   None, held=False)
            cursor.execute(_INSERT_REPLY, tuple(
                cursor.bind(column, values[name])
                for name, column in zip(_REPLY_COLUMNS, _REPLY_TYPES, strict=True)))
        cursor.execute("UPDATE messages SET inbox_state = 'answered' WHERE id = ?",
                       (pending.id,))
        return True


def finish_bot(pending: Pending, owner: str, replies: list[dict[str, Any]], delivery: str,
               database_url: str | None = None) -> bool:
    """Record the bot's replies to this message as outgoing, and the message as
    answered, in one transaction; after the bot's goodbye, follow them with a
    survey's first question when one is due. If a person took the conversation
    during the turn the replies are kept in the transcript, withheld. False if
    another worker took the message over meanwhile (it will answer; we record
    nothing)."""
    names = [r["utter_action"] for r in replies if isinstance(r.get("utter_action"), str)]
    if not any(name in survey.BOT_ONLY_AFTER for name in names):
        done = _finish_bot_alone(pending, owner, replies, delivery, database_url)
        if done is not None:
            return done
    conv_id = pending.conversation_id
    with session_scope(database_url) as session:
        message = session.get(Message, pending.id)
        if message is None or message.inbox_state != "processing" \
                or not inbox.holds(session, conv_id, owner):
            return False
        ticket = handoff.open_ticket(session, conv_id)
        held = ticket is not None and ticket.status == "assigned"
        for reply in replies:
            session.add(Message(**_reply_values(conv_id, reply, message.id, delivery,
                                                ticket.id if ticket else None, held)))
        session.flush()
        if ticket is None:
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
