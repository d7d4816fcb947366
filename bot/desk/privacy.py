"""Desk routes for a customer's data (admins only): export, erase, the audit trail;
and the retention job every desk process runs.

    GET  /api/privacy/export?conversation=telegram:1&conversation=whatsapp:2
    POST /api/privacy/erase  {"conversations": [...], "confirm": "ERASE"}
    GET  /api/privacy/audit?limit=50

The rules (what is exported, erased, kept) are `parley.bot.privacy`'s.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import audit, privacy, tracker_events
from parley.bot.desk.auth import requires_session
from parley.bot.desk.errors import BadRequest, body_json
from parley.bot.storage import off_loop

bp = Blueprint("desk_privacy")
ADMIN = ("admin",)
CONFIRM = "ERASE"
EXPORT_KEYS = ("conversation",)
AUDIT_LIMIT = 200
RETENTION_IDLE = 60.0  # the loop looks this often whether a run is due (health sees it alive)
RETENTION_RETRY = 60.0  # after a failed run
_LIMIT_TEXT = re.compile(r"[0-9]{1,3}")


def retention_tick(days: int, every: float, database_url: str | None
                   ) -> Callable[[], Awaitable[bool]]:
    """The loop's tick: a run every `every` seconds, back to back while a backlog
    fills whole batches. Each desk replica runs it; a row goes once whoever deletes it."""
    due = 0.0

    async def tick() -> bool:
        nonlocal due
        if time.monotonic() < due:
            return False
        try:
            run = await off_loop(privacy.apply_retention, days, database_url)
        except Exception:
            # Tried again within the minute (SQLite busy, the tracker's database
            # restarting), not in an hour; the supervisor logs it.
            due = time.monotonic() + min(every, RETENTION_RETRY)
            raise
        due = 0.0 if run.more else time.monotonic() + every
        return run.more

    return tick


def _ids(values: list[object]) -> list[str]:
    try:
        return privacy.parse_ids(values)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _actor(request: Request) -> str:
    return audit.agent_actor(request.ctx.session.agent.id)


@bp.get("/api/privacy/export")
@requires_session(roles=ADMIN)
async def export(request: Request) -> HTTPResponse:
    """Everything stored about the conversations named, as a JSON download."""
    args = request.get_args(keep_blank_values=True)
    unknown = sorted(set(args) - set(EXPORT_KEYS))
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0][:40]!r}; known: conversation")
    given: list[object] = [part for value in args.getlist("conversation", [])
                           for part in value.split(",")]
    ids = _ids(given)
    try:
        data = await off_loop(privacy.export, ids, _actor(request),
                              request.app.ctx.database_url)
    except tracker_events.TrackerStoreError as exc:
        raise BadRequest(f"Rasa's tracker store: {exc}", 503) from None
    if not data["conversations"]:
        raise BadRequest("nothing is stored for " + ", ".join(ids), 404)
    name = f"parley-export-{data['exported_at'][:19].replace(':', '')}.json"
    return response.json(data, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.post("/api/privacy/erase")
@requires_session(roles=ADMIN)
async def erase(request: Request) -> HTTPResponse:
    """Delete everything stored about the conversations named, Rasa's tracker included."""
    payload = body_json(request)
    conversations = payload.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise BadRequest("'conversations' must be a non-empty list of conversation ids")
    ids = _ids(conversations)
    if payload.get("confirm") != CONFIRM:
        raise BadRequest(f"'confirm' must be \"{CONFIRM}\": erasing cannot be undone")
    try:
        result = await off_loop(privacy.erase, ids, _actor(request),
                                request.app.ctx.database_url)
    except privacy.NotErased as exc:
        raise BadRequest(str(exc), 409) from None
    except tracker_events.TrackerStoreError as exc:
        raise BadRequest(f"Rasa's tracker store: {exc}; nothing was erased", 503) from None
    except privacy.TrackerNotErased as exc:
        raise BadRequest(str(exc), 503) from None
    return response.json(result)


@bp.get("/api/privacy/audit")
@requires_session(roles=ADMIN)
async def audit_trail(request: Request) -> HTTPResponse:
    """The newest audit entries first: exports, erasures and retention runs."""
    args = request.get_args(keep_blank_values=True)
    unknown = sorted(set(args) - {"limit"})
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0][:40]!r}; known: limit")
    raw = request.args.get("limit", "50")
    if not _LIMIT_TEXT.fullmatch(raw) or not 1 <= int(raw) <= AUDIT_LIMIT:
        raise BadRequest(f"'limit' must be a whole number from 1 to {AUDIT_LIMIT}")
    entries = await off_loop(audit.recent, int(raw), request.app.ctx.database_url)
    return response.json({"entries": [entry.as_json() for entry in entries]})
