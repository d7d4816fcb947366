"""The {placeholders} replies may use, what fills them, and sample values for previews.

Slots from domain.yml are placeholders too. A placeholder nobody fills stays
visible ("{eta}") instead of failing the send, and the checks flag it first.
"""

from __future__ import annotations

import re
from typing import Any

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

# name: (who fills it, sample value for the editor's preview)
KNOWN: dict[str, tuple[str, str]] = {
    "first_name": ("the customer's first name from their platform profile ('there' if "
                   "unknown)", "Ana"),
    "support_hours": ("opening hours from support_hours.yml", "Mon–Fri 09:00–18:00 "
                      "(Europe/Lisbon time)"),
    "order_number": ("the order the customer asked about", "10234"),
    "order_id": ("same as order_number", "10234"),
    "carrier": ("the order's carrier", "DHL"),
    "eta": ("expected delivery, or the estimated wait in the queue", "about 4 minutes"),
    "tracking_url": ("the parcel's tracking link", "https://track.example/JD0142"),
    "queue_position": ("place in the handoff queue", "2"),
    "next_open": ("when the team is next online", "tomorrow at 09:00"),
    "support_email": ("from support_hours.yml channels", "help@northwind.example"),
    "support_phone": ("from support_hours.yml channels", "+351 210 000 000"),
    "support_webchat": ("from support_hours.yml channels", "northwind.example/chat"),
    "agent_name": ("the agent who joined or handed back", "Rita"),
    "rating": ("the score the customer gave", "5"),
}


def found(value: Any) -> set[str]:
    """Placeholder names used anywhere in a reply variation (text, buttons, image)."""
    if isinstance(value, str):
        return set(PLACEHOLDER.findall(value))
    if isinstance(value, dict):
        return set().union(*(found(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(found(v) for v in value)) if value else set()
    return set()


def fill(value: Any, values: dict[str, Any]) -> Any:
    """Replace {name} where a value is known; leave other braces alone (JSON payloads)."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(
            lambda m: str(values[m.group(1)]) if values.get(m.group(1)) is not None
            else m.group(0), value)
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    return value


def samples() -> dict[str, str]:
    return {name: sample for name, (_who, sample) in KNOWN.items()}
