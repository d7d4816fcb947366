"""The {placeholders} replies may use, what fills them, and sample values for previews.

Slots from domain.yml are placeholders too. A placeholder nobody fills stays
visible ("{eta}") instead of failing the send, and the checks flag it first.
"""

from __future__ import annotations

import re
from typing import Any

from parley.bot.settings import Settings, load_settings

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

# The framework's own: name -> (who fills it, sample value for the editor's preview).
# A project adds its own under `placeholders:` in parley.yml; slots count too.
FRAMEWORK: dict[str, tuple[str, str]] = {
    "first_name": ("the customer's first name from their platform profile ('there' if "
                   "unknown)", "Ana"),
    "support_hours": ("opening hours from parley.yml", "Mon–Fri 09:00–18:00 "
                      "(Europe/Lisbon time)"),
    "eta": ("the estimated wait in the queue", "about 4 minutes"),
    "queue_position": ("place in the handoff queue", "2"),
    "next_open": ("when the team is next online", "tomorrow at 09:00"),
    "support_email": ("`contact: email` in parley.yml", "help@example.com"),
    "support_phone": ("`contact: phone` in parley.yml", "+1 555 0100"),
    "support_webchat": ("`contact: webchat` in parley.yml", "example.com/chat"),
    "agent_name": ("the agent who joined or handed back", "Rita"),
}


def known(settings: Settings | None = None) -> dict[str, tuple[str, str]]:
    """Every placeholder this project's replies may use, with a sample each."""
    settings = settings or load_settings()
    contact = {f"support_{k}": v for k, v in settings.contact.items()
               if f"support_{k}" in FRAMEWORK}
    out = {name: (about, contact.get(name, sample)) for name, (about, sample)
           in FRAMEWORK.items()}
    out.update({name: (p.about, p.sample) for name, p in settings.placeholders.items()})
    return out


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


def samples(settings: Settings | None = None) -> dict[str, str]:
    return {name: sample for name, (_who, sample) in known(settings).items()}
