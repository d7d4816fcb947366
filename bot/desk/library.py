"""Desk routes for the reply library: the writers' editor, review, and agents' canned replies.

Roles: writers and admins edit and submit; only an admin approves or sends back,
and never their own draft; only an admin rolls back. Agents only search the
published replies (`/shortcut` in the reply box). The same checks as
`python -m parley.bot.cli replies check` run on every save.
"""

from __future__ import annotations

import re
from typing import Any

from sanic import Blueprint, response
from sanic.exceptions import NotFound
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import agents, conversations, handoff
from parley.bot.desk.auth import requires_session
from parley.bot.desk.errors import BadRequest, body_json, row_id, row_id_text, text_field
from parley.bot.responses import checks, conversation_values, placeholders, revisions, variants
from parley.bot.responses.channels import CHANNELS, LANGUAGES, configured, of_conversation
from parley.bot.responses.library import Library, library
from parley.bot.storage import off_loop

NAME = re.compile(r"^utter_[a-z0-9_]{1,100}$")
WRITERS = ("writer", "admin")
ADMINS = ("admin",)
MAX_VARIATIONS = 50

bp = Blueprint("desk_library")


def _name(value: str) -> str:
    if not NAME.fullmatch(value):  # not .match: its $ also matches before a final newline
        raise BadRequest("reply names look like utter_order_shipped (lower case, digits, _)")
    return value


def _body(payload: dict[str, Any]) -> list[dict[str, Any]]:
    body = payload.get("body")
    if not isinstance(body, list) or not body or len(body) > MAX_VARIATIONS:
        raise BadRequest(f"'body' must be a list of 1 to {MAX_VARIATIONS} variations")
    if not all(isinstance(v, dict) for v in body):
        raise BadRequest("each variation must be an object such as {\"text\": \"…\"}")
    return _readable(body)


def _readable(body: Any) -> Any:
    """The keys that choosing and checking a variation read must have their types:
    anything else in a variation is for the checks to report, not to trip over."""
    if not isinstance(body, list):
        return body
    for i, v in enumerate(body, 1):
        if not isinstance(v, dict):
            continue
        if v.get("channel") is not None and not isinstance(v["channel"], str):
            raise BadRequest(f"variation {i}: 'channel' must be a channel's name")
        buttons = v.get("buttons")
        if buttons is not None and not (isinstance(buttons, list) and all(
                isinstance(b, dict) for b in buttons)):
            raise BadRequest(f"variation {i}: 'buttons' must be a list of objects such as "
                             "{\"title\": \"Yes\", \"payload\": \"/affirm\"}")
        condition = v.get("condition")
        if condition is not None and not (isinstance(condition, list) and all(
                isinstance(c, dict) and isinstance(c.get("name"), str) for c in condition)):
            raise BadRequest(f"variation {i}: 'condition' must be a list of objects such as "
                             "{\"type\": \"slot\", \"name\": \"…\", \"value\": \"…\"}")
    return body


