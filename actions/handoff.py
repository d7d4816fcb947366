"""Handing the conversation to a person."""

from __future__ import annotations

import re

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

AGENT_KEYWORD = re.compile(r"\bagent\b", re.IGNORECASE)


def handoff_reason(text: str | None, intent: str | None) -> str:
    """Why the customer is being handed off, as the ticket will record it."""
    if text and AGENT_KEYWORD.search(text):
        return "keyword"
    if intent == "affirm":  # said yes to the offer of a person after a complaint
        return "complaint"
    return "intent"


class ActionHandoff(Action):
    def name(self) -> str:
        return "action_handoff"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        latest = tracker.latest_message
        reason = handoff_reason(latest.get("text"), (latest.get("intent") or {}).get("name"))
        dispatcher.utter_message(response="utter_handoff")
        return [SlotSet("handoff_reason", reason)]
