"""Desk routes for inbound spike alerts (placeholder: being built)."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("desk_alerts")
