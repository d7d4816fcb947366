"""Desk routes for the manager's analytics: the page, and each chart's data as JSON or CSV.

Managers and admins only (`agents.ANALYTICS_ROLES`). The filters are query
parameters (`from`, `to`: UTC dates; `channel`, `language`: repeated or
comma-separated); anything else, or a bad value, is a 400 that says why. The
definitions of the numbers live with the queries, in `parley.bot.analytics`.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from sanic import Blueprint, response
from sanic.exceptions import NotFound
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot import agents, analytics
from parley.bot.desk.auth import requires_session
from parley.bot.desk.errors import BadRequest
from parley.bot.responses.channels import LANGUAGES, configured
from parley.bot.storage import off_loop

FORMATS = ("json", "csv")
# Spreadsheets run a cell that starts with one of these as a formula (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

bp = Blueprint("desk_analytics")


def _filters(request: Request, allowed: tuple[str, ...]) -> analytics.Filters:
    args = request.get_args(keep_blank_values=True)
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0][:40]!r}; known: {', '.join(allowed)}")
    given = {k: [v for v in values if v.strip()] for k, values in args.items()}
    try:
        return analytics.Filters.parse(given)
    except analytics.FilterError as exc:
        raise BadRequest(str(exc)) from None


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def as_csv(data: dict[str, Any]) -> str:
    """The chart's table: one header row of labels, then its rows (and its total row,
    if it has one), raw values (seconds, shares as 0-1), empty where there is no value."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    columns = [c for c in data["columns"] if c["kind"] != "link"]
    writer.writerow([c["label"] for c in columns])
    for row in data["rows"] + ([data["total"]] if data.get("total") else []):
        writer.writerow([_cell(row.get(c["key"])) for c in columns])
    return out.getvalue()


@bp.get("/analytics")
@requires_session(roles=agents.ANALYTICS_ROLES)
async def page(request: Request) -> HTTPResponse:
    return response.html(request.app.ctx.pages["analytics.html"])


@bp.get("/api/analytics")
@requires_session(roles=agents.ANALYTICS_ROLES)
async def index(request: Request) -> HTTPResponse:
    """The charts and the filters' choices, with the default range."""
    filters = _filters(request, analytics.Filters.KEYS)
    return response.json({
        "charts": [{"name": name, "title": chart.title, "about": analytics.about(chart.about)}
                   for name, chart in analytics.CHARTS.items()],
        "channels": [{"name": c.name, "label": c.label} for c in configured()],
        "languages": list(LANGUAGES),
        "filters": filters.as_json(),
        "max_days": analytics.MAX_DAYS,
    })


@bp.get("/api/analytics/<chart:str>")
@requires_session(roles=agents.ANALYTICS_ROLES)
async def chart(request: Request, chart: str) -> HTTPResponse:
    if chart not in analytics.CHARTS:
        raise NotFound("no such chart")
    filters = _filters(request, (*analytics.Filters.KEYS, "format"))
    kind = request.args.get("format", "json")
    if kind not in FORMATS:
        raise BadRequest(f"'format' must be one of {', '.join(FORMATS)}")
    data = await off_loop(analytics.run, chart, filters, request.app.ctx.database_url)
    if kind == "json":
        return response.json(data)
    name = f"parley-{chart}-{filters.start.isoformat()}-{filters.end.isoformat()}.csv"
    return response.text(as_csv(data), content_type="text/csv; charset=utf-8",
                         headers={"Content-Disposition": f'attachment; filename="{name}"'})
