"""The canned-reply library content writers own (see DESIGN.md, invariant 4).

`data/responses.yml` is the baseline in git; published revisions in the
database sit on top of it (`revisions`), merged and kept fresh per process
(`library`), chosen per channel and language (`variants`), checked (`checks`),
served to Rasa in-process (`nlg`), and edited in the desk (`bot/desk/library.py`).

Code outside Rasa (the gate's queue notices, the desk's "agent joined") sends
replies through `render`, so every word a customer reads comes from here.
"""

from __future__ import annotations

from typing import Any

from parley.bot import support_hours


def _hours(language: str) -> dict[str, str]:
    hours = support_hours.current()
    return {"support_hours": hours.describe_week(language),
            "support_email": hours.channels.get("email", ""),
            "support_phone": hours.channels.get("phone", ""),
            "support_webchat": hours.channels.get("webchat", "")}


# Channels whose display names we make up ("Web visitor 3f2a"): no first name.
ANONYMOUS_CHANNELS = {"webchat", "rest", ""}


def conversation_values(display_name: str | None = None, channel: str = "",
                        language: str = "en") -> dict[str, str]:
    """Placeholders any reply may use, whoever sends it, in the reply's language."""
    first = "" if channel in ANONYMOUS_CHANNELS else (display_name or "").strip().split(" ")[0]
    return {"first_name": first or ("cliente" if language == "pt" else "there"),
            **_hours(language)}


def render(name: str, channel: str = "", language: str = "", database_url: str | None = None,
           display_name: str | None = None, **values: Any) -> dict[str, Any]:
    """Reply `name` for this channel and language, placeholders filled.

    Unknown placeholders stay visible ("{eta}") rather than failing a send.
    """
    from parley.bot.responses import variants
    from parley.bot.responses.library import library

    variations = library(database_url=database_url).current().replies.get(name)
    if not variations:
        raise KeyError(f"no reply named {name!r} in the reply library")
    chosen = variants.choose(variations, channel, language, {},
                             {**conversation_values(display_name, channel,
                                                    language or variants.DEFAULT_LANGUAGE),
                              **values})
    return chosen or {"text": ""}
