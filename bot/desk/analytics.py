"""Desk routes for the manager's analytics (placeholder: being built)."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("desk_analytics")
