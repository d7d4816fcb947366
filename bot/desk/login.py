"""Desk login and logout: the login form, its CSRF cookie, and the session cookie.

Failed logins are throttled per user name and per client address
(`parley.bot.login_throttle`): a locked name or address gets the login page again
with status 429, a Retry-After header and the reason ("Too many failed attempts
for this user; try again in 14 minutes.").
"""

from __future__ import annotations

import html
from typing import Any

from sanic import Blueprint, Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import agents
from parley.bot.desk import live
from parley.bot.desk.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    client_address,
    new_token,
    requires_session,
    same,
    set_cookie,
)
from parley.bot.storage import off_loop

bp = Blueprint("desk_login")
WRONG = "Wrong username or password."


@bp.listener("before_server_start")
async def _check_idle_setting(_app: Sanic, _loop: Any) -> None:
    """A bad PARLEY_DESK_IDLE_MINUTES stops the desk at start, not at each request."""
    agents.idle_timeout()


def login_page(request: Request, error: str = "", status: int = 200,
               headers: dict[str, str] | None = None) -> HTTPResponse:
    """There is no session yet, so the form's CSRF token is paired with a short-lived cookie."""
    token = new_token()
    page = (request.app.ctx.pages["login.html"].replace("{{csrf}}", token)
            .replace("{{error}}", html.escape(error)))
    resp = response.html(page, status=status, headers=headers)
    set_cookie(resp, LOGIN_CSRF_COOKIE, token, 600, request.app.ctx.secure_cookies)
    return resp


@bp.get("/login")
async def login_form(request: Request) -> HTTPResponse:
    return login_page(request, WRONG if request.args.get("failed") else "")


@bp.post("/login")
async def login(request: Request) -> HTTPResponse:
    form = request.form or {}
    if not same(form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)):
        return response.json({"error": "missing or wrong CSRF token; reload the page"},
                             status=403)
    try:
        session = await off_loop(
            agents.login, form.get("username") or "", form.get("password") or "",
            request.app.ctx.database_url, client_address(request))
    except agents.Throttled as exc:
        return login_page(request, exc.message, 429, {"Retry-After": str(exc.retry_after)})
    except agents.AccountDisabled:
        return login_page(request, "This account is disabled; ask an admin to enable it.",
                          403)
    if session is None:
        return response.redirect("/login?failed=1", status=303)
    resp = response.redirect("/", status=303)
    set_cookie(resp, SESSION_COOKIE, session.token,
               int(agents.SESSION_LIFETIME.total_seconds()), request.app.ctx.secure_cookies)
    clear_cookie(resp, LOGIN_CSRF_COOKIE)
    return resp


@bp.post("/logout")
@requires_session(roles=agents.ROLES)
async def logout(request: Request) -> HTTPResponse:
    await off_loop(agents.logout, request.ctx.session.token, request.app.ctx.database_url)
    live.sessions_changed()
    resp = response.redirect("/login", status=303)
    clear_cookie(resp, SESSION_COOKIE)
    return resp
