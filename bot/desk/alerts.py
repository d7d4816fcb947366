"""Inbound spike alerts in the desk: the check loop, and what the banner reads.

Every desk process runs the check (`spike_check`, supervised, every minute);
`parley.bot.spikes` makes sure replicas raise each spike once, and the webhook
goes out from whichever process claims it, in a task of its own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import agents, alert_webhook, spikes
from parley.bot.desk.auth import requires_session
from parley.bot.desk.errors import BadRequest
from parley.bot.storage import off_loop

bp = Blueprint("desk_alerts")
HISTORY_LIMIT = 200
_LIMIT_TEXT = re.compile(r"[0-9]{1,3}")


def spike_check(rule: spikes.Rule, target: alert_webhook.Target | None,
                database_url: str | None) -> Callable[[], Awaitable[bool]]:
    """The loop's tick: the rule, then any webhook due handed to a task of its own."""
    sending: set[asyncio.Task[str]] = set()  # referenced until done (no lost tasks)
    if target is not None:
        alert_webhook.warn_if_unsigned(target)

    async def tick() -> bool:
        await off_loop(spikes.check, rule, webhook=target is not None,
                       database_url=database_url)
        if target is None:
            return False
        for spike in await off_loop(spikes.claim_webhooks, alert_webhook.LEASE,
                                    database_url=database_url):
            task = asyncio.create_task(alert_webhook.deliver(spike, target,
                                                             database_url=database_url))
            sending.add(task)
            task.add_done_callback(sending.discard)
        return False

    return tick


@bp.get("/api/alerts/active")
@requires_session(roles=agents.ROLES)
async def active(request: Request) -> HTTPResponse:
    """The spike under way, or null: every desk user sees the banner."""
    spike = await off_loop(spikes.active, request.app.ctx.database_url)
    return response.json({"active": spike.as_json(webhook=False) if spike else None})


@bp.get("/api/alerts")
@requires_session(roles=agents.ANALYTICS_ROLES)
async def history(request: Request) -> HTTPResponse:
    """Past and current spikes, newest first, with their webhook's delivery."""
    raw = request.args.get("limit", "50")
    if not _LIMIT_TEXT.fullmatch(raw) or not 1 <= int(raw) <= HISTORY_LIMIT:
        raise BadRequest(f"'limit' must be a whole number from 1 to {HISTORY_LIMIT}")
    rows = await off_loop(spikes.history, int(raw), request.app.ctx.database_url)
    return response.json({"alerts": [spike.as_json() for spike in rows]})
