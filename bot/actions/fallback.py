"""Two-step fallback: rephrase with topic buttons first, hand off on the second miss.

The topics offered and their button titles are replies (`utter_topic_<intent>`)
in the writer-owned library, per language like every other word the bot says;
an intent without one (greet, affirm, …) is never offered.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from parley.bot import contract
from parley.bot.actions.handoff import hand_off
from parley.bot.responses import render
from parley.bot.responses.channels import language_code
from parley.bot.responses.library import library
from parley.bot.storage import off_loop


def consecutive_fallbacks(events: Iterable[dict[str, Any]]) -> int:
    """How many of the latest user messages in a row fell below the threshold."""
    count = 0
    for event in reversed(list(events)):
        if event.get("event") != "user":
            continue
        intent = (event.get("parse_data") or {}).get("intent") or {}
        if intent.get("name") != contract.FALLBACK_INTENT:
            break
        count += 1
    return count


def top_topics(intent_ranking: Iterable[dict[str, Any]], offered: Collection[str],
               n: int = 2) -> list[str]:
    """The n most likely intents we can offer as buttons, best first."""
    ranked = sorted(intent_ranking, key=lambda i: i.get("confidence") or 0.0, reverse=True)
    return [i["name"] for i in ranked if i.get("name") in offered][:n]


def topic_buttons(intent_ranking: Iterable[dict[str, Any]], channel: str,
                  language: str) -> list[dict[str, str]]:
    """Buttons for the likeliest topics, titled from the reply library (blocking read)."""
    replies = library().current().replies
    offered = {name.removeprefix(contract.TOPIC_PREFIX) for name in replies
               if name.startswith(contract.TOPIC_PREFIX)}
    titled = ((name, render(f"{contract.TOPIC_PREFIX}{name}", channel, language).get("text"))
              for name in top_topics(intent_ranking, offered))
    return [{"title": title, "payload": f"/{name}"} for name, title in titled if title]


class ActionFallback(Action):
    def name(self) -> str:
        return contract.FALLBACK_ACTION

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        if consecutive_fallbacks(tracker.events) >= 2:
            dispatcher.utter_message(response=contract.FALLBACK_HANDOFF)
            return await hand_off(dispatcher, tracker, "low_confidence")
        metadata = tracker.latest_message.get("metadata") or {}
        buttons = await off_loop(
            topic_buttons, tracker.latest_message.get("intent_ranking") or [],
            tracker.get_latest_input_channel() or "", language_code(metadata.get("language")))
        dispatcher.utter_message(response=contract.ASK_REPHRASE, buttons=buttons)
        return []
