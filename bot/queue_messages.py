"""What the customer is told about the queue, from the writer-owned replies.

One place for the values behind {queue_position}, {eta}, {next_open} and the
other channels, so the handoff action and the gate say the same thing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from parley.bot import contract, support_hours
from parley.bot.handoff import QueuePlace
from parley.bot.storage import utcnow


def format_wait(wait: timedelta, language: str = "en") -> str:
    minutes = round(wait.total_seconds() / 60)
    pt = language == "pt"
    if minutes < 1:
        return "menos de um minuto" if pt else "under a minute"
    if minutes < 60:
        if pt:
            return f"cerca de {minutes} minuto{'s' if minutes != 1 else ''}"
        return f"about {minutes} minute{'s' if minutes != 1 else ''}"
    hours, rest = divmod(minutes, 60)
    return f"{'cerca de' if pt else 'about'} {hours} h {rest:02d} min"


def queue_values(place: QueuePlace, now: datetime | None = None,
                 language: str = "en") -> tuple[bool, dict[str, Any]]:
    """(open now?, placeholder values) for the queue replies, worded in the
    conversation's language."""
    now = now or utcnow()
    hours = support_hours.current()
    values: dict[str, Any] = {
        "queue_position": place.position,
        "eta": format_wait(place.eta, language),
        "next_open": hours.describe_opening(now, language),
        "support_email": hours.channels.get("email", ""),
        "support_phone": hours.channels.get("phone", ""),
        "support_webchat": hours.channels.get("webchat", ""),
    }
    return hours.is_open(now), values


def handoff_reply(place: QueuePlace, now: datetime | None = None,
                  language: str = "en") -> tuple[str, dict[str, Any]]:
    is_open, values = queue_values(place, now, language)
    return (contract.HANDOFF_QUEUED if is_open else contract.HANDOFF_AFTER_HOURS), values


def update_reply(place: QueuePlace, now: datetime | None = None,
                 language: str = "en") -> tuple[str, dict[str, Any]]:
    is_open, values = queue_values(place, now, language)
    return (contract.QUEUE_UPDATE if is_open else contract.QUEUE_UPDATE_AFTER_HOURS), values
