"""Keywords that override the NLU model: `AGENT` always means "give me a person".

Runs after FallbackClassifier, so no model confidence (and no fallback) can
out-vote it. A keyword counts as a whole word in any case: "agent", "AGENT!",
"Agent pls" match; "reagent" and "agents" do not.
"""

from __future__ import annotations

import re
from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message


def compile_keywords(mapping: dict[str, str]) -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE), intent)
            for word, intent in mapping.items()]


def keyword_intent(text: str, patterns: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, intent in patterns:
        if pattern.search(text):
            return intent
    return None


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False)
class KeywordIntentOverride(GraphComponent):
    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {"keywords": {"agent": "human_handoff"}}

    def __init__(self, config: dict[str, Any]) -> None:
        self._patterns = compile_keywords(config.get("keywords") or {})

    @classmethod
    def create(cls, config: dict[str, Any], model_storage: ModelStorage,
               resource: Resource, execution_context: ExecutionContext
               ) -> KeywordIntentOverride:
        return cls(config)

    def process(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            intent = keyword_intent(message.get(TEXT) or "", self._patterns)
            if intent is None:
                continue
            override = {"name": intent, "confidence": 1.0}
            message.set(INTENT, override, add_to_output=True)
            ranking = [r for r in message.get(INTENT_RANKING_KEY) or []
                       if r.get("name") != intent]
            message.set(INTENT_RANKING_KEY, [override, *ranking], add_to_output=True)
        return messages
