"""One customer across channels: a contact groups the conversations of one person.

Stored (never a phone number or an email address itself, only their keyed hashes):
- `contact_identifiers`: a phone or email hash seen in a conversation. *Verified*
  when the platform vouches for it: a WhatsApp conversation's id is the customer's
  number (`whatsapp:<wa_id>`), recorded with each of its messages (a no-op once
  there: so a conversation older than contacts gets it with its next message).
  *Typed* when the customer wrote it: the hashes the masking kept in the message's
  payload (`personal_data`, `connectors.base.masked`), recorded with the message.
- `contact_conversations`: one row per conversation in a contact, or taken out of
  one by an agent (`contact_id` NULL: kept apart). `agent_id` is who made the
  change; NULL means it was linked automatically.
- `contacts`: the group, with an optional name an agent gives the person.
A conversation without a row is on its own; a contact always has two or more
conversations (one left alone is dissolved).

Linked how
- Automatically: a typed identifier equal to a verified identifier of another
  conversation links the two (their contacts merge if both had one). Typed against
  typed never links: anyone can type any number. Nor does anything that would put
  two different verified numbers together (two WhatsApp numbers: two people, until
  an agent links them): a customer who types two people's numbers links to
  neither, a WhatsApp customer who types someone else's ("call my husband at ...")
  is not linked to them; the desk shows those as "may be the same person"
  (`history`), and an agent can link by hand. Identifiers are recorded in the
  message's own transaction (`inbox_sql.store_inbound`); linking runs right after
  the commit (`settle`): for a new identifier, and for any message that carried a
  typed one (so typing it again retries a link that failed).
- By an agent: `link` puts a conversation in another's contact (merging the two
  contacts if both had one); `unlink` takes a conversation out. An unlinked
  conversation is kept apart: automatic linking leaves it alone from then on, so
  the evidence that linked it cannot link it again; an agent can still link it.
Every change publishes `contact_updated` per conversation concerned. Changes are
serialised (an advisory lock on PostgreSQL, the write lock on SQLite: `serialise`),
erasures and retention included, so two messages linking at once cannot split a
contact, nor an erasure dissolve one that is gaining a conversation.

The desk reads a conversation's `history` (the contact's other conversations,
past tickets with ratings and notes, conversations that may be the same person)
and `search`es by name, channel or identifier.
Privacy's export and erasure cover all three tables (`forget`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    and_,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from parley.bot import events, personal_data
from parley.bot.agents import Agent
from parley.bot.conversations import Conversation, Message, channel_of
from parley.bot.handoff.tickets import OPEN, Rating, Ticket
from parley.bot.storage import Base, UTCDateTime, session_scope, utcnow
from parley.bot.survey import Survey, SurveyAnswer

logger = logging.getLogger(__name__)

KINDS = ("phone", "email")  # the masked kinds that identify a person
# Channels whose platform id is the customer's phone number, as the platform checked it.
VERIFIED_PHONE_CHANNELS = ("whatsapp",)
_PLATFORM_PHONE = re.compile(r"[1-9][0-9]{7,14}")  # E.164 digits, as wa_id has them
_HASH = re.compile(r"[0-9a-f]{64}")
NAME_LIMIT = 200
HISTORY_TICKETS = 20  # newest first; `more_tickets` says there are older ones
NOTES_PER_TICKET = 20
MAYBE_LIMIT = 10  # conversations that may be the same person, shown beside a ticket
SEARCH_LIMIT = 20  # result groups
SEARCH_SCAN = 200  # conversations matched before grouping; past it, `more`
QUERY_LIMIT = 200
_PLATFORM_ID = re.compile(r"[A-Za-z0-9_.@+=-]{3,160}")
# Any constant both sides agree on: the lock serialising contact changes (PostgreSQL).
_LOCK_KEY = 0x70617231  # "par1"


class Contact(Base):
    __tablename__ = "contacts"

    id = Column(Integer, primary_key=True, autoincrement=True)
    name = Column(String(NAME_LIMIT), nullable=True)  # an agent's; None: the conversations'
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = Column(UTCDateTime, nullable=False, default=utcnow)


class ContactIdentifier(Base):
    __tablename__ = "contact_identifiers"
    __table_args__ = (UniqueConstraint("conversation_id", "kind", "hash"),
                      Index("ix_contact_identifiers_hash", "hash"))

    id = Column(Integer, primary_key=True, autoincrement=True)
    conversation_id = Column(String(200), ForeignKey("conversations.id"), nullable=False)
    kind = Column(String(16), nullable=False)  # KINDS
    hash = Column(String(64), nullable=False)  # personal_data.digest of the value
    verified = Column(Boolean, nullable=False, default=False)
    source = Column(String(16), nullable=False)  # "platform" (verified) or "message" (typed)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)


class ContactLink(Base):
    __tablename__ = "contact_conversations"
    __table_args__ = (Index("ix_contact_conversations_contact_id", "contact_id"),)

    conversation_id = Column(String(200), ForeignKey("conversations.id"), primary_key=True)
    contact_id = Column(Integer, ForeignKey("contacts.id"), nullable=True)  # None: kept apart
    agent_id = Column(Integer, nullable=True)  # who linked or unlinked; None: automatic
    changed_at = Column(UTCDateTime, nullable=False, default=utcnow)


class NotLinked(ValueError):
    """The conversation belongs to no contact."""


# -- identifiers, recorded with the message (inbox_sql) ---------------------------------


def platform_phone(conversation_id: str) -> str | None:
    """The customer's number when the channel's id is one the platform verified."""
    channel, _, platform_id = conversation_id.partition(":")
    if channel in VERIFIED_PHONE_CHANNELS and _PLATFORM_PHONE.fullmatch(platform_id):
        return platform_id
    return None


@dataclass(frozen=True)
class Evidence:
    """What a customer message may tell about who wrote it: the (kind, hash) pairs it
    carried masked, and in a WhatsApp conversation the (kind, hash) of its id, the
    number the platform verified (recorded with every message, a no-op once there)."""

    conversation_id: str
    typed: tuple[tuple[str, str], ...]
    verified: tuple[str, str] | None

    def rows(self) -> list[tuple[str, str, bool, str]]:
        """(kind, hash, verified, source) to record."""
        rows = [(kind, digest, False, "message") for kind, digest in self.typed]
        if self.verified is not None:
            rows.insert(0, (*self.verified, True, "platform"))
        return rows


def evidence(conversation_id: str, metadata: dict[str, Any] | None) -> Evidence | None:
    """None for almost every message (nothing masked, not a WhatsApp id): then the
    store does no extra work."""
    found = (metadata or {}).get("masked")
    typed = tuple(dict.fromkeys(
        (item["kind"], item["hash"]) for item in (found if isinstance(found, list) else ())
        if isinstance(item, dict) and item.get("kind") in KINDS
        and isinstance(item.get("hash"), str) and _HASH.fullmatch(item["hash"])))
    verified = verified_identifier(conversation_id)
    if not typed and verified is None:
        return None
    return Evidence(conversation_id, typed, verified)


def verified_identifier(conversation_id: str) -> tuple[str, str] | None:
    """("phone", hash) of a WhatsApp conversation's own number, comparable with a
    typed phone's; None when there is none or the masking key cannot be had (the
    message is stored all the same: a contact is not worth losing a message)."""
    number = platform_phone(conversation_id)
    if number is None:
        return None
    try:
        return "phone", personal_data.digest("phone", personal_data.phone_value(number))
    except Exception as exc:  # the key file unreadable: say so, without the number
        logger.warning("contacts: no hash for a %s number (%s)", channel_of(conversation_id),
                       exc.__class__.__name__)
        return None


def settle_quietly(conversation_id: str, database_url: str | None = None) -> None:
    """`settle` after a message's commit: the message is stored whatever happens here,
    so a failure is logged (no personal data), and the conversation's next message
    with a typed identifier (or its next new identifier) tries again."""
    try:
        settle(conversation_id, database_url)
    except Exception as exc:
        logger.warning("contacts: linking a %s conversation failed (%s: %s)",
                       channel_of(conversation_id), exc.__class__.__name__, str(exc)[:120])


# -- linking ----------------------------------------------------------------------------


def serialise(session: Session) -> None:
    """One contact change at a time, for the whole transaction: a concurrent change
    waits, then reads what this one wrote. An erasure takes it before it locks the
    conversations' rows, as every contact change does before it writes a link row
    (which locks its conversation's row on PostgreSQL): one order, no deadlock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    else:  # SQLite: a write (of nothing) takes the database's write lock now
        session.execute(update(Contact).where(text("0 = 1")).values(name=Contact.name)
                        .execution_options(synchronize_session=False))


def _links(session: Session, conversation_ids: Iterable[str]) -> dict[str, ContactLink]:
    ids = list(set(conversation_ids))
    if not ids:
        return {}
    return {row.conversation_id: row for row in session.execute(
        select(ContactLink).where(ContactLink.conversation_id.in_(ids))).scalars()}


def _put(session: Session, links: dict[str, ContactLink], conversation_id: str,
         contact_id: int, agent_id: int | None, now: datetime) -> None:
    row = links.get(conversation_id)
    if row is None:
        row = links[conversation_id] = ContactLink(conversation_id=conversation_id)
        session.add(row)
    row.contact_id, row.agent_id, row.changed_at = contact_id, agent_id, now


def _join(session: Session, a: str, b: str, agent_id: int | None,
          changed: dict[str, int | None]) -> int:
    """Put `a` and `b` in one contact: a new one, the one either has, or, when both
    have one, the older of the two (the other's conversations move over)."""
    now = utcnow()
    links = _links(session, (a, b))
    ca = links[a].contact_id if a in links else None
    cb = links[b].contact_id if b in links else None
    if ca is not None and ca == cb:
        return ca
    if ca is None and cb is None:
        contact = Contact(created_at=now, updated_at=now)
        session.add(contact)
        session.flush()
        for cid in (a, b):
            _put(session, links, cid, contact.id, agent_id, now)
            changed[cid] = contact.id
        return int(contact.id)
    if ca is None or cb is None:
        target = ca if ca is not None else cb
        assert target is not None
        lone = a if ca is None else b
        _put(session, links, lone, target, agent_id, now)
        changed[lone] = target
        session.execute(update(Contact).where(Contact.id == target).values(updated_at=now)
                        .execution_options(synchronize_session=False))
        return target
    target, other = min(ca, cb), max(ca, cb)
    moved = session.execute(select(ContactLink).where(ContactLink.contact_id == other)
                            ).scalars().all()
    for row in moved:
        # Each keeps who linked it and when ("linked by Bo" stays Bo's); an agent's
        # link is recorded on the conversation they named.
        row.contact_id = target
        if agent_id is not None and row.conversation_id in (a, b):
            row.agent_id, row.changed_at = agent_id, now
        changed[row.conversation_id] = target
    session.flush()
    kept = session.get(Contact, target)
    gone = session.get(Contact, other)
    if kept is not None:
        kept.updated_at = now
        if not kept.name and gone is not None and gone.name:
            kept.name = gone.name
    if gone is not None:
        session.delete(gone)
    return target


def _announce(session: Session, changed: dict[str, int | None]) -> None:
    for conversation_id, contact_id in sorted(changed.items()):
        events.publish(session, "contact_updated", conversation_id=conversation_id,
                       contact_id=contact_id)


def _kept_apart(link: ContactLink | None) -> bool:
    return link is not None and link.contact_id is None


def _group(session: Session, conversation_id: str) -> list[str]:
    """The conversations of its contact, or the conversation alone when it has none."""
    contact_id = session.execute(select(ContactLink.contact_id).where(
        ContactLink.conversation_id == conversation_id)).scalar_one_or_none()
    if contact_id is None:
        return [conversation_id]
    return list(session.execute(select(ContactLink.conversation_id).where(
        ContactLink.contact_id == contact_id)).scalars())


def _verified_of(session: Session, conversation_id: str) -> set[str]:
    """The verified hashes of the conversation's contact, or of it alone."""
    return set(session.execute(select(ContactIdentifier.hash).where(
        ContactIdentifier.verified.is_(True),
        ContactIdentifier.conversation_id.in_(_group(session, conversation_id)))).scalars())


def _points_at_two(session: Session, conversation_id: str) -> bool:
    """Whether what the conversation's contact (or it alone) typed matches the
    verified numbers of two people: of conversations no contact holds together."""
    ids = _group(session, conversation_id)
    typed = select(ContactIdentifier.hash).where(
        ContactIdentifier.conversation_id.in_(ids), ContactIdentifier.verified.is_(False))
    pointed = session.execute(select(ContactIdentifier.conversation_id).where(
        ContactIdentifier.hash.in_(typed), ContactIdentifier.verified.is_(True),
        ContactIdentifier.conversation_id.not_in(ids)).distinct()).scalars().all()
    people = [_verified_of(session, other) for other in pointed]
    everyone = {digest for found in people for digest in found}
    return not any(found == everyone for found in people)


def _partners(session: Session, conversation_id: str, typed: set[str],
              vouched: set[str]) -> set[str]:
    """The other conversations whose verified identifiers these typed ones match, or
    that typed these verified ones. A hash is of "kind:value", so equal hashes are
    of the same kind too."""
    partners: set[str] = set()
    for hashes, verified in ((typed, True), (vouched, False)):
        if hashes:
            partners.update(session.execute(
                select(ContactIdentifier.conversation_id).where(
                    ContactIdentifier.hash.in_(hashes),
                    ContactIdentifier.verified.is_(verified),
                    ContactIdentifier.conversation_id != conversation_id)).scalars())
    return partners


def settle(conversation_id: str, database_url: str | None = None) -> int | None:
    """Link the conversation to every other whose verified identifiers it typed, or
    who typed its verified ones (see the module), unless that would put together
    verified numbers that were apart (two WhatsApp numbers: two people, unless an
    agent linked them); a contact (or lone conversation) with no verified number
    that typed two people's is linked to neither, from either side. Its contact
    id, if it has one. Idempotent: nothing changes when there is nothing new."""
    with session_scope(database_url) as session:
        serialise(session)
        mine = session.execute(select(ContactIdentifier.hash, ContactIdentifier.verified)
                               .where(ContactIdentifier.conversation_id == conversation_id)
                               ).all()
        partners = _partners(session, conversation_id,
                             {digest for digest, verified in mine if not verified},
                             {digest for digest, verified in mine if verified})
        links = _links(session, [conversation_id, *partners])
        own = links.get(conversation_id)
        if _kept_apart(own):
            return None
        contact_id = own.contact_id if own is not None else None
        candidates = sorted(p for p in partners if not _kept_apart(links.get(p)))
        ours = _verified_of(session, conversation_id)
        if not ours and _points_at_two(session, conversation_id):
            candidates = []  # two people's numbers: which is it? An agent decides
        changed: dict[str, int | None] = {}
        for other in candidates:
            theirs = _verified_of(session, other)
            if not (ours <= theirs or theirs <= ours):
                continue  # different verified numbers: two people, as far as we know
            if not theirs and _points_at_two(session, other):
                continue  # it typed ours and someone else's: which is it?
            contact_id = _join(session, conversation_id, other, None, changed)
            ours |= theirs  # the contact now holds both sides' conversations
        _announce(session, changed)
        return contact_id


def _existing(session: Session, conversation_ids: Iterable[str]) -> None:
    ids = list(conversation_ids)
    found = set(session.execute(select(Conversation.id).where(Conversation.id.in_(ids))
                                ).scalars())
    for cid in ids:
        if cid not in found:
            raise LookupError(f"no conversation {cid}")


def link(conversation_id: str, with_conversation_id: str, agent_id: int,
         database_url: str | None = None) -> int:
    """An agent says both are the same person: `conversation_id` joins the contact
    of `with_conversation_id` (one is made if neither has one; two contacts merge).
    Undoes an earlier unlink of either. The contact's id."""
    if conversation_id == with_conversation_id:
        raise ValueError("a conversation cannot be linked to itself")
    with session_scope(database_url) as session:
        serialise(session)
        _existing(session, (conversation_id, with_conversation_id))
        changed: dict[str, int | None] = {}
        contact_id = _join(session, with_conversation_id, conversation_id, agent_id, changed)
        _announce(session, changed)
        return contact_id


def unlink(conversation_id: str, agent_id: int, database_url: str | None = None) -> int:
    """An agent takes the conversation out of its contact, and it is kept apart from
    automatic linking from then on. A contact left with one conversation goes. The
    id of the contact it left."""
    with session_scope(database_url) as session:
        serialise(session)
        _existing(session, (conversation_id,))
        row = session.get(ContactLink, conversation_id)
        if row is None or row.contact_id is None:
            raise NotLinked(f"{conversation_id} is not linked to other conversations")
        contact_id = int(row.contact_id)
        now = utcnow()
        row.contact_id, row.agent_id, row.changed_at = None, agent_id, now
        session.flush()
        changed: dict[str, int | None] = {conversation_id: None}
        rest = session.execute(select(ContactLink).where(ContactLink.contact_id == contact_id)
                               ).scalars().all()
        if len(rest) < 2:
            for other in rest:  # alone now: on its own, free to be linked again
                session.delete(other)
                changed[other.conversation_id] = None
            session.flush()
            session.execute(delete(Contact).where(Contact.id == contact_id)
                            .execution_options(synchronize_session=False))
        else:
            session.execute(update(Contact).where(Contact.id == contact_id)
                            .values(updated_at=now).execution_options(synchronize_session=False))
        _announce(session, changed)
        return contact_id


def rename(contact_id: int, name: str, database_url: str | None = None) -> dict[str, Any]:
    """An agent's name for the person ('' clears it: the conversations' names show)."""
    name = " ".join(name.split())
    if len(name) > NAME_LIMIT:
        raise ValueError(f"a contact's name is at most {NAME_LIMIT} characters")
    with session_scope(database_url) as session:
        serialise(session)
        contact = session.get(Contact, contact_id)
        if contact is None:
            raise LookupError(f"no contact {contact_id}")
        contact.name = name or None
        contact.updated_at = utcnow()
        members = session.execute(select(ContactLink.conversation_id)
                                  .where(ContactLink.contact_id == contact_id)).scalars().all()
        _announce(session, dict.fromkeys(members, contact_id))
        return _contact_json(contact)


# -- reading: a conversation's history, and search ---------------------------------------


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _contact_json(contact: Contact) -> dict[str, Any]:
    return {"id": contact.id, "name": contact.name, "created_at": _when(contact.created_at)}


def _names(session: Session, agent_ids: Iterable[int | None]) -> dict[int, str]:
    ids = {a for a in agent_ids if a is not None}
    if not ids:
        return {}
    return dict(session.execute(select(Agent.id, Agent.display_name).where(Agent.id.in_(ids)))
                .all())


def _members(session: Session, conversation_id: str) -> tuple[ContactLink | None,
                                                              Contact | None, list[str]]:
    own = session.get(ContactLink, conversation_id)
    if own is None or own.contact_id is None:
        return own, None, [conversation_id]
    contact = session.get(Contact, own.contact_id)
    ids = session.execute(select(ContactLink.conversation_id)
                          .where(ContactLink.contact_id == own.contact_id)
                          .order_by(ContactLink.conversation_id)).scalars().all()
    return own, contact, [conversation_id, *[c for c in ids if c != conversation_id]]


def _conversation_rows(session: Session, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Channel, name, last message time (any author but notes) and open ticket."""
    if not ids:
        return {}
    last = dict(session.execute(
        select(Message.conversation_id, func.max(Message.created_at))
        .where(Message.conversation_id.in_(ids), Message.author != "note")
        .group_by(Message.conversation_id)).all())
    open_tickets = dict(session.execute(
        select(Ticket.conversation_id, Ticket.id)
        .where(Ticket.conversation_id.in_(ids), Ticket.status.in_(OPEN))).all())
    out = {}
    for conversation in session.execute(select(Conversation).where(Conversation.id.in_(ids))
                                        ).scalars():
        at = last.get(conversation.id)  # max() keeps the column's type: aware UTC
        out[conversation.id] = {
            "id": conversation.id, "channel": conversation.channel,
            "display_name": conversation.display_name or conversation.id,
            "last_message_at": _when(at or conversation.last_customer_at),
            "open_ticket_id": open_tickets.get(conversation.id)}
    return out


def _maybe_same(session: Session, ids: list[str], typed: set[str],
                vouched: set[str]) -> list[str]:
    """Conversations outside these whose verified identifier one of these typed, or
    that typed one of these verified ones, and are not kept apart: the evidence did
    not link them (it pointed at two people, or a link failed), an agent may."""
    if not typed and not vouched:
        return []
    matches = [and_(ContactIdentifier.hash.in_(hashes), ContactIdentifier.verified.is_(flag))
               for hashes, flag in ((typed, True), (vouched, False)) if hashes]
    found = session.execute(
        select(ContactIdentifier.conversation_id).where(
            or_(*matches), ContactIdentifier.conversation_id.not_in(ids))
        .group_by(ContactIdentifier.conversation_id)
        .order_by(ContactIdentifier.conversation_id).limit(MAYBE_LIMIT)).scalars().all()
    links = _links(session, found)
    return [cid for cid in found if not _kept_apart(links.get(cid))]


def history(conversation_id: str, database_url: str | None = None,
            current_ticket_id: int | None = None) -> dict[str, Any] | None:
    """What the desk shows beside a ticket: the contact, its conversations (this one
    first) and identifiers (kind, verified or typed, channel: never a value), the
    conversations that may be the same person but are not linked (`maybe_same`,
    none when this one was unlinked by hand), and the past tickets of all of them,
    newest first, each with its agent, tags, survey ratings and notes; the ticket
    open in the view is left out. None when there is no such conversation."""
    with session_scope(database_url) as session:
        if session.get(Conversation, conversation_id) is None:
            return None
        own, contact, ids = _members(session, conversation_id)
        rows = _conversation_rows(session, ids)
        links = _links(session, ids)
        identifiers = session.execute(
            select(ContactIdentifier.conversation_id, ContactIdentifier.kind,
                   ContactIdentifier.verified, ContactIdentifier.created_at,
                   ContactIdentifier.hash)
            .where(ContactIdentifier.conversation_id.in_(ids))
            .order_by(ContactIdentifier.created_at, ContactIdentifier.id)).all()
        maybe = [] if _kept_apart(own) else _maybe_same(
            session, ids, {row.hash for row in identifiers if not row.verified},
            {row.hash for row in identifiers if row.verified})
        rows.update(_conversation_rows(session, maybe))
        query = select(Ticket).where(Ticket.conversation_id.in_(ids))
        if current_ticket_id is not None:
            query = query.where(Ticket.id != current_ticket_id)
        tickets = session.execute(query.order_by(Ticket.created_at.desc(), Ticket.id.desc())
                                  .limit(HISTORY_TICKETS + 1)).scalars().all()
        more = len(tickets) > HISTORY_TICKETS
        tickets = tickets[:HISTORY_TICKETS]
        ticket_ids = [t.id for t in tickets]
        notes: dict[int, list[Message]] = {}
        ratings: dict[int, list[dict[str, Any]]] = {}
        if ticket_ids:
            for note in session.execute(
                    select(Message).where(Message.ticket_id.in_(ticket_ids),
                                          Message.author == "note").order_by(Message.id)
            ).scalars():
                notes.setdefault(note.ticket_id, []).append(note)
            surveys = dict(session.execute(select(Survey.id, Survey.ticket_id)
                                           .where(Survey.ticket_id.in_(ticket_ids))).all())
            if surveys:
                for answer in session.execute(
                        select(SurveyAnswer).where(SurveyAnswer.survey_id.in_(list(surveys)))
                        .order_by(SurveyAnswer.id)).scalars():
                    ratings.setdefault(surveys[answer.survey_id], []).append(
                        {"question": answer.question, "score": answer.score,
                         "text": answer.text})
            for old in session.execute(select(Rating).where(Rating.ticket_id.in_(ticket_ids))
                                       ).scalars():  # the 1-5 rating before the survey
                ratings.setdefault(old.ticket_id, []).append(
                    {"question": "rating", "score": old.score, "text": None})
        names = _names(session, [*(t.assigned_agent_id for t in tickets),
                                 *(n.agent_id for ns in notes.values() for n in ns),
                                 *(link.agent_id for link in links.values()),
                                 own.agent_id if own is not None else None])

        def linked_by(cid: str) -> str | None:
            row = links.get(cid)
            if row is None or row.contact_id is None:
                return None
            return "automatic" if row.agent_id is None else names.get(row.agent_id, "an agent")

        return {
            "conversation_id": conversation_id,
            "contact": _contact_json(contact) if contact is not None else None,
            "kept_apart": _kept_apart(own),
            "unlinked_by": names.get(own.agent_id, "an agent")
            if own is not None and _kept_apart(own) and own.agent_id else None,
            "conversations": [{**rows[cid], "current": cid == conversation_id,
                               "linked_by": linked_by(cid),
                               "linked_at": _when(links[cid].changed_at)
                               if cid in links and links[cid].contact_id else None}
                              for cid in ids if cid in rows],
            "identifiers": [{"conversation_id": cid, "channel": channel_of(cid), "kind": kind,
                             "verified": bool(verified), "since": _when(at)}
                            for cid, kind, verified, at, _ in identifiers],
            "maybe_same": [rows[cid] for cid in maybe if cid in rows],
            "tickets": [{
                "id": t.id, "conversation_id": t.conversation_id,
                "channel": channel_of(t.conversation_id),
                "display_name": rows.get(t.conversation_id, {}).get("display_name"),
                "status": t.status, "reason": t.reason, "tags": list(t.tags or []),
                "created_at": _when(t.created_at), "resolved_at": _when(t.resolved_at),
                "agent": names.get(t.assigned_agent_id) if t.assigned_agent_id else None,
                "ratings": ratings.get(t.id, []),
                "notes": [{"text": n.text, "agent": names.get(n.agent_id),
                           "created_at": _when(n.created_at)} for n in notes.get(t.id, [])],
            } for t in tickets],
            "more_tickets": more,
        }


def query_hashes(query: str) -> set[str]:
    """The hashes a typed phone number or email address would have: found as the
    masking finds them, and a bare international number (351912345678) too."""
    hashes = {personal_data.digest(span.kind, span.value)
              for span in personal_data.find(query) if span.kind in KINDS}
    digits = re.sub(r"[\s().-]", "", query)
    if re.fullmatch(r"(\+|00)?[1-9][0-9]{7,14}", digits):
        hashes.add(personal_data.digest("phone", personal_data.phone_value(digits)))
    return hashes


def _python_lower(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else value


def _lower(session: Session) -> Any:
    """SQL's lower() as Python's str.lower (the needle's): PostgreSQL's lower() in a
    UTF-8 locale already is; SQLite's knows ASCII only ("Élodie" would stay "Élodie"),
    so there a function of ours, registered on this connection, does it."""
    if session.get_bind().dialect.name != "sqlite":
        return func.lower
    driver = session.connection().connection.driver_connection
    driver.create_function("parley_lower", 1, _python_lower, deterministic=True)
    return func.parley_lower


def search(query: str = "", channel: str | None = None, limit: int = SEARCH_LIMIT,
           database_url: str | None = None) -> dict[str, Any]:
    """Conversations whose customer name or contact name holds `query` (any case,
    accented letters too), whose typed or verified phone or email is `query`, or
    whose id or platform id it is; on `channel` if given (alone: that channel's
    latest). Grouped per contact (all its conversations, `matched` marking those
    found), newest activity first; `more` when there were more than `limit` groups
    or SEARCH_SCAN conversations."""
    query = query.strip()
    if len(query) > QUERY_LIMIT:
        raise ValueError(f"a search is at most {QUERY_LIMIT} characters")
    if not query and not channel:
        return {"results": [], "more": False}
    with session_scope(database_url) as session:
        conditions = []
        if query:
            needle = query.lower()
            lower = _lower(session)
            named = select(ContactLink.conversation_id).join(
                Contact, Contact.id == ContactLink.contact_id).where(
                lower(Contact.name).contains(needle, autoescape=True))
            found = [lower(Conversation.display_name).contains(needle, autoescape=True),
                     Conversation.id.in_(named), Conversation.id == query]
            if _PLATFORM_ID.fullmatch(query):
                found.append(Conversation.id.endswith(":" + query, autoescape=True))
            hashes = query_hashes(query)
            if hashes:
                found.append(Conversation.id.in_(
                    select(ContactIdentifier.conversation_id)
                    .where(ContactIdentifier.hash.in_(hashes))))
            conditions.append(or_(*found))
        if channel:
            conditions.append(Conversation.channel == channel)
        recent = func.coalesce(Conversation.last_customer_at, Conversation.created_at)
        matched = session.execute(select(Conversation.id).where(*conditions)
                                  .order_by(recent.desc(), Conversation.id)
                                  .limit(SEARCH_SCAN + 1)).scalars().all()
        more = len(matched) > SEARCH_SCAN
        matched = matched[:SEARCH_SCAN]
        links = {cid: row.contact_id for cid, row in _links(session, matched).items()
                 if row.contact_id is not None}
        groups: dict[tuple[str, Any], list[str]] = {}
        for cid in matched:
            key = ("contact", links[cid]) if cid in links else ("conversation", cid)
            groups.setdefault(key, []).append(cid)
        if len(groups) > limit:
            more = True
        chosen = list(groups.items())[:limit]
        contact_ids = [key[1] for key, _ in chosen if key[0] == "contact"]
        contacts_by_id: dict[int, Contact] = {}
        members: dict[int, list[str]] = {}
        if contact_ids:
            contacts_by_id = {c.id: c for c in session.execute(
                select(Contact).where(Contact.id.in_(contact_ids))).scalars()}
            for contact_id, cid in session.execute(
                    select(ContactLink.contact_id, ContactLink.conversation_id)
                    .where(ContactLink.contact_id.in_(contact_ids))
                    .order_by(ContactLink.conversation_id)).all():
                members.setdefault(contact_id, []).append(cid)
        everyone = [cid for key, hits in chosen
                    for cid in (members.get(key[1], hits) if key[0] == "contact" else hits)]
        rows = _conversation_rows(session, everyone)
        results = []
        for (kind, key), hits in chosen:
            ids = members.get(key, hits) if kind == "contact" else hits
            ids = hits + [cid for cid in ids if cid not in hits]  # those found first
            contact = contacts_by_id.get(key) if kind == "contact" else None
            results.append({
                "contact": _contact_json(contact) if contact is not None else None,
                "conversations": [{**rows[cid], "matched": cid in hits}
                                  for cid in ids if cid in rows]})
        return {"results": results, "more": more}


# -- privacy ----------------------------------------------------------------------------


def rows_of(session: Session, conversation_ids: list[str]
            ) -> tuple[list[ContactIdentifier], list[ContactLink], list[Contact],
                       dict[int, list[str]], dict[int, int]]:
    """Everything stored here about these conversations, for an export: identifiers,
    link rows, their contacts, each contact's conversations among these, and how
    many other conversations it has (counted, never named: a WhatsApp id is a phone
    number, and the export is about these conversations only)."""
    identifiers = session.execute(
        select(ContactIdentifier).where(ContactIdentifier.conversation_id.in_(conversation_ids))
        .order_by(ContactIdentifier.id)).scalars().all()
    links = session.execute(select(ContactLink).where(
        ContactLink.conversation_id.in_(conversation_ids))
        .order_by(ContactLink.conversation_id)).scalars().all()
    members: dict[int, list[str]] = {}
    for row in links:
        if row.contact_id is not None:
            members.setdefault(row.contact_id, []).append(row.conversation_id)
    contact_ids = sorted(members)
    contacts = session.execute(select(Contact).where(Contact.id.in_(contact_ids))
                               .order_by(Contact.id)).scalars().all() if contact_ids else []
    others: dict[int, int] = {}
    if contact_ids:
        everyone = dict(session.execute(
            select(ContactLink.contact_id, func.count()).where(
                ContactLink.contact_id.in_(contact_ids)).group_by(ContactLink.contact_id)).all())
        others = {c: int(everyone.get(c, 0)) - len(members[c]) for c in contact_ids}
    return list(identifiers), list(links), list(contacts), members, others


def forget(session: Session, conversation_ids: list[str]) -> dict[str, int]:
    """Delete these conversations' identifiers and links (in the caller's erasure or
    retention transaction, before the conversations themselves); a contact left
    with fewer than two conversations goes too. Counts of the rows named."""
    if not conversation_ids:
        return {"contact_identifiers": 0, "contact_links": 0}
    serialise(session)  # a link in progress finishes first: its contact is counted whole
    contact_ids = set(session.execute(
        select(ContactLink.contact_id).where(ContactLink.conversation_id.in_(conversation_ids),
                                             ContactLink.contact_id.is_not(None))).scalars())

    def gone(statement: Any) -> int:
        return int(session.execute(statement.execution_options(synchronize_session=False)
                                   ).rowcount)

    counts = {
        "contact_identifiers": gone(delete(ContactIdentifier).where(
            ContactIdentifier.conversation_id.in_(conversation_ids))),
        "contact_links": gone(delete(ContactLink).where(
            ContactLink.conversation_id.in_(conversation_ids))),
    }
    if contact_ids:
        left = dict(session.execute(
            select(ContactLink.contact_id, func.count()).where(
                ContactLink.contact_id.in_(contact_ids)).group_by(ContactLink.contact_id)).all())
        dissolved = [c for c in contact_ids if left.get(c, 0) < 2]
        if dissolved:
            gone(delete(ContactLink).where(ContactLink.contact_id.in_(dissolved)))
            gone(delete(Contact).where(Contact.id.in_(dissolved)))
    return counts
