"""Parley's actions and the demo's own, against a real SQLite database and the demo's
reply library."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.orders import ActionOrderStatus, ValidateOrderForm
from parley.bot import conversations, handoff
from parley.bot.actions.fallback import ActionFallback, consecutive_fallbacks, top_topics
from parley.bot.actions.handoff import ActionHandoff, handoff_reason


def user_event(text: str, intent: str, confidence: float = 0.9) -> dict[str, Any]:
    return {"event": "user", "text": text,
            "parse_data": {"intent": {"name": intent, "confidence": confidence}}}


def tracker(
    slots: dict[str, Any] | None = None,
    text: str = "",
    intent: str = "",
    ranking: list[dict[str, Any]] | None = None,
    events: list[dict[str, Any]] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Tracker:
    latest = {"text": text, "intent": {"name": intent, "confidence": 0.9},
              "intent_ranking": ranking or [], "entities": [], "metadata": metadata or {}}
    return Tracker("webchat:test", slots or {}, latest, events or [], False, None,
                   {"name": None}, "action_listen")


def run(action: Any, t: Tracker) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    dispatcher = CollectingDispatcher()
    events = asyncio.run(action.run(dispatcher, t, {}))
    return dispatcher.messages, events


@pytest.mark.parametrize(
    ("number", "response", "placeholders"),
    [
        ("10234", "utter_order_shipped", {"carrier": "DHL"}),
        ("10451", "utter_order_processing", {}),
        ("10872", "utter_order_delivered", {"carrier": "UPS"}),
        ("10399", "utter_order_cancelled", {}),
        ("#10550", "utter_order_shipped", {"carrier": "CTT"}),
    ],
)
def test_order_status_finds_each_demo_order(
    db_url: str, number: str, response: str, placeholders: dict[str, str]
) -> None:
    messages, events = run(ActionOrderStatus(), tracker({"order_number": number}))
    assert [m["response"] for m in messages] == [response]
    assert messages[0]["order_number"] == number.lstrip("#")
    for key, value in placeholders.items():
        assert messages[0][key] == value
    assert events == [SlotSet("order_number", None)]


def test_order_status_unknown_number_says_not_found(db_url: str) -> None:
    messages, events = run(ActionOrderStatus(), tracker({"order_number": "99999"}))
    assert messages[0]["response"] == "utter_order_not_found"
    assert messages[0]["order_number"] == "99999"
    assert events == [SlotSet("order_number", None)]


def test_order_status_without_number_asks_for_it(db_url: str) -> None:
    messages, events = run(ActionOrderStatus(), tracker({"order_number": None}))
    assert [m["response"] for m in messages] == ["utter_ask_order_number"]
    assert events == []


def test_shipped_order_reply_has_a_readable_eta(db_url: str) -> None:
    messages, _ = run(ActionOrderStatus(), tracker({"order_number": "10234"}))
    eta = messages[0]["eta"]
    weekdays = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}
    assert len(eta.split()) == 3 and eta.split()[0] in weekdays


def test_form_takes_a_number_typed_while_asking() -> None:
    t = tracker({"requested_slot": "order_number"}, text="it's 1234 i think")
    result = asyncio.run(ValidateOrderForm().extract_order_number(CollectingDispatcher(), t, {}))
    assert result == {"order_number": "1234"}


def test_form_ignores_text_when_not_asking_for_a_number() -> None:
    t = tracker({"requested_slot": None}, text="order 10234")
    result = asyncio.run(ValidateOrderForm().extract_order_number(CollectingDispatcher(), t, {}))
    assert result == {}


@pytest.mark.parametrize(("value", "expected"), [("10234", "10234"), ("#10872", "10872"),
                                                 ("1234", None), ("123456", None), ("abcde", None)])
def test_form_validation_accepts_only_five_digits(value: str, expected: str | None) -> None:
    dispatcher = CollectingDispatcher()
    result = ValidateOrderForm().validate_order_number(value, dispatcher, tracker(), {})
    assert result == {"order_number": expected}
    said = [m["response"] for m in dispatcher.messages]
    assert said == ([] if expected else ["utter_invalid_order_number"])


def test_fallback_counts_only_consecutive_misses() -> None:
    events = [user_event("xx", "nlu_fallback"), user_event("hi", "greet"),
              {"event": "bot", "text": "Hi"}, user_event("yy", "nlu_fallback"),
              {"event": "action", "name": "action_fallback"}, user_event("zz", "nlu_fallback")]
    assert consecutive_fallbacks(events) == 2
    assert consecutive_fallbacks(events[:4]) == 1
    assert consecutive_fallbacks(events[:2]) == 0


def test_top_topics_skip_fallback_and_small_talk() -> None:
    ranking = [{"name": "nlu_fallback", "confidence": 0.6}, {"name": "greet", "confidence": 0.3},
               {"name": "return_policy", "confidence": 0.2},
               {"name": "shipping_times", "confidence": 0.25},
               {"name": "payment_methods", "confidence": 0.1}]
    offered = {"shipping_times", "return_policy", "payment_methods"}
    assert top_topics(ranking, offered) == ["shipping_times", "return_policy"]
    assert top_topics(ranking, offered, n=1) == ["shipping_times"]


@pytest.mark.parametrize(("language", "titles"), [
    ("en", ["My refund", "Returns"]), ("pt-BR", ["O meu reembolso", "Devoluções"])])
def test_first_fallback_asks_to_rephrase_with_two_topic_buttons(
        db_url: str, language: str, titles: list[str]) -> None:
    ranking = [{"name": "nlu_fallback", "confidence": 0.6},
               {"name": "greet", "confidence": 0.45},  # no utter_topic_greet: never offered
               {"name": "refund_status", "confidence": 0.4},
               {"name": "return_policy", "confidence": 0.3}]
    t = tracker(text="mony bak?", intent="nlu_fallback", ranking=ranking,
                events=[user_event("mony bak?", "nlu_fallback")],
                metadata={"language": language})
    messages, events = run(ActionFallback(), t)
    assert messages[0]["response"] == "utter_ask_rephrase"
    # Titles are the demo's `utter_topic_<intent>` replies, in the customer's language.
    assert messages[0]["buttons"] == [
        {"title": titles[0], "payload": "/refund_status"},
        {"title": titles[1], "payload": "/return_policy"},
    ]
    assert events == []


def test_second_consecutive_fallback_hands_off(db_url: str, always_open: None) -> None:
    history = [user_event("asdf", "nlu_fallback"), user_event("qwer", "nlu_fallback")]
    messages, events = run(ActionFallback(), tracker(intent="nlu_fallback", events=history))
    assert [m["response"] for m in messages] == ["utter_fallback_handoff",
                                                 "utter_handoff_queued"]
    assert messages[1]["queue_position"] == 1
    assert events == [SlotSet("handoff_reason", "low_confidence")]
    ticket = handoff.list_tickets(database_url=db_url)[0]
    assert ticket.reason == "low_confidence"
    assert [i["text"] for i in ticket.context["intents"]] == ["asdf", "qwer"]


@pytest.mark.parametrize(("text", "intent", "reason"), [
    ("AGENT", "human_handoff", "keyword"),
    ("i want an Agent now", "human_handoff", "keyword"),
    ("talk to a person", "human_handoff", "intent"),
    ("yes please", "affirm", "complaint"),
    ("reagent", "human_handoff", "intent"),
])
def test_handoff_records_why(text: str, intent: str, reason: str, db_url: str,
                             always_open: None) -> None:
    assert handoff_reason(text, intent) == reason
    messages, events = run(ActionHandoff(), tracker(text=text, intent=intent))
    assert [m["response"] for m in messages] == ["utter_handoff_queued"]
    assert events == [SlotSet("handoff_reason", reason)]
    assert [t.reason for t in handoff.list_tickets(database_url=db_url)] == [reason]


def test_handoff_queues_with_position_wait_and_context(db_url: str, always_open: None) -> None:
    handoff.escalate("webchat:someone-else", "keyword", database_url=db_url)
    history = [user_event("my parcel is broken", "complaint", 0.91),
               user_event("AGENT", "human_handoff", 1.0)]
    t = Tracker("webchat:me", {"order_number": "10234", "requested_slot": None},
                {"text": "AGENT", "intent": {"name": "human_handoff"},
                 "metadata": {"display_name": "Maria"}},
                history, False, None, {"name": None}, "action_listen")
    messages, _ = run(ActionHandoff(), t)
    assert messages[0]["queue_position"] == 2
    assert messages[0]["eta"].startswith("about")
    ticket = next(x for x in handoff.list_tickets(database_url=db_url)
                  if x.conversation_id == "webchat:me")
    assert ticket.context["slots"] == {"order_number": "10234"}
    assert ticket.context["intents"][0] == {"text": "my parcel is broken",
                                            "intent": "complaint", "confidence": 0.91}
    assert ticket.context["channel"] == "webchat"
    assert ticket.priority == handoff.PRIORITY_NORMAL
    assert conversations.display_names(["webchat:me"], db_url) == {"webchat:me": "Maria"}


def test_after_hours_handoff_says_when_and_where_else(db_url: str, never_open: None) -> None:
    messages, _ = run(ActionHandoff(), tracker(text="AGENT", intent="human_handoff"))
    assert messages[0]["response"] == "utter_handoff_after_hours"
    assert messages[0]["support_email"] and messages[0]["support_phone"]
    assert messages[0]["next_open"] == "as soon as possible"


@pytest.mark.parametrize(("complaints", "expected"), [
    (["the box was damaged"], handoff.PRIORITY_NORMAL),
    (["the box was damaged", "and the shoes are wrong"], handoff.PRIORITY_HIGH),
    (["THIS IS THE WORST SHOP EVER"], handoff.PRIORITY_HIGH),
    (["still nothing 😡"], handoff.PRIORITY_HIGH),
])
def test_angry_or_repeated_complaints_raise_priority(complaints: list[str], expected: int,
                                                     db_url: str, always_open: None) -> None:
    history = [user_event(text, "complaint") for text in complaints]
    history.append(user_event("yes please", "affirm"))
    t = tracker(text="yes please", intent="affirm", events=history)
    run(ActionHandoff(), t)
    assert handoff.list_tickets(database_url=db_url)[0].priority == expected
