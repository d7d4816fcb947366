"""Desk login sessions and CSRF checks.

The session token lives in an HttpOnly, SameSite=Strict cookie (the database keeps
only its hash: `parley.bot.agents`); each session has its own CSRF token, sent
back by the page in `X-CSRF-Token` (API) or a `csrf` form field, and compared in
constant time on every state-changing request.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from sanic import response
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import agents
from parley.bot.agents import SessionView
from parley.bot.storage import off_loop

SESSION_COOKIE = "parley_session"
LOGIN_CSRF_COOKIE = "parley_login_csrf"

Handler = Callable[..., Awaitable[HTTPResponse]]


def set_cookie(resp: HTTPResponse, name: str, value: str, max_age: int, secure: bool) -> None:
    resp.cookies[name] = value
    cookie = resp.cookies[name]
    cookie["httponly"] = True
    cookie["samesite"] = "Strict"
    cookie["path"] = "/"
    cookie["max-age"] = max_age
    if secure:
        cookie["secure"] = True


def clear_cookie(resp: HTTPResponse, name: str) -> None:
    resp.cookies[name] = ""
    resp.cookies[name]["max-age"] = 0
    resp.cookies[name]["path"] = "/"


def same(a: str | None, b: str | None) -> bool:
    """Constant-time, and for any text a header or form can carry: compare_digest
    refuses str with non-ASCII characters, so both sides are compared as bytes."""
    return bool(a) and bool(b) and hmac.compare_digest(
        str(a).encode("utf-8", "surrogatepass"), str(b).encode("utf-8", "surrogatepass"))


def new_token() -> str:
    return secrets.token_urlsafe(32)


BACKGROUND_HEADER = "x-parley-background"


async def current_session(request: Request) -> SessionView | None:
    """The request's session; a page's own background refresh (BACKGROUND_HEADER)
    does not keep it from going idle, only the person's requests do."""
    touch = request.headers.get(BACKGROUND_HEADER) != "1"
    return await off_loop(agents.session_for, request.cookies.get(SESSION_COOKIE),
                          request.app.ctx.database_url, touch)


def client_address(request: Request) -> str:
    """Who is asking, for login throttling: the forwarded address when Sanic is told
    to trust the proxy in front (PROXIES_COUNT, REAL_IP_HEADER or FORWARDED_SECRET;
    otherwise `remote_addr` is empty), else the socket's peer."""
    return request.remote_addr or request.ip or "unknown"


def wants_html(request: Request) -> bool:
    return not request.path.startswith("/api/") and request.path != "/events"


def requires_session(roles: tuple[str, ...] = agents.DESK_ROLES
                     ) -> Callable[[Handler], Handler]:
    """Every desk route except login goes through this: no session, no access;
    POSTs must also carry the session's CSRF token. The default: those who answer
    customers."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def wrapper(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
            session = await current_session(request)
            if session is None:
                if wants_html(request):
                    return response.redirect("/login")
                return response.json({"error": "log in first"}, status=401)
            if session.agent.role not in roles:
                return response.json({"error": "your role cannot do this"}, status=403)
            if request.method not in {"GET", "HEAD", "OPTIONS"}:
                sent = request.headers.get("x-csrf-token") or (request.form or {}).get("csrf")
                if not same(sent, session.csrf_token):
                    return response.json({"error": "missing or wrong CSRF token"}, status=403)
            request.ctx.session = session
            return await handler(request, *args, **kwargs)

        return wrapper

    return decorate
