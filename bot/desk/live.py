"""Live events for the desk page as Server-Sent Events, polled from the events table."""

from __future__ import annotations

import asyncio
import json

from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import events
from parley.bot.desk.auth import requires_session

EVENT_POLL_SECONDS = 0.1
KEEPALIVE_SECONDS = 15.0

bp = Blueprint("desk_live")


@bp.get("/events")
@requires_session()
async def stream(request: Request) -> HTTPResponse:
    """Resumes after `Last-Event-ID` when the browser reconnects, so nothing is missed."""
    database_url = request.app.ctx.database_url
    last_header = request.headers.get("last-event-id")
    last = int(last_header) if last_header and last_header.isdigit() else \
        await asyncio.to_thread(events.last_event_id, database_url)
    resp = await request.respond(content_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})
    await resp.send("retry: 1000\n\n")
    idle = 0.0
    while request.transport is not None and not request.transport.is_closing():
        batch = await asyncio.to_thread(events.events_after, last, 200, database_url)
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
