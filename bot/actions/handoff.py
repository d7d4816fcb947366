"""Handing the conversation to a person: queue it, say where it stands."""

from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from parley.bot import agents, contract, handoff
from parley.bot.queue_messages import handoff_reply
from parley.bot.responses.channels import language_code
from parley.bot.storage import off_loop

AGENT_KEYWORD = re.compile(r"(?<!\w)agent(?!\w)", re.IGNORECASE)
ANGRY_WORDS = re.compile(
    r"\b(furious|angry|unacceptable|ridiculous|worst|scam|disgusting|joke|terrible|"
    r"awful|useless|fed up|sick of)\b", re.IGNORECASE)
ANGRY_EMOJI = set("😡🤬😠👿💢")
CONTEXT_INTENTS = 5


def handoff_reason(text: str | None, intent: str | None) -> str:
    """Why the customer is being handed off, as the ticket will record it."""
    if text and AGENT_KEYWORD.search(text):
        return "keyword"
    if intent == contract.ACCEPT_INTENT:  # said yes to the offer of a person
        return "complaint"
    return "intent"


def is_angry(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    shouting = len(letters) >= 8 and sum(c.isupper() for c in letters) / len(letters) > 0.7
    return (shouting or "!!!" in text or bool(ANGRY_WORDS.search(text))
            or any(c in ANGRY_EMOJI for c in text))


def user_turns(tracker: Tracker) -> list[dict[str, Any]]:
    return [e for e in tracker.events if e.get("event") == "user"]


def priority_for(tracker: Tracker) -> int:
    """High when the customer complained twice or angrily in this conversation."""
    complaints = [e for e in user_turns(tracker)
                  if ((e.get("parse_data") or {}).get("intent") or {}).get("name")
                  == contract.COMPLAINT_INTENT]
    if len(complaints) >= 2 or any(is_angry(e.get("text") or "") for e in complaints):
        return handoff.PRIORITY_HIGH
    return handoff.PRIORITY_NORMAL


def context_packet(tracker: Tracker, reason: str) -> dict[str, Any]:
    """What the agent sees first: recent intents with confidences, slots, channel."""
    intents = []
    for event in user_turns(tracker)[-CONTEXT_INTENTS:]:
        parsed = (event.get("parse_data") or {}).get("intent") or {}
        intents.append({"text": event.get("text") or "", "intent": parsed.get("name"),
                        "confidence": round(float(parsed.get("confidence") or 0.0), 3)})
    slots = {k: v for k, v in tracker.current_slot_values().items()
             if v is not None and k not in {"requested_slot", contract.REASON_SLOT}}
    return {"reason": reason, "channel": tracker.get_latest_input_channel() or
            tracker.sender_id.split(":", 1)[0], "intents": intents, "slots": slots}


def display_name(tracker: Tracker) -> str:
    metadata = tracker.latest_message.get("metadata") or {}
    name = metadata.get("display_name")
    return str(name) if name else ""


def _escalate(tracker: Tracker, reason: str) -> handoff.QueuePlace:
    return handoff.escalate(
        tracker.sender_id, reason, context=context_packet(tracker, reason),
        priority=priority_for(tracker), display_name=display_name(tracker),
        agents_online=agents.agents_online(),
    )


async def hand_off(dispatcher: CollectingDispatcher, tracker: Tracker,
                   reason: str) -> list[EventType]:
    """Queue the conversation and tell the customer their place (or the hours)."""
    place = await off_loop(_escalate, tracker, reason)  # off the event loop
    metadata = tracker.latest_message.get("metadata") or {}
    response, values = handoff_reply(place, language=language_code(
        metadata.get("language") or tracker.get_slot("language")))
    dispatcher.utter_message(response=response, **values)
    return [SlotSet(contract.REASON_SLOT, reason)]


class ActionHandoff(Action):
    def name(self) -> str:
        return contract.HANDOFF_ACTION

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        latest = tracker.latest_message
        reason = handoff_reason(latest.get("text"), (latest.get("intent") or {}).get("name"))
        return await hand_off(dispatcher, tracker, reason)
