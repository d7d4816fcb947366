"""Parley's intent classifier as Rasa runs it: trained, stored, loaded, parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from parley.bot.nlu import encoder
from parley.bot.nlu.classifier import SentenceIntentClassifier

EXAMPLES = {
    "shipping_times": ["how long does delivery take", "when will my parcel arrive",
                       "shipping time to portugal?", "quanto tempo demora a entrega",
                       "qnd chega a encomenda", "prazo de envio pro brasil"],
    "return_policy": ["can i return this", "how do returns work", "return policy pls",
                      "posso devolver o produto", "como faço uma devolucao",
                      "qual a politica de devolucoes"],
    "payment_methods": ["do you take paypal", "which cards do you accept",
                        "can i pay with apple pay", "aceitam mbway?",
                        "posso pagar com cartao de credito", "vcs aceitam pix"],
    "out_of_scope": ["what's the weather tomorrow", "tell me a joke", "who won the game",
                     "qual a capital da franca", "me conta uma piada", "receita de bolo"],
}


def classifier(tmp_path: Path, **config: object) -> tuple[SentenceIntentClassifier,
                                                           LocalModelStorage, Resource]:
    (tmp_path / "model").mkdir(parents=True, exist_ok=True)
    storage = LocalModelStorage(tmp_path / "model")
    resource = Resource("intent_classifier")
    context = ExecutionContext(GraphSchema({}), "test")
    return (SentenceIntentClassifier.create({**SentenceIntentClassifier.get_default_config(),
                                             **config}, storage, resource, context),
            storage, resource)


def training_data() -> TrainingData:
    return TrainingData([Message(data={TEXT: text, INTENT: intent})
                         for intent, texts in EXAMPLES.items() for text in texts])


def parse(component: SentenceIntentClassifier, *texts: str) -> list[Message]:
    return component.process([Message(data={TEXT: t}) for t in texts])


@pytest.fixture
def trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SentenceIntentClassifier:
    monkeypatch.setenv("PARLEY_EMBEDDING_CACHE", str(tmp_path / "cache"))
    component, storage, resource = classifier(tmp_path)
    component.train(training_data())
    context = ExecutionContext(GraphSchema({}), "test")
    return SentenceIntentClassifier.load(component.config, storage, resource, context)


def test_new_phrasings_in_both_languages_find_their_intent(trained) -> None:
    parsed = parse(trained, "how many days until my order gets here",
                   "quero devolver uma camisola", "vcs aceitam cartao visa?",
                   "i want to send back the shoes", "who is the president of france")
    assert [m.get(INTENT)["name"] for m in parsed] == [
        "shipping_times", "return_policy", "payment_methods", "return_policy", "out_of_scope"]
    for message in parsed:
        ranking = message.get(INTENT_RANKING_KEY)
        assert ranking[0] == message.get(INTENT)
        confidences = [r["confidence"] for r in ranking]
        assert confidences == sorted(confidences, reverse=True)
        # Every intent is in the ranking here: they add up to the familiarity.
        assert 0.0 < sum(confidences) <= 1.0 + 1e-6


def test_confidence_is_the_probability_times_familiarity(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A bot without out-of-scope examples: an unfamiliar message still wins some
    intent's softmax, and familiarity is what brings its confidence down."""
    monkeypatch.setenv("PARLEY_EMBEDDING_CACHE", str(tmp_path / "cache"))
    in_scope = TrainingData([m for m in training_data().intent_examples
                             if m.get(INTENT) != "out_of_scope"])
    familiar, _, _ = classifier(tmp_path / "familiar")
    plain, _, _ = classifier(tmp_path / "plain", neighbours=0)  # the softmax alone
    familiar.train(in_scope)
    plain.train(in_scope)
    texts = ("how long does shipping take to portugal", "recommend a good pizza topping")
    known, unknown = parse(familiar, *texts)
    total = [sum(r["confidence"] for r in m.get(INTENT_RANKING_KEY)) for m in (known, unknown)]
    assert total[0] > 0.3 and total[1] < total[0] / 2  # unlike every in-scope example
    softmax = parse(plain, *texts)
    for m in softmax:
        assert abs(sum(r["confidence"] for r in m.get(INTENT_RANKING_KEY)) - 1.0) < 1e-3
    assert [m.get(INTENT)["name"] for m in softmax] == [m.get(INTENT)["name"]
                                                         for m in (known, unknown)]
    assert softmax[1].get(INTENT)["confidence"] > 2 * unknown.get(INTENT)["confidence"]


