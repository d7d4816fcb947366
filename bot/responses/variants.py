"""Choosing one variation of a reply for a conversation, and filling it in.

Language first (a variation's `metadata: {language: pt}`; none means the
default language), then Rasa's own rules for channel and conditions: conditional
variations that match beat plain ones, a channel's own variations beat generic
ones, and among the rest one is picked at random. The Rasa NLG, the gate and the
desk all choose through here, so a customer sees the same text whoever sends it.
"""

from __future__ import annotations

import random
from typing import Any

from parley.bot.responses import placeholders
from parley.bot.responses.channels import DEFAULT_LANGUAGE

FILLED_KEYS = ("text", "image", "custom", "buttons", "attachment", "quick_replies")
CONTROL_KEYS = ("channel", "condition", "metadata", "id")


def language_of(variation: dict[str, Any]) -> str:
    metadata = variation.get("metadata")
    language = metadata.get("language") if isinstance(metadata, dict) else None
    return str(language) if language else DEFAULT_LANGUAGE


def _matches(variation: dict[str, Any], slots: dict[str, Any]) -> bool:
    for constraint in variation.get("condition") or []:
        wanted, actual = constraint.get("value"), slots.get(constraint.get("name"))
        if isinstance(wanted, str) and isinstance(actual, str):
            if wanted.casefold() != actual.casefold():
                return False
        elif wanted != actual:
            return False
    return True


def suitable(variations: list[dict[str, Any]], channel: str, language: str,
             slots: dict[str, Any]) -> list[dict[str, Any]]:
    """Every variation Rasa would choose from, for this channel, language and slots."""
    in_language = [v for v in variations if language_of(v) == language]
    if not in_language:
        in_language = [v for v in variations if language_of(v) == DEFAULT_LANGUAGE]
    conditional = [v for v in in_language if v.get("condition") and _matches(v, slots)]
    plain = [v for v in in_language if not v.get("condition")]
    for group in ([v for v in conditional if v.get("channel") == channel],
                  [v for v in plain if v.get("channel") == channel],
                  [v for v in conditional if not v.get("channel")]):
        if group:
            return group
    return [v for v in plain if not v.get("channel")]


def render(variation: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """What goes to the channel: the message keys, placeholders filled."""
    return {k: placeholders.fill(v, values) for k, v in variation.items()
            if k in FILLED_KEYS and v not in (None, "", [])}


def choose(variations: list[dict[str, Any]], channel: str = "", language: str = "",
           slots: dict[str, Any] | None = None, values: dict[str, Any] | None = None,
           rng: random.Random | None = None) -> dict[str, Any] | None:
    slots = slots or {}
    options = suitable(variations, channel, language or DEFAULT_LANGUAGE, slots)
    if not options:
        return None
    picked = (rng or random).choice(options)
    return render(picked, {**slots, **(values or {})})
