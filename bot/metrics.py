"""Prometheus metrics for every process (placeholder: being built)."""

from __future__ import annotations

from typing import Any


def install(app: Any, process: str) -> None:
    """Serve `/metrics` on this Sanic app (placeholder)."""
