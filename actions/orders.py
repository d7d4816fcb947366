"""Order status: the form that collects the number and the lookup itself."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.store import find_order, normalize_order_number

_DIGITS = re.compile(r"#?\d+")


class ValidateOrderForm(FormValidationAction):
    def name(self) -> str:
        return "validate_order_form"

    async def extract_order_number(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        """Take any number typed while we are asking for one, so a wrong length
        gets a helpful answer instead of falling through to the NLU."""
        if tracker.get_slot("requested_slot") != "order_number":
            return {}
        match = _DIGITS.search(tracker.latest_message.get("text") or "")
        return {"order_number": match.group()} if match else {}

    def validate_order_number(
        self, value: Any, dispatcher: CollectingDispatcher,
        tracker: Tracker, domain: DomainDict,
    ) -> dict[str, Any]:
        number = normalize_order_number(value)
        if number is None:
            dispatcher.utter_message(response="utter_invalid_order_number")
        return {"order_number": number}


class ActionOrderStatus(Action):
    def name(self) -> str:
        return "action_order_status"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        number = normalize_order_number(tracker.get_slot("order_number"))
        if number is None:
            dispatcher.utter_message(response="utter_ask_order_number")
            return []
        order = await asyncio.to_thread(find_order, number)  # off the event loop
        if order is None:
            dispatcher.utter_message(response="utter_order_not_found", order_number=number)
        else:
            dispatcher.utter_message(
                response=f"utter_order_{order.status}", **order.placeholders()
            )
        # Forget the number so the next "where is my order?" asks again.
        return [SlotSet("order_number", None)]
