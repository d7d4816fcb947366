"""The desk app: configuration, error handling and headers shared by every route.

Each resource's routes are a blueprint in its own module (login, users, tickets,
live, library, pages); they read the settings and the pages loaded here through
`request.app.ctx`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from importlib import resources

from sanic import Sanic, response
from sanic.exceptions import NotFound, SanicException
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import alert_webhook, contract, handoff, metrics, responses, spikes, supervision
from parley.bot.desk import (
    alerts,
    analytics,
    approvals,
    contacts,
    library,
    live,
    login,
    pages,
    privacy,
    surveys,
    tickets,
    users,
)
from parley.bot.desk.errors import BadRequest
from parley.bot.responses.channels import LANGUAGES
from parley.bot.storage import off_loop

MAX_BODY = 64 * 1024
FOLLOW_UP_CHECK_SECONDS = 60.0
SPIKE_CHECK_SECONDS = 60.0
RETENTION_CHECK_SECONDS = 3600.0  # personal_data.retention_days: hourly
PAGES = ("login.html", "desk.html", "desk.js", "desk.css", "library.html", "library.js",
         "common.js", "alerts.js", "analytics.html", "analytics.js", "analytics.css",
         "chart.umd.js", "contacts.js", "contacts.css", "privacy.js")


def _page(name: str) -> str:
    return resources.files("parley.bot.desk").joinpath("static", name).read_text("utf-8")


def _proxies() -> int | None:
    raw = os.environ.get("PARLEY_DESK_PROXIES", "0")
    if not raw.isdigit():
        raise ValueError(f"PARLEY_DESK_PROXIES must be a number of proxies, got {raw!r}")
    return int(raw) or None


def create_app(database_url: str | None = None, secure_cookies: bool = False,
               follow_up_hours: float = 0.0, spike_rule: spikes.Rule | None = None,
               alert_target: alert_webhook.Target | None = None,
               spike_check_seconds: float = SPIKE_CHECK_SECONDS,
               retention_days: int | None = None,
               retention_check_seconds: float = RETENTION_CHECK_SECONDS) -> Sanic:
    app = Sanic("parley_desk")
    app.config.REQUEST_MAX_SIZE = MAX_BODY
    app.config.FORWARDED_SECRET = None
    # Behind a proxy (deploy/nginx.conf) the client's address is in X-Forwarded-For:
    # trust that many proxies, so login throttling per address sees clients, not nginx.
    app.config.PROXIES_COUNT = _proxies()
    app.ctx.database_url = database_url
    app.ctx.secure_cookies = secure_cookies
    app.ctx.pages = {name: _page(name) for name in PAGES}

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

    for module in (pages, login, users, tickets, approvals, live, library, analytics, alerts,
                   surveys, privacy, contacts):
        app.blueprint(module.bp)
    metrics.install(app, "desk")

    async def follow_up_tick() -> bool:
        """Optional per deployment (PARLEY_FOLLOWUP_HOURS, 0 = off). The text is
        rendered each round, so published edits apply, once per language: each
        conversation is checked on in its own."""
        texts = {language: (await off_loop(responses.render, contract.FOLLOW_UP, "", language,
                                           database_url))["text"] for language in LANGUAGES}
        await off_loop(handoff.send_follow_ups, timedelta(hours=follow_up_hours), texts, None,
                       database_url)
        return False

    if follow_up_hours > 0:
        app.add_task(supervision.supervise("follow-ups", follow_up_tick,
                                           idle=FOLLOW_UP_CHECK_SECONDS))

    async def spike_alerts(_app: Sanic) -> None:
        """Inbound spikes: the banner and the optional webhook (`parley.bot.spikes`).
        Started with the server (a function, so an app never run leaves no coroutine)."""
        await supervision.supervise("spike alerts", alerts.spike_check(
            spike_rule or spikes.Rule(), alert_target, database_url), idle=spike_check_seconds)

    app.add_task(spike_alerts)

    async def retention(_app: Sanic) -> None:
        """Old transcripts deleted (parley.yml `personal_data: retention_days`)."""
        await supervision.supervise("retention", privacy.retention_tick(
            retention_days or 0, retention_check_seconds, database_url),
            idle=min(privacy.RETENTION_IDLE, retention_check_seconds))

    if retention_days:
        app.add_task(retention)

    @app.get("/health")
    async def health(_request: Request) -> HTTPResponse:
        """Each background loop's last good tick (no session needed: no data in it)."""
        report = supervision.report(
            stale_after=max(FOLLOW_UP_CHECK_SECONDS, spike_check_seconds) * 3)
        listener = live.listener_health()
        report["loops"]["desk live listener"] = listener.as_json()
        if not listener.ok():
            report["status"] = "stale"
        return response.json(report, status=200 if report["status"] == "ok" else 503)

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
