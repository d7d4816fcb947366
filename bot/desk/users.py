"""Desk users over the API: who is logged in, whom to transfer to, and the admins' user list."""

from __future__ import annotations

from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import agents
from parley.bot.desk.auth import requires_session
from parley.bot.desk.errors import BadRequest, body_json, text_field
from parley.bot.storage import off_loop

bp = Blueprint("desk_users")


@bp.get("/api/me")
@requires_session(roles=agents.ROLES)
async def me(request: Request) -> HTTPResponse:
    s = request.ctx.session
    return response.json({"id": s.agent.id, "username": s.agent.username,
                          "display_name": s.agent.display_name, "role": s.agent.role,
                          "csrf": s.csrf_token})


@bp.get("/api/agents")
@requires_session()
async def agent_list(request: Request) -> HTTPResponse:
    """Only those who answer customers: the transfer targets."""
    return response.json([{"id": a.id, "display_name": a.display_name, "role": a.role}
                          for a in await off_loop(agents.list_agents, request.app.ctx.database_url)
                          if a.role in agents.DESK_ROLES])


@bp.get("/api/users")
@requires_session(roles=("admin",))
async def users(request: Request) -> HTTPResponse:
    everyone = await off_loop(agents.list_agents, request.app.ctx.database_url)
    return response.json([{"id": a.id, "username": a.username,
                           "display_name": a.display_name, "role": a.role} for a in everyone])


@bp.post("/api/users")
@requires_session(roles=("admin",))
async def add_user(request: Request) -> HTTPResponse:
    payload = body_json(request)
    username = text_field(payload, "username", 64)
    password = text_field(payload, "password", 200)
    role = payload.get("role", "agent")
    display_name = payload.get("display_name")
    if display_name is not None and not isinstance(display_name, str):
        raise BadRequest("'display_name' must be text")
    if display_name is not None and len(display_name) > 120:
        raise BadRequest(f"'display_name' is {len(display_name)} characters; the limit is 120",
                         413)
    try:
        user = await off_loop(agents.create_user, username, password, str(role),
                                       display_name, request.app.ctx.database_url)
    except agents.DuplicateUser as exc:
        raise BadRequest(str(exc), 409) from None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return response.json({"id": user.id, "username": user.username,
                          "display_name": user.display_name, "role": user.role},
                         status=201)
