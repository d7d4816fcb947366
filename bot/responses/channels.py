"""What each channel can show: the limits the checks and the editor's preview use.

The numbers are the platforms' documented limits (Telegram Bot API, Messenger
and Instagram Send API, WhatsApp Cloud API interactive messages, X DMs). Which
channels a project writes for is listed under `channels:` in its `parley.yml`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from parley.bot.settings import Settings, load_settings


@dataclass(frozen=True)
class Channel:
    name: str
    label: str
    text_limit: int
    max_buttons: int  # shown as buttons; 0: the channel has none
    button_title_limit: int
    list_rows: int = 0  # more buttons than max_buttons become a list of this many rows
    list_title_limit: int = 0
    payload_limit: int = 0  # bytes; 0: no limit worth checking
    # Only the senders apply these (the checks do not know them yet). 0: no such limit.
    buttons_text_limit: int = 0  # text sent in the same message as the buttons
    button_id_limit: int = 0  # characters of a button's payload the platform keeps
    list_id_limit: int = 0  # the same for a list row

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


CHANNELS: dict[str, Channel] = {c.name: c for c in (
    Channel("webchat", "Web chat", 4096, 10, 40),
    Channel("telegram", "Telegram", 4096, 10, 64, payload_limit=64),
    # Messenger/Instagram buttons are quick replies: 13, titles 20, payloads 1000 characters.
    Channel("messenger", "Messenger", 2000, 13, 20, button_id_limit=1000),
    Channel("instagram", "Instagram", 1000, 13, 20, button_id_limit=1000),
    # WhatsApp interactive messages: body 1024 characters, reply-button ids 256, list-row
    # ids 200 (a plain text message takes 4096).
    Channel("whatsapp", "WhatsApp", 4096, 3, 20, list_rows=10, list_title_limit=24,
            buttons_text_limit=1024, button_id_limit=256, list_id_limit=200),
    Channel("sms", "SMS", 160, 0, 0),
    Channel("x", "X (DM)", 10000, 20, 36),
    Channel("x_public", "X (public reply)", 280, 0, 0),
)}
LANGUAGES = ("en", "pt")
DEFAULT_LANGUAGE = "en"


def configured(settings: Settings | None = None) -> list[Channel]:
    """The channels this project writes for (`channels:` in parley.yml)."""
    settings = settings or load_settings()
    unknown = [n for n in settings.channels if n not in CHANNELS]
    if unknown:
        raise ValueError(f"{settings.settings_file}: unknown channel(s) {', '.join(unknown)}; "
                         f"known: {', '.join(CHANNELS)}")
    return [CHANNELS[n] for n in settings.channels]


def of_conversation(conversation_id: str) -> str:
    """Conversation ids are namespaced by channel ('telegram:42')."""
    prefix = conversation_id.split(":", 1)[0] if ":" in conversation_id else ""
    return prefix if prefix in CHANNELS else ""


def language_code(code: object) -> str:
    """'pt-BR' → 'pt'; anything we have no replies in → the default language."""
    short = str(code or "").replace("_", "-").split("-")[0].lower()
    return short if short in LANGUAGES else DEFAULT_LANGUAGE
