"""Desk routes for satisfaction survey answers: what the customer said about a ticket."""

from __future__ import annotations

from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import survey
from parley.bot.desk.auth import requires_session
from parley.bot.desk.tickets import held
from parley.bot.storage import off_loop

bp = Blueprint("desk_surveys")


@bp.get("/api/tickets/<ticket_id:int>/survey")
@requires_session()
async def ticket_survey(request: Request, ticket_id: int) -> HTTPResponse:
    """The ticket's surveys and their answers, per question (404 for no such ticket)."""
    database_url = request.app.ctx.database_url
    await held(ticket_id, database_url)
    surveys = await off_loop(survey.for_ticket, ticket_id, database_url)
    return response.json({"ticket_id": ticket_id, "surveys": surveys})
