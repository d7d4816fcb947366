"""How the bot asks the customer for details: the question, then a reminder never to
post card numbers or passwords (a writer-owned reply, `utter_privacy_reminder`).

Rasa's forms ask for a slot with `action_ask_<slot>` when the domain lists one (before
`utter_ask_<slot>`), so the order form asks here. The reminder comes once per time the
form is opened: asking again after a mistyped number repeats only the question.
"""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

PRIVACY_REMINDER = "utter_privacy_reminder"


def reminded_since_opened(events: list[dict[str, Any]], form: str) -> bool:
    """Whether the reminder was sent since `form` was last opened."""
    for event in reversed(events):
        if event.get("event") == "active_loop" and event.get("name") == form:
            return False
        if event.get("event") == "bot" \
                and (event.get("metadata") or {}).get("utter_action") == PRIVACY_REMINDER:
            return True
    return False


class ActionAskOrderNumber(Action):
    def name(self) -> str:
        return "action_ask_order_number"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        dispatcher.utter_message(response="utter_ask_order_number")
        if not reminded_since_opened(tracker.events, "order_form"):
            dispatcher.utter_message(response=PRIVACY_REMINDER)
        return []
