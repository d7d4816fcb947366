"""The ticket API: the queue, a conversation's transcript, and what agents do with a ticket.

Who may do what to a ticket another agent holds is decided in one place,
`parley.bot.handoff.commands` (inside each command's transaction); a refusal
there is a 403 with its reason here.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

from sanic import Blueprint, response
from sanic.exceptions import NotFound
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import agents, contract, conversations, handoff, language, responses
from parley.bot.desk.auth import requires_session
from parley.bot.desk.errors import BadRequest, body_json, row_id, text_field
from parley.bot.handoff import approvals
from parley.bot.handoff.commands import NotPermitted
from parley.bot.responses import channels
from parley.bot.responses.library import library
from parley.bot.storage import off_loop, utcnow

bp = Blueprint("desk_tickets")
REPLY_NAME = re.compile(r"utter_[a-z0-9_]{1,94}")  # fits messages.reply_name (100)


async def desk_names(database_url: str | None) -> dict[int, str]:
    """Every desk user's display name by id (disabled users' too: they held tickets)."""
    return {a.id: a.display_name for a in await off_loop(agents.list_agents, database_url)}


async def ticket_json(views: list[handoff.TicketView], database_url: str | None,
                      agent_names: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """`agent_names`: `desk_names`, when the caller has them already."""
    ids = [t.conversation_id for t in views]
    names = await off_loop(conversations.display_names, ids, database_url)
    spoken = await off_loop(language.of_conversations, ids, database_url)
    if agent_names is None:
        agent_names = await desk_names(database_url)
    now = utcnow()
    out = []
    for view in views:
        item = view.as_json(now)
        item["display_name"] = names.get(view.conversation_id, view.conversation_id)
        item["agent_name"] = agent_names.get(view.assigned_agent_id or -1)
        item.update(spoken[view.conversation_id].as_json())
        out.append(item)
    return out


async def held(ticket_id: int, database_url: str | None) -> handoff.TicketView:
    """The ticket of a path's id; an id no row can have (0, -1, 10**30) is not looked up."""
    view = None if row_id(ticket_id) is None else \
        await off_loop(handoff.get_ticket, ticket_id, database_url)
    if view is None:
        raise NotFound("no such ticket")
    return view


def _notice(view: handoff.TicketView, reply: str, agent_name: str,
            database_url: str | None) -> str:
    """The notice's text for this channel, in the conversation's language."""
    spoken = language.of_conversation(view.conversation_id, database_url)
    return responses.render(reply, channels.of_conversation(view.conversation_id), spoken,
                            database_url=database_url, agent_name=agent_name)["text"]


async def tell_customer(view: handoff.TicketView, reply: str, agent_name: str,
                        database_url: str | None) -> None:
    """A writer-owned notice pushed to the customer's channel."""
    text = await off_loop(_notice, view, reply, agent_name, database_url)
    await off_loop(handoff.push_notice, view.conversation_id, text, view.id,
                            None, database_url)


async def record(request: Request, ticket_id: int, write: Any) -> HTTPResponse:
    """Replies and notes take the same input and differ only in where the text goes."""
    database_url = request.app.ctx.database_url
    text = text_field(body_json(request), "text", 4096)
    await held(ticket_id, database_url)
    written = await off_loop(write, ticket_id, request.ctx.session.agent.id, text,
                             database_url)
    if isinstance(written, handoff.Written) and written.held:
        # A trainee's reply: accepted for review, not sent (yet).
        return response.json({"id": written.id, "held": True}, status=202)
    return response.json({"id": getattr(written, "id", written), "held": False}, status=201)


@bp.get("/api/tickets")
@requires_session()
async def tickets(request: Request) -> HTTPResponse:
    database_url = request.app.ctx.database_url
    which = request.args.get("status", "open")
    statuses = {"open": handoff.OPEN, "closed": ("resolved", "abandoned")}.get(which)
    if statuses is None:
        raise BadRequest("status must be 'open' or 'closed'")
    views = await off_loop(handoff.list_tickets, statuses, 200, database_url)
    return response.json(await ticket_json(views, database_url))


@bp.get("/api/tickets/<ticket_id:int>")
@requires_session()
async def ticket_detail(request: Request, ticket_id: int) -> HTTPResponse:
    database_url = request.app.ctx.database_url
    view = await held(ticket_id, database_url)
    lines = await off_loop(conversations.transcript, view.conversation_id, database_url)
    reviews = await off_loop(approvals.of_ticket, view.id, database_url)
    names = await desk_names(database_url)  # read once: the ticket's and the transcript's
    transcript = []
    for line in lines:
        item = line.as_json()
        item["approved_by_name"] = names.get(line.approved_by or -1)
        transcript.append(item)
    return response.json({"ticket": (await ticket_json([view], database_url, names))[0],
                          "transcript": transcript,
                          "reviews": [r.as_json(names) for r in reviews],
                          "languages": language.choices()})


