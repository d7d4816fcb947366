"""Desk routes for a customer's data: export and erase (placeholder: being built)."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("desk_privacy")
