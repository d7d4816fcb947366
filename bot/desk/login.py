"""Desk login and logout: the login form, its CSRF cookie, and the session cookie."""

from __future__ import annotations

from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import agents
from parley.bot.desk.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    new_token,
    requires_session,
    same,
    set_cookie,
)
from parley.bot.storage import off_loop

bp = Blueprint("desk_login")


@bp.get("/login")
async def login_page(request: Request) -> HTTPResponse:
    """There is no session yet, so the form's CSRF token is paired with a short-lived cookie."""
    token = new_token()
    error = "Wrong username or password." if request.args.get("failed") else ""
    html = (request.app.ctx.pages["login.html"].replace("{{csrf}}", token)
            .replace("{{error}}", error))
    resp = response.html(html)
    set_cookie(resp, LOGIN_CSRF_COOKIE, token, 600, request.app.ctx.secure_cookies)
    return resp


@bp.post("/login")
async def login(request: Request) -> HTTPResponse:
    form = request.form or {}
    if not same(form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)):
        return response.json({"error": "missing or wrong CSRF token; reload the page"},
                             status=403)
    session = await off_loop(
        agents.login, form.get("username") or "", form.get("password") or "",
        request.app.ctx.database_url)
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
    await off_loop(agents.logout, request.ctx.session.token,
                            request.app.ctx.database_url)
    resp = response.redirect("/login", status=303)
    clear_cookie(resp, SESSION_COOKIE)
    return resp
