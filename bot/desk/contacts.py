"""Desk routes for contacts: one customer's conversations across channels.

    GET  /api/tickets/<id>/contact        the ticket's contact and its history
    GET  /api/contacts?q=&channel=&limit=  search by name, identifier or channel
    POST /api/contacts/link    {"conversation_id": ..., "with_conversation_id": ...}
    POST /api/contacts/unlink  {"conversation_id": ...}
    POST /api/contacts/name    {"contact_id": 1, "name": "Maria Silva"}

For those who answer customers (agents, supervisors, admins). The rules (what
links, what a search matches) are `parley.bot.contacts`'s.
"""

from __future__ import annotations

import re
from typing import Any

from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import contacts, privacy
from parley.bot.desk.auth import requires_session
from parley.bot.desk.errors import BadRequest, body_json, row_id
from parley.bot.desk.tickets import held
from parley.bot.settings import load_settings
from parley.bot.storage import off_loop

bp = Blueprint("desk_contacts")
SEARCH_KEYS = ("q", "channel", "limit")
CHANNEL = re.compile(r"[a-z][a-z0-9_]{0,31}")
_LIMIT_TEXT = re.compile(r"[0-9]{1,3}")
MAX_LIMIT = 100


def _conversation_id(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not privacy.CONVERSATION_ID.fullmatch(value):
        raise BadRequest(f"'{key}' must be a conversation id such as telegram:123 or "
                         "whatsapp:351912345678")
    return value


def _agent(request: Request) -> int:
    return int(request.ctx.session.agent.id)


async def _change(fn: Any, *args: Any) -> Any:
    """A contact change off the loop, its refusals as 4xx with the reason."""
    try:
        return await off_loop(fn, *args)
    except LookupError as exc:
        raise BadRequest(str(exc), 404) from None
    except contacts.NotLinked as exc:
        raise BadRequest(str(exc), 409) from None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


@bp.get("/api/tickets/<ticket_id:int>/contact")
@requires_session()
async def ticket_contact(request: Request, ticket_id: int) -> HTTPResponse:
    """The ticket's conversation's contact: its other conversations, past tickets
    (this one left out) with ratings and notes, identifiers (never their values)."""
    database_url = request.app.ctx.database_url
    ticket = await held(ticket_id, database_url)
    data = await off_loop(contacts.history, ticket.conversation_id, database_url, ticket_id)
    if data is None:
        raise BadRequest("the ticket's conversation is gone", 404)
    return response.json({"ticket_id": ticket_id, **data})


@bp.get("/api/contacts")
@requires_session()
async def search(request: Request) -> HTTPResponse:
    """Contacts and lone conversations by name, phone, email, conversation id or
    channel; the channels to choose from come with every answer."""
    args = request.get_args(keep_blank_values=True)
    unknown = sorted(set(args) - set(SEARCH_KEYS))
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0][:40]!r}; known: "
                         + ", ".join(SEARCH_KEYS))
    for key in SEARCH_KEYS:
        if len(args.getlist(key, [])) > 1:
            raise BadRequest(f"'{key}' given more than once")
    query = args.get("q", "")
    channel = args.get("channel", "") or None
    if channel is not None and not CHANNEL.fullmatch(channel):
        raise BadRequest("'channel' must be a channel name such as whatsapp or webchat")
    raw = args.get("limit", str(contacts.SEARCH_LIMIT))
    if not _LIMIT_TEXT.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"'limit' must be a whole number from 1 to {MAX_LIMIT}")
    try:
        found = await off_loop(contacts.search, query, channel, int(raw),
                               request.app.ctx.database_url)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return response.json({**found, "channels": list(load_settings().channels)})


@bp.post("/api/contacts/link")
@requires_session()
async def link(request: Request) -> HTTPResponse:
    """The agent says two conversations are one person's."""
    payload = body_json(request)
    conversation_id = _conversation_id(payload, "conversation_id")
    other = _conversation_id(payload, "with_conversation_id")
    contact_id = await _change(contacts.link, conversation_id, other, _agent(request),
                               request.app.ctx.database_url)
    return response.json({"contact_id": contact_id, "conversation_id": conversation_id})


@bp.post("/api/contacts/unlink")
@requires_session()
async def unlink(request: Request) -> HTTPResponse:
    """The conversation leaves its contact and is not linked again automatically."""
    payload = body_json(request)
    conversation_id = _conversation_id(payload, "conversation_id")
    left = await _change(contacts.unlink, conversation_id, _agent(request),
                         request.app.ctx.database_url)
    return response.json({"left_contact_id": left, "conversation_id": conversation_id})


@bp.post("/api/contacts/name")
@requires_session()
async def name(request: Request) -> HTTPResponse:
    """The agent names the person ("" clears it)."""
    payload = body_json(request)
    contact_id = row_id(payload.get("contact_id"))
    if contact_id is None:
        raise BadRequest("'contact_id' must be a contact's id (a whole number)")
    value = payload.get("name")
    if not isinstance(value, str):
        raise BadRequest("'name' must be text (empty to clear it)")
    if len(value) > contacts.NAME_LIMIT:
        raise BadRequest(f"'name' is {len(value)} characters; the limit is "
                         f"{contacts.NAME_LIMIT}", 413)
    contact = await _change(contacts.rename, contact_id, value, request.app.ctx.database_url)
    return response.json(contact)
