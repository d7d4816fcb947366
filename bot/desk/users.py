"""Desk users over the API: who is logged in, whom to transfer to, one's own
password, and the admins' accounts: list, create, disable and enable, reset a
password, end a user's sessions, mark an agent as a trainee."""

from __future__ import annotations

from typing import Any

from sanic import Blueprint, response
from sanic.exceptions import NotFound
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import agents
from parley.bot.desk import live
from parley.bot.desk.auth import client_address, requires_session
from parley.bot.desk.errors import BadRequest, body_json, row_id, text_field
from parley.bot.storage import off_loop

bp = Blueprint("desk_users")
ADMINS = ("admin",)


@bp.get("/api/me")
@requires_session(roles=agents.ROLES)
async def me(request: Request) -> HTTPResponse:
    s = request.ctx.session
    return response.json({"id": s.agent.id, "username": s.agent.username,
                          "display_name": s.agent.display_name, "role": s.agent.role,
                          "trainee": s.agent.trainee, "csrf": s.csrf_token})


def _password_field(payload: dict[str, Any], key: str) -> str:
    """Any text up to the limit: whether it is long enough is the policy's to say."""
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{key}' must be non-empty text")
    if len(value) > agents.PASSWORD_MAX:
        raise BadRequest(f"'{key}' is {len(value)} characters; the limit is "
                         f"{agents.PASSWORD_MAX}", 413)
    return value


@bp.post("/api/me/password")
@requires_session(roles=agents.ROLES)
async def change_password(request: Request) -> HTTPResponse:
    """The current password and a new one; the user's other sessions end, this one stays."""
    payload = body_json(request)
    current = _password_field(payload, "current_password")
    new = _password_field(payload, "new_password")
    try:
        await off_loop(agents.change_password, request.ctx.session.token, current, new,
                       request.app.ctx.database_url, client_address(request))
    except agents.Throttled as exc:
        return response.json({"error": exc.message}, status=429,
                             headers={"Retry-After": str(exc.retry_after)})
    except agents.NoSuchUser:
        return response.json({"error": "log in first"}, status=401)
    except ValueError as exc:  # the wrong current password, or the policy
        raise BadRequest(str(exc)) from None
    live.sessions_changed()
    return response.json({"changed": True})


@bp.get("/api/agents")
@requires_session()
async def agent_list(request: Request) -> HTTPResponse:
    """Only active users who answer customers: the transfer targets."""
    return response.json([{"id": a.id, "display_name": a.display_name, "role": a.role}
                          for a in await off_loop(agents.list_agents, request.app.ctx.database_url)
                          if a.role in agents.DESK_ROLES and not a.disabled])


@bp.get("/api/users")
@requires_session(roles=ADMINS)
async def users(request: Request) -> HTTPResponse:
    everyone = await off_loop(agents.list_users, request.app.ctx.database_url)
    return response.json([u.as_json() for u in everyone])


@bp.post("/api/users")
@requires_session(roles=ADMINS)
async def add_user(request: Request) -> HTTPResponse:
    payload = body_json(request)
    username = text_field(payload, "username", 64)
    password = text_field(payload, "password", agents.PASSWORD_MAX)
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
                          "display_name": user.display_name, "role": user.role,
                          "disabled": False}, status=201)


def _user_id(user_id: int) -> int:
    """An id no row can have (0, -1, 10**30) is not looked up."""
    if row_id(user_id) is None:
        raise NotFound("no such user")
    return user_id


async def _summary(request: Request, user_id: int) -> dict[str, Any]:
    everyone = await off_loop(agents.list_users, request.app.ctx.database_url)
    return next(u.as_json() for u in everyone if u.id == user_id)


@bp.post("/api/users/<user_id:int>/disable")
@requires_session(roles=ADMINS)
async def disable(request: Request, user_id: int) -> HTTPResponse:
    """No more logins; the user's sessions (and live streams) end at once."""
    try:
        await off_loop(agents.disable_user, _user_id(user_id), request.ctx.session.agent.id,
                       request.app.ctx.database_url)
    except agents.NoSuchUser:
        raise NotFound("no such user") from None
    except agents.LastAdmin as exc:
        raise BadRequest(str(exc), 409) from None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    live.sessions_changed()
    return response.json(await _summary(request, user_id))


@bp.post("/api/users/<user_id:int>/enable")
@requires_session(roles=ADMINS)
async def enable(request: Request, user_id: int) -> HTTPResponse:
    try:
        await off_loop(agents.enable_user, _user_id(user_id), request.app.ctx.database_url)
    except agents.NoSuchUser:
        raise NotFound("no such user") from None
    return response.json(await _summary(request, user_id))


@bp.post("/api/users/<user_id:int>/reset-password")
@requires_session(roles=ADMINS)
async def reset_password(request: Request, user_id: int) -> HTTPResponse:
    """`{"password": ...}` sets it; `{}` makes one, returned in this answer only.
    Either way the user's sessions end."""
    payload = body_json(request)
    password = None if payload.get("password") is None else \
        _password_field(payload, "password")
    try:
        made = await off_loop(agents.reset_password, _user_id(user_id),
                              request.ctx.session.agent.id, password,
                              request.app.ctx.database_url)
    except agents.NoSuchUser:
        raise NotFound("no such user") from None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    live.sessions_changed()
    answer = await _summary(request, user_id)
    if password is None:
        answer["password"] = made  # shown once: never stored in clear, never shown again
    return response.json(answer)


@bp.post("/api/users/<user_id:int>/end-sessions")
@requires_session(roles=ADMINS)
async def end_sessions(request: Request, user_id: int) -> HTTPResponse:
    try:
        ended = await off_loop(agents.end_sessions, _user_id(user_id),
                               request.app.ctx.database_url)
    except agents.NoSuchUser:
        raise NotFound("no such user") from None
    live.sessions_changed()
    return response.json({**await _summary(request, user_id), "ended": ended})


@bp.post("/api/users/<user_id:int>/trainee")
@requires_session(roles=ADMINS)
async def trainee(request: Request, user_id: int) -> HTTPResponse:
    """`{"trainee": true}`: the agent's replies wait for a supervisor's approval."""
    value = body_json(request).get("trainee")
    if not isinstance(value, bool):
        raise BadRequest("'trainee' must be true or false")
    try:
        await off_loop(agents.set_trainee, _user_id(user_id), value,
                       request.app.ctx.database_url)
    except agents.NoSuchUser:
        raise NotFound("no such user") from None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return response.json(await _summary(request, user_id))
