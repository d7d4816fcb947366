"""After an agent has spoken: one check-in when the customer goes quiet.

(The old 1-5 rating is kept in `tickets.Rating` for past data; the satisfaction
survey, `parley.bot.survey`, replaced it.)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import select

from parley.bot import events
from parley.bot.conversations import Conversation, Message, add_message
from parley.bot.handoff.tickets import Ticket
from parley.bot.responses.channels import language_code
from parley.bot.storage import session_scope, utcnow


def send_follow_ups(after: timedelta, text: str | Mapping[str, str],
                    now: datetime | None = None, database_url: str | None = None) -> list[int]:
    """Check in once on held conversations where the agent spoke last and the
    customer has been silent for `after`. Returns the tickets followed up.

    `text`: one for everyone, or one per language, each conversation getting its
    own language's (the default language's when it has none)."""
    now = now or utcnow()
    sent: list[int] = []
    with session_scope(database_url) as session:
        held = session.execute(
            select(Ticket, Conversation.language)
            .join(Conversation, Conversation.id == Ticket.conversation_id)
            .where(Ticket.status == "assigned", Ticket.follow_up_at.is_(None))
            .with_for_update(of=Ticket, skip_locked=True)  # one desk replica per ticket
        ).all()
        for ticket, language in held:
            last = session.execute(
                select(Message.author, Message.created_at)
                .where(Message.conversation_id == ticket.conversation_id,
                       Message.author.in_(("customer", "agent")))
                .order_by(Message.id.desc()).limit(1)
            ).first()
            if last is None or last.author != "agent" or now - last.created_at < after:
                continue
            ticket.follow_up_at = now
            said = text if isinstance(text, str) else (
                text.get(language_code(language)) or text[language_code(None)])
            add_message(session, ticket.conversation_id, "system", said, ticket_id=ticket.id,
                        delivery="push")
            events.publish(session, "message", ticket_id=ticket.id,
                           conversation_id=ticket.conversation_id, author="system")
            sent.append(ticket.id)
    return sent