def test_an_out_of_scope_answer_keeps_its_probability(trained, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """It is the bot saying it does not know (the out-of-scope reply), not a reason
    to ask the customer to rephrase and then hand off."""
    monkeypatch.setenv("PARLEY_EMBEDDING_CACHE", str(tmp_path / "cache"))
    plain, _, _ = classifier(tmp_path / "plain", neighbours=0)
    plain.train(training_data())
    [off_topic] = parse(trained, "who is the president of france")
    [plain_off_topic] = parse(plain, "who is the president of france")
    assert off_topic.get(INTENT)["name"] == "out_of_scope"
    assert off_topic.get(INTENT)["confidence"] == pytest.approx(
        plain_off_topic.get(INTENT)["confidence"], abs=1e-5)
    ranking, plain_ranking = (m.get(INTENT_RANKING_KEY) for m in (off_topic, plain_off_topic))
    assert ranking[1]["name"] == plain_ranking[1]["name"]  # the rest is scaled down
    assert ranking[1]["confidence"] < plain_ranking[1]["confidence"] / 2


def test_out_of_scope_examples_are_not_what_the_bot_knows(trained) -> None:
    examples = trained.model.examples
    in_scope = sum(len(v) for k, v in EXAMPLES.items() if k != "out_of_scope")
    assert examples.shape == (in_scope, encoder.DIM)  # kept through save and load
    oos = encoder.embed(EXAMPLES["out_of_scope"])
    assert float((examples @ oos.T).max()) < 0.999  # none of them is among the examples


def test_a_clear_message_is_more_confident_than_a_vague_one(trained) -> None:
    clear, vague = parse(trained, "what is your return policy", "tell me about that thing")
    assert clear.get(INTENT)["name"] == "return_policy"
    # Vague: either the bot's "I don't know", or an intent it is far less sure of.
    assert vague.get(INTENT)["name"] == "out_of_scope" \
        or clear.get(INTENT)["confidence"] > vague.get(INTENT)["confidence"] + 0.2


def test_empty_texts_and_an_untrained_model_are_left_alone(tmp_path: Path) -> None:
    untrained, _, _ = classifier(tmp_path)
    [message] = parse(untrained, "hello")
    assert message.get(INTENT) is None
    empty = Message(data={TEXT: ""})
    assert untrained.process([empty]) == [empty] and empty.get(INTENT) is None


def test_a_retrain_embeds_only_new_examples(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    first = encoder.EmbeddingCache("original", cache_dir)
    vectors = first.embed_all(["where is my order", "onde esta o meu pedido"])
    first.save()
    assert first.added == 2 and vectors.shape == (2, encoder.DIM)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    again = encoder.EmbeddingCache("original", cache_dir)
    more = again.embed_all(["where is my order", "thanks a lot"])
    assert again.added == 1  # only the new sentence went to the encoder
    assert np.allclose(more[0], vectors[0])
    [stored] = cache_dir.glob("original-*.npz")  # keyed by the encoder's version too
    stored.write_bytes(b"torn")  # a crash mid-write: start again
    assert encoder.EmbeddingCache("original", cache_dir).vectors == {}


def test_an_unknown_encoder_variant_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown encoder variant 'large'"):
        encoder.embed(["hi"], "large")


def test_a_message_is_encoded_on_one_thread_and_a_batch_on_every_core(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A customer's message must not take the cores other turns and the webhooks need;
    a training batch may."""
    import os

    engine = encoder._model("original")._lib  # OpenMP keeps its count per calling thread
    encoder.embed(["where is my order"])
    assert engine.omp_get_max_threads() == 1
    encoder.embed(["where is my order"] * encoder.BATCH)
    assert engine.omp_get_max_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(encoder.THREADS_ENV, "2")
    encoder.embed(["where is my order"])
    assert engine.omp_get_max_threads() == 2
    monkeypatch.setenv(encoder.THREADS_ENV, "many")
    encoder.embed(["where is my order"])
    assert engine.omp_get_max_threads() == 1
