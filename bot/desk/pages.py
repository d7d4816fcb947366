"""The desk page, the scripts and styles every desk page loads, and the health check."""

from __future__ import annotations

from sanic import Blueprint, response
from sanic.exceptions import NotFound
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import agents
from parley.bot.desk.auth import requires_session

STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}

bp = Blueprint("desk_pages")


@bp.get("/healthz")
async def health(_request: Request) -> HTTPResponse:
    return response.json({"status": "ok"})


@bp.get("/static/<name>")
async def static(request: Request, name: str) -> HTTPResponse:
    """Only the files loaded at start-up, so no path from the URL ever reaches the disk."""
    pages = request.app.ctx.pages
    kind = STATIC_TYPES.get(name[name.rfind("."):]) if "." in name else None
    if name not in pages or kind is None:
        raise NotFound("no such file")
    return response.text(pages[name], content_type=f"{kind}; charset=utf-8")


@bp.get("/")
@requires_session(roles=agents.ROLES)
async def desk(request: Request) -> HTTPResponse:
    role = request.ctx.session.agent.role
    if role == "manager":
        return response.redirect("/analytics")  # managers read the numbers
    if role not in agents.DESK_ROLES:
        return response.redirect("/library")  # writers work in the reply library
    return response.html(request.app.ctx.pages["desk.html"])
