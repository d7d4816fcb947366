"""Desk routes: login, the queue and conversation pages, the JSON API, live events."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from importlib import resources
from typing import Any

from sanic import Sanic, response
from sanic.exceptions import NotFound, SanicException
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import agents, contract, conversations, events, handoff, responses
from parley.bot.desk.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    new_token,
    requires_session,
    same,
    set_cookie,
)
from parley.bot.desk.errors import BadRequest, body_json, text_field
from parley.bot.desk.library import add_library_routes
from parley.bot.responses import channels
from parley.bot.storage import utcnow

EVENT_POLL_SECONDS = 0.1
KEEPALIVE_SECONDS = 15.0
MAX_BODY = 64 * 1024
FOLLOW_UP_CHECK_SECONDS = 60.0


def _page(name: str) -> str:
    return resources.files("parley.bot.desk").joinpath("static", name).read_text("utf-8")


def create_app(database_url: str | None = None, secure_cookies: bool = False,
               follow_up_hours: float = 0.0) -> Sanic:
    app = Sanic("parley_desk")
    app.config.REQUEST_MAX_SIZE = MAX_BODY
    app.config.FORWARDED_SECRET = None
    app.ctx.database_url = database_url
    db = database_url
    pages = {name: _page(name) for name in ("login.html", "desk.html", "desk.js", "desk.css",
                                            "library.html", "library.js", "common.js")}

    @app.exception(BadRequest)
    async def bad_request(_request: Request, exc: BadRequest) -> HTTPResponse:
        return response.json({"error": exc.reason}, status=exc.status)

    @app.exception(handoff.TransitionError)
    async def conflict(_request: Request, exc: Exception) -> HTTPResponse:
        return response.json({"error": str(exc)}, status=409)

    @app.exception(NotFound)
    async def not_found(_request: Request, _exc: Exception) -> HTTPResponse:
        return response.json({"error": "not found"}, status=404)

    @app.exception(SanicException)
    async def sanic_error(_request: Request, exc: SanicException) -> HTTPResponse:
        status = getattr(exc, "status_code", 400) or 400
        return response.json({"error": str(exc) or "bad request"}, status=status)

    @app.exception(Exception)
    async def server_error(_request: Request, exc: Exception) -> HTTPResponse:
        app.ctx.last_error = repr(exc)  # logged by Sanic; never echoed to the caller
        return response.json({"error": "internal error"}, status=500)

    @app.get("/healthz")
    async def health(_request: Request) -> HTTPResponse:
        return response.json({"status": "ok"})

    @app.get("/static/<name>")
    async def static(_request: Request, name: str) -> HTTPResponse:
        types = {".js": "text/javascript", ".css": "text/css"}
        kind = types.get(name[name.rfind("."):]) if "." in name else None
        if name not in pages or kind is None:
            raise NotFound("no such file")
        return response.text(pages[name], content_type=f"{kind}; charset=utf-8")

    # -- login -------------------------------------------------------------
    @app.get("/login")
    async def login_page(request: Request) -> HTTPResponse:
        token = new_token()
        error = "Wrong username or password." if request.args.get("failed") else ""
        html = (pages["login.html"].replace("{{csrf}}", token)
                .replace("{{error}}", error))
        resp = response.html(html)
        set_cookie(resp, LOGIN_CSRF_COOKIE, token, 600, secure_cookies)
        return resp

    @app.post("/login")
    async def login(request: Request) -> HTTPResponse:
        form = request.form or {}
        if not same(form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)):
            return response.json({"error": "missing or wrong CSRF token; reload the page"},
                                 status=403)
        session = await asyncio.to_thread(
            agents.login, form.get("username") or "", form.get("password") or "", db)
        if session is None:
            return response.redirect("/login?failed=1", status=303)
        resp = response.redirect("/", status=303)
        set_cookie(resp, SESSION_COOKIE, session.token,
                   int(agents.SESSION_LIFETIME.total_seconds()), secure_cookies)
        clear_cookie(resp, LOGIN_CSRF_COOKIE)
        return resp

    @app.post("/logout")
    @requires_session(roles=agents.ROLES)
    async def logout(request: Request) -> HTTPResponse:
        await asyncio.to_thread(agents.logout, request.ctx.session.token, db)
        resp = response.redirect("/login", status=303)
        clear_cookie(resp, SESSION_COOKIE)
        return resp

    # -- pages -------------------------------------------------------------
    @app.get("/")
    @requires_session(roles=agents.ROLES)
    async def desk(request: Request) -> HTTPResponse:
        if request.ctx.session.agent.role not in agents.DESK_ROLES:
            return response.redirect("/library")  # writers work in the reply library
        return response.html(pages["desk.html"])

    # -- API ---------------------------------------------------------------
    def ticket_json(views: list[handoff.TicketView]) -> list[dict[str, Any]]:
        names = conversations.display_names([t.conversation_id for t in views], db)
        agent_names = {a.id: a.display_name for a in agents.list_agents(db)}
        now = utcnow()
        out = []
        for view in views:
            item = view.as_json(now)
            item["display_name"] = names.get(view.conversation_id, view.conversation_id)
            item["agent_name"] = agent_names.get(view.assigned_agent_id or -1)
            out.append(item)
        return out

    def held(ticket_id: int) -> handoff.TicketView:
        view = handoff.get_ticket(ticket_id, db)
        if view is None:
            raise NotFound("no such ticket")
        return view

    async def tell_customer(view: handoff.TicketView, reply: str, agent_name: str) -> None:
        """A writer-owned notice pushed to the customer's channel."""
        text = responses.render(reply, channels.of_conversation(view.conversation_id),
                                url=db, agent_name=agent_name)["text"]
        await asyncio.to_thread(handoff.push_notice, view.conversation_id, text, view.id,
                                None, db)

    @app.get("/api/me")
    @requires_session(roles=agents.ROLES)
    async def me(request: Request) -> HTTPResponse:
        s = request.ctx.session
        return response.json({"id": s.agent.id, "username": s.agent.username,
                              "display_name": s.agent.display_name, "role": s.agent.role,
                              "csrf": s.csrf_token})

    @app.get("/api/agents")
    @requires_session()
    async def agent_list(_request: Request) -> HTTPResponse:
        return response.json([{"id": a.id, "display_name": a.display_name, "role": a.role}
                              for a in agents.list_agents(db) if a.role in agents.DESK_ROLES])

    @app.get("/api/users")
    @requires_session(roles=("admin",))
    async def users(_request: Request) -> HTTPResponse:
        return response.json([{"id": a.id, "username": a.username,
                               "display_name": a.display_name, "role": a.role}
                              for a in agents.list_agents(db)])

    @app.post("/api/users")
    @requires_session(roles=("admin",))
    async def add_user(request: Request) -> HTTPResponse:
        payload = body_json(request)
        username = text_field(payload, "username", 64)
        password = text_field(payload, "password", 200)
        role = payload.get("role", "agent")
        display_name = payload.get("display_name")
        if display_name is not None and not isinstance(display_name, str):
            raise BadRequest("'display_name' must be text")
        try:
            user = await asyncio.to_thread(agents.create_user, username, password, str(role),
                                           display_name, db)
        except agents.DuplicateUser as exc:
            raise BadRequest(str(exc), 409) from None
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return response.json({"id": user.id, "username": user.username,
                              "display_name": user.display_name, "role": user.role},
                             status=201)

    @app.get("/api/tickets")
    @requires_session()
    async def tickets(request: Request) -> HTTPResponse:
        which = request.args.get("status", "open")
        statuses = {"open": handoff.OPEN, "closed": ("resolved", "abandoned")}.get(which)
        if statuses is None:
            raise BadRequest("status must be 'open' or 'closed'")
        views = await asyncio.to_thread(handoff.list_tickets, statuses, 200, db)
        return response.json(ticket_json(views))

    @app.get("/api/tickets/<ticket_id:int>")
    @requires_session()
    async def ticket_detail(_request: Request, ticket_id: int) -> HTTPResponse:
        view = held(ticket_id)
        lines = await asyncio.to_thread(conversations.transcript, view.conversation_id, db)
        return response.json({"ticket": ticket_json([view])[0],
                              "transcript": [line.as_json() for line in lines]})

    @app.post("/api/tickets/<ticket_id:int>/claim")
    @requires_session()
    async def claim(request: Request, ticket_id: int) -> HTTPResponse:
        held(ticket_id)
        agent = request.ctx.session.agent
        view = await asyncio.to_thread(handoff.claim_ticket, ticket_id, agent.id, db)
        if view is None:
            return response.json({"error": "someone else already took this conversation"},
                                 status=409)
        await tell_customer(view, contract.AGENT_JOINED, agent.display_name)
        return response.json(ticket_json([view])[0])

    async def record(request: Request, ticket_id: int, write: Any) -> HTTPResponse:
        text = text_field(body_json(request), "text", 4096)
        held(ticket_id)
        message_id = await asyncio.to_thread(write, ticket_id, request.ctx.session.agent.id,
                                             text, db)
        return response.json({"id": message_id}, status=201)

    @app.post("/api/tickets/<ticket_id:int>/reply")
    @requires_session()
    async def reply(request: Request, ticket_id: int) -> HTTPResponse:
        return await record(request, ticket_id, handoff.agent_reply)

    @app.post("/api/tickets/<ticket_id:int>/note")
    @requires_session()
    async def note(request: Request, ticket_id: int) -> HTTPResponse:
        return await record(request, ticket_id, handoff.add_note)

    @app.post("/api/tickets/<ticket_id:int>/tags")
    @requires_session()
    async def tags(request: Request, ticket_id: int) -> HTTPResponse:
        value = body_json(request).get("tags")
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise BadRequest("'tags' must be a list of strings")
        held(ticket_id)
        view = await asyncio.to_thread(handoff.set_tags, ticket_id, value[:20], db)
        return response.json(ticket_json([view])[0])

    @app.post("/api/tickets/<ticket_id:int>/transfer")
    @requires_session()
    async def transfer(request: Request, ticket_id: int) -> HTTPResponse:
        to_agent = body_json(request).get("agent_id")
        if not isinstance(to_agent, int) or to_agent not in {
                a.id for a in agents.list_agents(db) if a.role in agents.DESK_ROLES}:
            raise BadRequest("'agent_id' must be the id of a desk user who answers customers")
        held(ticket_id)
        view = await asyncio.to_thread(handoff.transfer, ticket_id,
                                       request.ctx.session.agent.id, to_agent, db)
        return response.json(ticket_json([view])[0])

    @app.post("/api/tickets/<ticket_id:int>/resolve")
    @requires_session()
    async def resolve(request: Request, ticket_id: int) -> HTTPResponse:
        held(ticket_id)
        agent = request.ctx.session.agent
        view = await asyncio.to_thread(handoff.resolve, ticket_id, agent.id, db)
        await tell_customer(view, contract.HANDOFF_RESOLVED, agent.display_name)
        return response.json(ticket_json([view])[0])

    @app.post("/api/tickets/dismiss")
    @requires_session()
    async def dismiss(request: Request) -> HTTPResponse:
        ids = body_json(request).get("ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
            raise BadRequest("'ids' must be a non-empty list of ticket ids")
        closed = await asyncio.to_thread(handoff.dismiss, ids[:500],
                                         request.ctx.session.agent.id, db)
        return response.json({"dismissed": closed})

    # -- live events (Server-Sent Events) ----------------------------------
    @app.get("/events")
    @requires_session()
    async def stream(request: Request) -> HTTPResponse:
        last_header = request.headers.get("last-event-id")
        last = int(last_header) if last_header and last_header.isdigit() else \
            await asyncio.to_thread(events.last_event_id, db)
        resp = await request.respond(content_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache",
                                              "X-Accel-Buffering": "no"})
        await resp.send("retry: 1000\n\n")
        idle = 0.0
        while request.transport is not None and not request.transport.is_closing():
            batch = await asyncio.to_thread(events.events_after, last, 200, db)
            for event in batch:
                data = json.dumps(event.as_json())
                await resp.send(f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n")
                last = event.id
            if batch:
                idle = 0.0
                continue
            await asyncio.sleep(EVENT_POLL_SECONDS)
            idle += EVENT_POLL_SECONDS
            if idle >= KEEPALIVE_SECONDS:
                await resp.send(": keep-alive\n\n")
                idle = 0.0
        await resp.eof()
        return resp

    add_library_routes(app, db, pages["library.html"])

    async def follow_up_loop() -> None:
        """Optional per deployment (PARLEY_FOLLOWUP_HOURS, 0 = off)."""
        after = timedelta(hours=follow_up_hours)
        text = responses.render(contract.FOLLOW_UP, url=db)["text"]
        while True:
            await asyncio.to_thread(handoff.send_follow_ups, after, text, None, db)
            await asyncio.sleep(FOLLOW_UP_CHECK_SECONDS)

    if follow_up_hours > 0:
        app.add_task(follow_up_loop())

    @app.on_response
    async def security_headers(_request: Request, resp: HTTPResponse) -> None:
        # No inline script anywhere: even if escaping failed, injected script won't run.
        resp.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data:; "
                                "frame-ancestors 'none'; form-action 'self'")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers.setdefault("Cache-Control", "no-store")

    return app
