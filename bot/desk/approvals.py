"""The approval queue over the API: supervisors review trainees' replies, and a
trainee may withdraw one that still waits (`parley.bot.handoff.approvals`)."""

from __future__ import annotations

from sanic import Blueprint, response
from sanic.exceptions import NotFound
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import agents, conversations
from parley.bot.desk.auth import requires_session
from parley.bot.desk.errors import BadRequest, body_json, row_id, text_field
from parley.bot.desk.tickets import desk_names
from parley.bot.handoff import approvals
from parley.bot.storage import off_loop, utcnow

bp = Blueprint("desk_approvals")


def review_id(raw: int) -> int:
    if row_id(raw) is None:
        raise NotFound("no such reply")
    return raw


@bp.get("/api/approvals")
@requires_session(roles=agents.SUPERVISING_ROLES)
async def queue(request: Request) -> HTTPResponse:
    """What waits, oldest first, with its customer, and how long reviews take."""
    database_url = request.app.ctx.database_url
    waiting = await off_loop(approvals.waiting, database_url)
    customers = await off_loop(conversations.display_names,
                               [r.conversation_id for r in waiting], database_url)
    who = await desk_names(database_url)
    now = utcnow()
    items = []
    for review in waiting:
        item = review.as_json(who)
        item["display_name"] = customers.get(review.conversation_id, review.conversation_id)
        item["waiting_seconds"] = int((now - review.created_at).total_seconds())
        items.append(item)
    timings = await off_loop(approvals.timings, database_url)
    return response.json({"waiting": items, "timings": timings.as_json()})


async def _decide(request: Request, decide: object, *args: object) -> HTTPResponse:
    database_url = request.app.ctx.database_url
    try:
        view = await off_loop(decide, *args, database_url)  # type: ignore[arg-type]
    except approvals.NotASupervisor as exc:
        raise BadRequest(str(exc), 403) from None
    except LookupError:
        raise NotFound("no such reply") from None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return response.json(view.as_json(await desk_names(database_url)))


@bp.post("/api/approvals/<rid:int>/approve")
@requires_session(roles=agents.SUPERVISING_ROLES)
async def approve(request: Request, rid: int) -> HTTPResponse:
    """As written, or with `text`: the supervisor's edit is what the customer gets."""
    payload = body_json(request)
    text = text_field(payload, "text", 4096) if "text" in payload else None
    return await _decide(request, approvals.approve, review_id(rid),
                         request.ctx.session.agent.id, text)


@bp.post("/api/approvals/<rid:int>/send-back")
@requires_session(roles=agents.SUPERVISING_ROLES)
async def send_back(request: Request, rid: int) -> HTTPResponse:
    comment = text_field(body_json(request), "comment", 2000)
    return await _decide(request, approvals.send_back, review_id(rid),
                         request.ctx.session.agent.id, comment)


@bp.post("/api/approvals/<rid:int>/withdraw")
@requires_session()
async def withdraw(request: Request, rid: int) -> HTTPResponse:
    return await _decide(request, approvals.withdraw, review_id(rid),
                         request.ctx.session.agent.id)
