"""The AGENT keyword override, on Rasa's own Message objects."""

from __future__ import annotations

import pytest
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from parley.bot.nlu.keywords import KeywordIntentOverride


def parsed(text: str, intent: str, confidence: float) -> Message:
    message = Message(data={TEXT: text})
    message.set(INTENT, {"name": intent, "confidence": confidence})
    message.set(INTENT_RANKING_KEY, [{"name": intent, "confidence": confidence},
                                     {"name": "greet", "confidence": 0.01}])
    return message


@pytest.mark.parametrize("text", ["AGENT", "agent", "Agent!", "i want an AgEnT now",
                                  "agent, please", "(agent)"])
def test_agent_as_a_word_overrides_any_prediction(text: str) -> None:
    component = KeywordIntentOverride(KeywordIntentOverride.get_default_config())
    [message] = component.process([parsed(text, "nlu_fallback", 0.6)])
    assert message.get(INTENT) == {"name": "human_handoff", "confidence": 1.0}
    ranking = message.get(INTENT_RANKING_KEY)
    assert ranking[0]["name"] == "human_handoff"
    assert [r["name"] for r in ranking].count("human_handoff") == 1


@pytest.mark.parametrize("text", ["reagent", "agents are rude", "agentic", "management"])
def test_other_words_are_left_to_the_model(text: str) -> None:
    component = KeywordIntentOverride(KeywordIntentOverride.get_default_config())
    [message] = component.process([parsed(text, "complaint", 0.9)])
    assert message.get(INTENT) == {"name": "complaint", "confidence": 0.9}


def test_keywords_are_configurable() -> None:
    component = KeywordIntentOverride({"keywords": {"human": "human_handoff"}})
    [message] = component.process([parsed("HUMAN pls", "greet", 0.9)])
    assert message.get(INTENT)["name"] == "human_handoff"
