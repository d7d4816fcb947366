"""Two-step fallback: rephrase with topic buttons first, hand off on the second miss."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.handoff import hand_off

FALLBACK_INTENT = "nlu_fallback"

# Button titles for the topics we can suggest. Intents absent here (greet, affirm,
# …) are never offered: "Did you mean: hello?" helps nobody.
TOPIC_TITLES: dict[str, str] = {
    "shipping_times": "Shipping times",
    "return_policy": "Returns",
    "refund_status": "My refund",
    "cancel_order": "Cancel an order",
    "change_address": "Change address",
    "payment_methods": "Payment methods",
    "support_hours": "Support hours",
    "contact_options": "Contact us",
    "order_status": "Where's my order?",
    "complaint": "Make a complaint",
    "human_handoff": "Talk to a person",
}


def consecutive_fallbacks(events: Iterable[dict[str, Any]]) -> int:
    """How many of the latest user messages in a row fell below the threshold."""
    count = 0
    for event in reversed(list(events)):
        if event.get("event") != "user":
            continue
        intent = (event.get("parse_data") or {}).get("intent") or {}
        if intent.get("name") != FALLBACK_INTENT:
            break
        count += 1
    return count


def top_topics(intent_ranking: Iterable[dict[str, Any]], n: int = 2) -> list[str]:
    """The n most likely intents we can offer as buttons, best first."""
    ranked = sorted(intent_ranking, key=lambda i: i.get("confidence") or 0.0, reverse=True)
    return [i["name"] for i in ranked if i.get("name") in TOPIC_TITLES][:n]


class ActionFallback(Action):
    def name(self) -> str:
        return "action_fallback"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        if consecutive_fallbacks(tracker.events) >= 2:
            dispatcher.utter_message(response="utter_fallback_handoff")
            return hand_off(dispatcher, tracker, "low_confidence")
        ranking = tracker.latest_message.get("intent_ranking") or []
        buttons = [
            {"title": TOPIC_TITLES[name], "payload": f"/{name}"}
            for name in top_topics(ranking)
        ]
        dispatcher.utter_message(response="utter_ask_rephrase", buttons=buttons)
        return []
