"""Desk routes for satisfaction survey answers (placeholder: being built)."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("desk_surveys")
