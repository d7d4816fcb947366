"""Reads the writer-owned replies in data/responses.yml for code outside Rasa.

The gate and the desk send a few replies themselves (queue updates, "you're back
with the bot", the rating question); they take the text from the same file the
bot uses, so writers edit one place.
"""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from bot.settings import PROJECT_ROOT

DEFAULT_FILE = PROJECT_ROOT / "data" / "responses.yml"


class _Blank(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@lru_cache(maxsize=4)
def _load(path: Path, mtime: float) -> dict[str, list[dict[str, Any]]]:
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("responses") or {}


def library(path: Path = DEFAULT_FILE) -> dict[str, list[dict[str, Any]]]:
    return _load(path, path.stat().st_mtime)


def render(name: str, path: Path = DEFAULT_FILE, **values: Any) -> dict[str, Any]:
    """The first variant of reply `name` with {placeholders} filled from values.

    Unknown placeholders stay visible ("{eta}") rather than failing a send.
    """
    variants = library(path).get(name)
    if not variants:
        raise KeyError(f"no reply named {name!r} in {path}")
    variant = variants[0]
    fill = _Blank({k: str(v) for k, v in values.items()})
    formatter = string.Formatter()
    out: dict[str, Any] = {"text": formatter.vformat(variant.get("text", ""), (), fill)}
    if variant.get("buttons"):
        out["buttons"] = [
            {"title": formatter.vformat(b["title"], (), fill), "payload": b["payload"]}
            for b in variant["buttons"]
        ]
    if variant.get("image"):
        out["image"] = variant["image"]
    return out