@bp.post("/api/tickets/<ticket_id:int>/claim")
@requires_session()
async def claim(request: Request, ticket_id: int) -> HTTPResponse:
    database_url = request.app.ctx.database_url
    await held(ticket_id, database_url)
    agent = request.ctx.session.agent
    view = await off_loop(handoff.claim_ticket, ticket_id, agent.id, database_url)
    if view is None:
        return response.json({"error": "someone else already took this conversation"},
                             status=409)
    await tell_customer(view, contract.AGENT_JOINED, agent.display_name, database_url)
    return response.json((await ticket_json([view], database_url))[0])


async def canned_name(request: Request) -> str | None:
    """The body's optional `reply_name`: the published reply the agent picked and sent
    unchanged (counted in the analytics)."""
    name = body_json(request).get("reply_name")
    if name is None:
        return None
    if not isinstance(name, str) or not REPLY_NAME.fullmatch(name) or name not in (
            await off_loop(library(database_url=request.app.ctx.database_url).current)).replies:
        raise BadRequest("'reply_name' must name a published reply, such as utter_greet")
    return name


@bp.post("/api/tickets/<ticket_id:int>/reply")
@requires_session()
async def reply(request: Request, ticket_id: int) -> HTTPResponse:
    name = await canned_name(request)
    return await record(request, ticket_id, partial(handoff.agent_reply, reply_name=name))


@bp.post("/api/tickets/<ticket_id:int>/note")
@requires_session()
async def note(request: Request, ticket_id: int) -> HTTPResponse:
    return await record(request, ticket_id, handoff.add_note)


@bp.post("/api/tickets/<ticket_id:int>/tags")
@requires_session()
async def tags(request: Request, ticket_id: int) -> HTTPResponse:
    database_url = request.app.ctx.database_url
    value = body_json(request).get("tags")
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise BadRequest("'tags' must be a list of strings")
    await held(ticket_id, database_url)
    view = await off_loop(handoff.set_tags, ticket_id, value[:20], database_url)
    return response.json((await ticket_json([view], database_url))[0])


@bp.post("/api/tickets/<ticket_id:int>/language")
@requires_session()
async def set_language(request: Request, ticket_id: int) -> HTTPResponse:
    """The agent's choice of the conversation's language: the bot's next reply and
    every notice use it, and no detection or platform locale overrides it."""
    database_url = request.app.ctx.database_url
    value = body_json(request).get("language")
    if not isinstance(value, str) or value not in channels.LANGUAGES:
        raise BadRequest(f"'language' must be one of {', '.join(channels.LANGUAGES)}")
    view = await held(ticket_id, database_url)
    agent = request.ctx.session.agent
    await off_loop(language.choose, view.conversation_id, value, agent.id, agent.display_name,
                   view.id, database_url)
    return response.json((await ticket_json([view], database_url))[0])


@bp.post("/api/tickets/<ticket_id:int>/transfer")
@requires_session()
async def transfer(request: Request, ticket_id: int) -> HTTPResponse:
    database_url = request.app.ctx.database_url
    to_agent = row_id(body_json(request).get("agent_id"))
    if to_agent is None or to_agent not in {
            a.id for a in await off_loop(agents.list_agents, database_url)
            if a.role in agents.DESK_ROLES and not a.disabled}:
        raise BadRequest("'agent_id' must be the id of an active desk user who answers "
                         "customers")
    await held(ticket_id, database_url)
    try:
        view = await off_loop(handoff.transfer, ticket_id, request.ctx.session.agent.id,
                              to_agent, database_url)
    except NotPermitted as exc:
        raise BadRequest(str(exc), 403) from None
    return response.json((await ticket_json([view], database_url))[0])


@bp.post("/api/tickets/<ticket_id:int>/resolve")
@requires_session()
async def resolve(request: Request, ticket_id: int) -> HTTPResponse:
    database_url = request.app.ctx.database_url
    await held(ticket_id, database_url)
    agent = request.ctx.session.agent
    # The "handed back" notice and the survey's first question, in one transaction.
    view = await off_loop(handoff.resolve, ticket_id, agent.id, database_url,
                          agent.display_name)
    return response.json((await ticket_json([view], database_url))[0])


@bp.post("/api/tickets/dismiss")
@requires_session()
async def dismiss(request: Request) -> HTTPResponse:
    ids = body_json(request).get("ids")
    if not isinstance(ids, list) or not ids or any(row_id(i) is None for i in ids):
        raise BadRequest("'ids' must be a non-empty list of ticket ids")
    try:
        closed = await off_loop(handoff.dismiss, ids[:500], request.ctx.session.agent.id,
                                request.app.ctx.database_url)
    except NotPermitted as exc:
        raise BadRequest(str(exc), 403) from None
    return response.json({"dismissed": closed})
