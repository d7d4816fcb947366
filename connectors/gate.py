"""The ownership gate every connector passes inbound messages through.

Stores the customer's message first (nothing accepted is lost), drops platform
redeliveries (nothing twice), and decides who answers: the bot, the queue (a
position update; `BOT` leaves it), or the agent holding the conversation (the
bot stays silent). After a resolved handoff it asks for, and takes, a rating.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from rasa.core.channels.channel import UserMessage
from sqlalchemy.exc import IntegrityError

from parley.bot import agents, contract, conversations, events, handoff, responses, turn_sql
from parley.bot.conversations import Conversation, add_message, ensure_conversation
from parley.bot.queue_messages import update_reply
from parley.bot.responses import channels
from parley.bot.storage import session_scope, utcnow

Route = Literal["bot", "queue", "agent", "duplicate", "handled"]
BOT_KEYWORD = re.compile(r"^\W*bot\W*$", re.IGNORECASE)
RATING = re.compile(r"^\s*([1-5])\s*(/\s*5)?\s*[.!]?\s*$")


@dataclass(frozen=True)
class Inbound:
    conversation_id: str
    text: str
    platform_message_id: str | None = None
    display_name: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    route: Route
    replies: list[dict[str, Any]] = field(default_factory=list)
    ticket_id: int | None = None


def _reply(session: Any, conversation_id: str, name: str, ticket_id: int | None = None,
           database_url: str | None = None, **values: Any) -> dict[str, Any]:
    """Render a writer-owned reply for this channel and record it in the transcript."""
    conversation = conversations.get_conversation(session, conversation_id)
    rendered = responses.render(name, channels.of_conversation(conversation_id),
                                database_url=database_url,
                                display_name=conversation.display_name if conversation
                                else None, **values)
    extra = {k: v for k, v in rendered.items() if k != "text"}
    add_message(session, conversation_id, "system", rendered["text"], ticket_id=ticket_id,
                payload=extra or None, delivery="sync")
    return rendered


def accept(inbound: Inbound, database_url: str | None = None) -> Decision:
    """Store the message and route it (one short database transaction)."""
    try:
        return _accept(inbound, database_url)
    except IntegrityError:
        # A concurrent redelivery of the same platform message won the insert.
        if inbound.platform_message_id:
            return Decision("duplicate")
        raise


def _accept(inbound: Inbound, database_url: str | None) -> Decision:
    conv_id = inbound.conversation_id
    leave_queue = False
    # The bot answers most messages: one short transaction on the driver's cursor.
    # A redelivery (same platform id) fails the unique index there and is answered
    # as a duplicate by `accept`: no lookup first.
    row = conversations.message_values(conv_id, "customer", inbound.text,
                                       platform_message_id=inbound.platform_message_id)
    if turn_sql.store_for_bot(conv_id, inbound.display_name, row, database_url).bot_answers:
        return Decision("bot")
    with session_scope(database_url) as session:
        conversation = ensure_conversation(session, conv_id, inbound.display_name)
        conversation.last_customer_at = utcnow()
        ticket = handoff.open_ticket(session, conv_id)
        message = add_message(session, conv_id, "customer", inbound.text,
                              ticket_id=ticket.id if ticket else None,
                              platform_message_id=inbound.platform_message_id)
        if ticket is not None:
            events.publish(session, "message", ticket_id=ticket.id, conversation_id=conv_id,
                           author="customer", message_id=message.id)
            if ticket.status == "assigned":
                return Decision("agent", ticket_id=ticket.id)
            if not BOT_KEYWORD.match(inbound.text):
                place = handoff.place_of(session, ticket, agents.agents_online(database_url))
                name, values = update_reply(place)
                return Decision("queue", [_reply(session, conv_id, name, ticket.id, database_url,
                                                 **values)],
                                ticket.id)
            leave_queue = True
        else:
            rated = _take_rating(session, conversation, inbound.text, database_url)
            if rated is not None:
                return Decision("handled", [rated])
    if leave_queue:
        handoff.abandon(conv_id, "customer typed BOT", database_url=database_url)
        with session_scope(database_url) as session:
            return Decision("handled", [_reply(session, conv_id, contract.BACK_TO_BOT,
                                               database_url=database_url)])
    return Decision("bot")


def _take_rating(session: Any, conversation: Conversation, text: str,
                 database_url: str | None) -> dict[str, Any] | None:
    """The answer to the rating question, if this is one; any other text ends asking."""
    if conversation.rating_state != "asked":
        return None
    conversation.rating_state = "none"
    match = RATING.match(text)
    if match is None or conversation.rating_ticket_id is None:
        return None
    score = int(match.group(1))
    handoff.add_rating(session, conversation.rating_ticket_id, score)
    return _reply(session, conversation.id, contract.RATING_THANKS, database_url=database_url,
                  rating=score)


def after_bot(conversation_id: str, bot_replies: list[dict[str, Any]],
              database_url: str | None = None) -> list[dict[str, Any]]:
    """Record what the bot said; after a resolved handoff, follow it with the rating
    question. Returns the extra replies to send after the bot's."""
    rows = [conversations.message_values(
        conversation_id, "bot", reply.get("text") or "",
        payload={k: v for k, v in reply.items() if k not in {"text", "recipient_id"}} or None)
        for reply in bot_replies]
    if turn_sql.record_bot_replies(conversation_id, rows, database_url).rating_state != "pending":
        return []  # recorded; no rating question due
    with session_scope(database_url) as session:  # the first bot answer after a resolved handoff
        for row in rows:
            session.add(conversations.Message(**row))
        conversation = conversations.get_conversation(session, conversation_id)
        assert conversation is not None
        conversation.rating_state = "asked"
        return [_reply(session, conversation_id, contract.ASK_RATING,
                       conversation.rating_ticket_id, database_url)]


class RecordingOutput(Protocol):
    sent: list[dict[str, Any]]


async def converse(item: Inbound,
                   on_new_message: Callable[[UserMessage], Awaitable[Any]],
                   output: RecordingOutput, channel: str,
                   deliver: Callable[[dict[str, Any]], Awaitable[None]]) -> Decision:
    """One inbound message through the gate, Rasa when the bot owns the
    conversation, the transcript, and whatever the gate itself has to say.
    Shared by every platform connector; `deliver` sends one reply to the customer."""
    # Inline, as Rasa's own SQL tracker store does: two short transactions (~1 ms
    # of CPU each). Handing them to threads made the Rasa server ~15 % slower at
    # saturation, the worker threads contending with TensorFlow's (bench/).
    decision = accept(item)
    if decision.route == "bot":
        await on_new_message(UserMessage(item.text, output,  # type: ignore[arg-type]
                                         item.conversation_id, input_channel=channel,
                                         metadata={"display_name": item.display_name,
                                                   "language": item.metadata.get("language")}))
        extra = after_bot(item.conversation_id, output.sent)
    else:
        extra = decision.replies
    for reply in extra:
        await deliver(reply)
    return decision