def previews(body: Any, samples: dict[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(body, list):
        return []
    good = [v for v in body if isinstance(v, dict)]
    values = placeholders.samples() | {k: str(v) for k, v in samples.items() if v}
    out = []
    for language in sorted({variants.language_of(v) for v in good}):
        for channel in configured():
            options = variants.suitable(good, channel.name, language, {})
            if not options:
                continue
            shown = variants.render(options[0], values)
            text = str(shown.get("text") or "")
            out.append({"channel": channel.name, "label": channel.label, "language": language,
                        "text": text, "length": len(text), "limit": channel.text_limit,
                        "buttons": [str(b.get("title")) for b in shown.get("buttons") or []
                                    if isinstance(b, dict)],
                        "max_buttons": channel.max_buttons, "image": shown.get("image"),
                        "variants": len(options)})
    return out


def live(database_url: str | None) -> Library:
    return library(database_url=database_url)


def problems(name: str, body: Any) -> list[dict[str, Any]]:
    found = checks.check_reply(name, body, configured(), checks.slot_names())
    return [p.as_json() | {"text": str(p)} for p in found]


def refused(exc: revisions.ReviewError) -> HTTPResponse:
    return response.json({"error": str(exc)}, status=exc.status)


async def step(call: Any, *args: Any, database_url: str | None) -> HTTPResponse:
    try:
        view = await off_loop(call, *args, database_url)
    except revisions.ReviewError as exc:
        return refused(exc)
    if view.state == "published":  # this process shows it at once; others within 0.5 s
        await off_loop(live(database_url).refresh, True)
    return response.json(view.as_json())


def blocking(body: Any, name: str) -> HTTPResponse | None:
    errors = [p for p in problems(name, body) if p["severity"] == "error"]
    if errors:
        return response.json({"error": "fix these first: " + "; ".join(
            p["text"] for p in errors), "problems": errors}, status=409)
    return None


async def held(revision_id: int, database_url: str | None) -> revisions.RevisionView:
    """The revision of a path's id; an id no row can have (0, -1, 10**30) is not looked up."""
    view = None if row_id(revision_id) is None else \
        await off_loop(revisions.get, revision_id, database_url)
    if view is None:
        raise NotFound("no such revision")
    return view


async def checked_step(call: Any, request: Request, revision_id: int) -> HTTPResponse:
    """Submitting and approving both refuse a reply that fails the checks."""
    database_url = request.app.ctx.database_url
    view = await held(revision_id, database_url)
    return blocking(view.body, view.name) or await step(
        call, revision_id, request.ctx.session.agent, database_url=database_url)


@bp.get("/library")
@requires_session(roles=WRITERS)
async def library_page(request: Request) -> HTTPResponse:
    return response.html(request.app.ctx.pages["library.html"])


@bp.get("/api/library/meta")
@requires_session(roles=WRITERS)
async def meta(_request: Request) -> HTTPResponse:
    return response.json({
        "channels": [c.as_json() for c in configured()],
        "all_channels": [c.as_json() for c in CHANNELS.values()],
        "languages": list(LANGUAGES),
        "placeholders": {k: {"who": who, "sample": sample}
                         for k, (who, sample) in placeholders.known().items()},
    })


@bp.get("/api/library/replies")
@requires_session(roles=WRITERS)
async def replies(request: Request) -> HTTPResponse:
    database_url = request.app.ctx.database_url
    query = (request.args.get("q") or "").strip().lower()
    snapshot = await off_loop(live(database_url).current)
    waiting = {r.name for r in await off_loop(revisions.in_review, database_url)}
    out = []
    for name, body in snapshot.replies.items():
        text = next((v.get("text") for v in body if isinstance(v, dict)), "") or ""
        if query and query not in name.lower() and query not in text.lower():
            continue
        out.append({"name": name, "text": text, "edited": name in snapshot.overridden,
                    "in_review": name in waiting})
    return response.json(out)


@bp.get("/api/library/replies/<name:str>")
@requires_session(roles=WRITERS)
async def reply_detail(request: Request, name: str) -> HTTPResponse:
    database_url = request.app.ctx.database_url
    snapshot = await off_loop(live(database_url).current)
    history = await off_loop(revisions.history, _name(name), database_url)
    if name not in snapshot.replies and not history:
        raise NotFound("no such reply")
    me = request.ctx.session.agent.id
    mine = next((r for r in history if r.author_id == me and r.state in
                 revisions.EDITABLE), None)
    names = {a.id: a.display_name
             for a in await off_loop(agents.list_agents, database_url)}
    return response.json({
        "name": name, "live": snapshot.replies.get(name),
        "baseline": snapshot.baseline.get(name),
        "draft": mine.as_json() if mine else None,
        "revisions": [r.as_json() | {"author": names.get(r.author_id),
                                     "reviewer": names.get(r.reviewer_id or -1)}
                      for r in history],
        "problems": problems(name, mine.body if mine else snapshot.replies.get(name)),
    })


@bp.post("/api/library/check")
@requires_session(roles=WRITERS)
async def check(request: Request) -> HTTPResponse:
    """Problems and a preview per channel and language, as the customer would see it."""
    payload = body_json(request)
    name, body = _name(str(payload.get("name") or "")), _readable(payload.get("body"))
    samples = payload.get("samples") if isinstance(payload.get("samples"), dict) else {}
    return response.json({"problems": problems(name, body),
                          "previews": previews(body, samples)})


@bp.post("/api/library/replies/<name:str>/draft")
@requires_session(roles=WRITERS)
async def save(request: Request, name: str) -> HTTPResponse:
    body = _body(body_json(request))
    try:
        view = await off_loop(revisions.save_draft, _name(name), body,
                                       request.ctx.session.agent, request.app.ctx.database_url)
    except revisions.ReviewError as exc:
        return refused(exc)
    return response.json(view.as_json() | {"problems": problems(name, body)})


@bp.post("/api/library/revisions/<revision_id:int>/submit")
@requires_session(roles=WRITERS)
async def submit(request: Request, revision_id: int) -> HTTPResponse:
    return await checked_step(revisions.submit, request, revision_id)


@bp.post("/api/library/revisions/<revision_id:int>/approve")
@requires_session(roles=ADMINS)
async def approve(request: Request, revision_id: int) -> HTTPResponse:
    return await checked_step(revisions.approve, request, revision_id)


@bp.post("/api/library/revisions/<revision_id:int>/send-back")
@requires_session(roles=ADMINS)
async def send_back(request: Request, revision_id: int) -> HTTPResponse:
    database_url = request.app.ctx.database_url
    comment = text_field(body_json(request), "comment", 1000)
    await held(revision_id, database_url)
    return await step(revisions.send_back, revision_id, request.ctx.session.agent, comment,
                      database_url=database_url)


@bp.post("/api/library/replies/<name:str>/rollback")
@requires_session(roles=ADMINS)
async def rollback(request: Request, name: str) -> HTTPResponse:
    target = row_id(body_json(request).get("revision_id"))
    if target is None:
        raise BadRequest("'revision_id' must be the id of a published revision")
    return await step(revisions.rollback, _name(name), target, request.ctx.session.agent,
                      database_url=request.app.ctx.database_url)


@bp.get("/api/library/revisions/<revision_id:int>/diff")
@requires_session(roles=WRITERS)
async def diff(request: Request, revision_id: int) -> HTTPResponse:
    """Against another revision (?against=ID) or, by default, what is live now."""
    database_url = request.app.ctx.database_url
    view = await held(revision_id, database_url)
    against = request.args.get("against")
    if against and (against_id := row_id_text(against)) is not None:
        before = (await held(against_id, database_url)).body
    elif against:
        raise BadRequest("'against' must be a revision id")
    else:
        before = (await off_loop(live(database_url).current)).replies.get(view.name)
    return response.json({"diff": revisions.diff(before, view.body, view.name)})


@bp.get("/api/library/review")
@requires_session(roles=WRITERS)
async def review(request: Request) -> HTTPResponse:
    database_url = request.app.ctx.database_url
    names = {a.id: a.display_name
             for a in await off_loop(agents.list_agents, database_url)}
    pending = await off_loop(revisions.in_review, database_url)
    return response.json([r.as_json() | {"author": names.get(r.author_id)}
                          for r in pending])


@bp.get("/api/canned")
@requires_session()
async def canned(request: Request) -> HTTPResponse:
    """Published replies for an agent's `/shortcut`, drawn for the ticket's channel."""
    database_url = request.app.ctx.database_url
    query = (request.args.get("q") or "").strip().lower().lstrip("/")
    ticket_id = row_id_text(request.args.get("ticket"))
    channel, name_of = "", None
    if ticket_id is not None:
        view = await off_loop(handoff.get_ticket, ticket_id, database_url)
        if view is not None:
            channel = of_conversation(view.conversation_id)
            names = await off_loop(conversations.display_names,
                                            [view.conversation_id], database_url)
            name_of = names.get(view.conversation_id)
    snapshot = await off_loop(live(database_url).current)
    values = conversation_values(name_of, channel) | {"agent_name":
                                                      request.ctx.session.agent.display_name}
    out = []
    for name, body in snapshot.replies.items():
        shortcut = name.removeprefix("utter_")
        rendered = variants.choose(body, channel, "", {}, values) or {}
        text = rendered.get("text") or ""
        if query and query not in shortcut and query not in text.lower():
            continue
        out.append({"name": name, "shortcut": "/" + shortcut, "text": text})
    out.sort(key=lambda r: (not r["shortcut"].startswith("/" + query), r["shortcut"]))
    return response.json(out[:20])
