"""The Rasa project files: config, domain, training data and test stories agree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from actions.store import STATUSES
from parley.bot import contract
from tests import REPO_ROOT as PROJECT_ROOT

DATA = PROJECT_ROOT / "data"
# The training examples per language; Rasa trains on both (it reads every file in data/).
NLU_FILES = {"en": DATA / "nlu.yml", "pt": DATA / "nlu_pt.yml"}
# Never trained on (Rasa does not read tests/): they measure accuracy per language.
HELD_OUT = {lang: PROJECT_ROOT / "tests" / "nlu" / f"heldout_{lang}.yml" for lang in NLU_FILES}
# English conversation tests with a Portuguese twin (`<name>_pt.yml`, stories `<name> (pt)`).
MIRRORED = ("test_faq", "test_flows")
ANNOTATION = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def normalized(text: str) -> str:
    """An example as a customer would type it: entity annotations stripped, any case."""
    return ANNOTATION.sub(r"\1", text).strip().lower()


def nlu_examples(data: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in data.get("nlu") or []:
        if "intent" in item:
            out.setdefault(item["intent"], []).extend(
                line[2:] for line in item["examples"].splitlines() if line.startswith("- "))
    return out


def story_turns(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(intent, text) of every user turn written out in stories or rules."""
    return [(step["intent"], step["user"].strip())
            for story in (data.get("stories") or []) + (data.get("rules") or [])
            for step in story["steps"] if "user" in step]


def training_texts() -> set[str]:
    """Every user text Rasa may train on: the NLU examples and the stories' written-out
    turns in any file under data/ (Rasa also reads the test stories in data/tests/)."""
    texts: set[str] = set()
    for path in sorted(DATA.rglob("*.yml")):
        data = load(path)
        texts |= {normalized(line) for lines in nlu_examples(data).values() for line in lines}
        texts |= {normalized(text) for _intent, text in story_turns(data)}
    return texts


@pytest.fixture(scope="module")
def domain() -> dict[str, Any]:
    return load(PROJECT_ROOT / "domain.yml")


@pytest.fixture(scope="module")
def responses() -> dict[str, Any]:
    return load(DATA / "responses.yml")["responses"]


@pytest.fixture(scope="module")
def examples_by_language() -> dict[str, dict[str, list[str]]]:
    return {lang: nlu_examples(load(path)) for lang, path in NLU_FILES.items()}


@pytest.fixture(scope="module")
def test_stories() -> list[dict[str, Any]]:
    stories: list[dict[str, Any]] = []
    for path in sorted((DATA / "tests").glob("*.yml")):  # English and *_pt.yml
        stories += load(path).get("stories", [])
    return stories


@pytest.fixture(scope="module")
def test_stories_pt() -> list[dict[str, Any]]:
    stories: list[dict[str, Any]] = []
    for path in sorted((DATA / "tests").glob("*_pt.yml")):
        stories += load(path).get("stories", [])
    return stories


@pytest.mark.parametrize("language", sorted(NLU_FILES))
def test_at_least_15_intents_with_20_examples_each(domain, examples_by_language,
                                                    language) -> None:
    examples = examples_by_language[language]
    assert len(domain["intents"]) >= 15
    assert set(examples) == set(domain["intents"])
    thin = {intent: len(ex) for intent, ex in examples.items() if len(ex) < 20}
    assert not thin, f"{language}: intents with fewer than 20 examples: {thin}"


def test_portuguese_has_as_many_examples_as_english(examples_by_language) -> None:
    english, portuguese = examples_by_language["en"], examples_by_language["pt"]
    short = {intent: (len(portuguese.get(intent, [])), len(lines))
             for intent, lines in english.items()
             if len(portuguese.get(intent, [])) < len(lines)}
    assert not short, f"intents with fewer Portuguese than English examples (pt, en): {short}"


def test_examples_are_not_duplicated_across_intents(examples_by_language) -> None:
    seen: dict[str, str] = {}
    clashes = []
    for examples in examples_by_language.values():
        for intent, lines in examples.items():
            for line in lines:
                key = normalized(line)
                if key in seen and seen[key] != intent:
                    clashes.append((key, seen[key], intent))
                seen[key] = intent
    assert not clashes
    english = {normalized(line) for lines in examples_by_language["en"].values()
               for line in lines}
    copied = sorted(normalized(line) for lines in examples_by_language["pt"].values()
                    for line in lines if normalized(line) in english)
    assert not copied, f"Portuguese examples that repeat an English one: {copied}"


@pytest.mark.parametrize("language", sorted(HELD_OUT))
def test_held_out_examples_cover_every_intent_and_stay_out_of_training(domain,
                                                                        language) -> None:
    held_out = nlu_examples(load(HELD_OUT[language]))
    assert set(held_out) == set(domain["intents"])
    thin = {intent: len(lines) for intent, lines in held_out.items() if len(lines) < 8}
    assert not thin, f"{language}: held-out intents with fewer than 8 examples: {thin}"
    trained = training_texts()
    leaked = sorted(line for lines in held_out.values() for line in lines
                    if normalized(line) in trained)
    assert not leaked, f"{language}: held-out examples found in data/: {leaked}"


def test_test_stories_cover_every_intent(domain, test_stories) -> None:
    assert len(test_stories) >= 30
    used = {step["intent"] for story in test_stories for step in story["steps"] if "intent" in step}
    missing = set(domain["intents"]) - used
    assert not missing, f"intents without a test story: {sorted(missing)}"
    assert "nlu_fallback" in used


def test_portuguese_test_stories_cover_every_intent(domain, test_stories_pt) -> None:
    used = {step["intent"] for story in test_stories_pt for step in story["steps"]
            if "intent" in step}
    missing = set(domain["intents"]) - used
    assert not missing, f"intents without a Portuguese test story: {sorted(missing)}"
    assert "nlu_fallback" in used


def test_test_story_names_are_unique(test_stories) -> None:
    names = [story["story"] for story in test_stories]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def _skeleton(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A story's steps with the customer's words left out, but their entities kept."""
    return [{**{k: v for k, v in step.items() if k != "user"},
             "entities": ANNOTATION.findall(step.get("user", ""))} for step in steps]


@pytest.mark.parametrize("name", MIRRORED)
def test_portuguese_test_stories_mirror_the_english_ones(examples_by_language, name) -> None:
    english = load(DATA / "tests" / f"{name}.yml")["stories"]
    portuguese = load(DATA / "tests" / f"{name}_pt.yml")["stories"]
    assert [f"{s['story']} (pt)" for s in english] == [s["story"] for s in portuguese]
    for en, pt in zip(english, portuguese, strict=True):
        assert _skeleton(en["steps"]) == _skeleton(pt["steps"]), pt["story"]
    trained = {normalized(line) for lines in examples_by_language["pt"].values()
               for line in lines}
    english_turns = {normalized(text) for story in english
                     for step in story["steps"] if (text := step.get("user"))}
    copied = [text for story in portuguese for step in story["steps"]
              if (text := step.get("user")) and normalized(text) in trained | english_turns
              and not text.strip().startswith("/")]  # a button's payload is the same
    assert not copied, f"Portuguese test turns copied from training or English: {copied}"


def test_test_stories_cover_both_order_paths(test_stories) -> None:
    numbers = set()
    for story in test_stories:
        for step in story["steps"]:
            for slot in step.get("slot_was_set", []):
                if isinstance(slot, dict) and slot.get("order_number"):
                    numbers.add(slot["order_number"])
    assert {"10234", "99999"} <= numbers  # a known and an unknown order


def test_fallback_classifier_is_configured() -> None:
    config = load(PROJECT_ROOT / "config.yml")
    fallback = [c for c in config["pipeline"] if c["name"] == "FallbackClassifier"]
    assert len(fallback) == 1
    # SentenceIntentClassifier's confidences are probability x familiarity: lower
    # than a plain softmax's (docs/benchmarks.md), so is its threshold.
    assert 0.05 <= fallback[0]["threshold"] <= 0.5
    names = [c["name"] for c in config["pipeline"]]
    # The fallback must see the classifier's final confidences, and the AGENT
    # keyword must come after it so no confidence can out-vote it.
    assert names.index("FallbackClassifier") > names.index(contract.SENTENCE_CLASSIFIER)
    assert names[-1] == "parley.bot.nlu.keywords.KeywordIntentOverride"
    keywords = config["pipeline"][-1]["keywords"]
    assert keywords == {"agent": "human_handoff"}


def test_every_response_an_action_sends_exists(responses) -> None:
    sent_by_code = {"utter_order_not_found", "utter_ask_order_number",
                    "utter_invalid_order_number", *contract.REPLY_NAMES}
    sent_by_code |= {f"utter_order_{status}" for status in STATUSES}
    assert sent_by_code <= set(responses)


def test_rules_and_stories_only_use_defined_responses(responses) -> None:
    used = set()
    for name in ("rules.yml", "stories.yml"):
        for item in load(DATA / name).get("rules", []) + load(DATA / name).get("stories", []):
            used |= {s["action"] for s in item["steps"] if s.get("action", "").startswith("utter_")}
    assert used <= set(responses), used - set(responses)


def test_topic_buttons_name_real_intents(domain, responses) -> None:
    topics = {name.removeprefix(contract.TOPIC_PREFIX): variants
              for name, variants in responses.items() if name.startswith(contract.TOPIC_PREFIX)}
    assert len(topics) >= 5
    assert set(topics) <= set(domain["intents"])
    for variants in topics.values():  # WhatsApp's button title limit, in every language
        assert all(len(v["text"]) <= 20 for v in variants)


def test_replies_are_short_and_greeting_and_fallback_mention_agent(responses) -> None:
    for name, variants in responses.items():
        for variant in variants:
            assert len(variant["text"]) <= 320, f"{name} is too long for a DM"
    for name in ("utter_greet", "utter_ask_rephrase"):
        assert all("AGENT" in v["text"] for v in responses[name]), name


def test_every_response_has_english_and_portuguese(responses) -> None:
    def languages(variants: list[dict[str, Any]]) -> set[str | None]:
        return {(v.get("metadata") or {}).get("language") for v in variants}

    missing = {name: sorted({None, "pt"} - languages(variants), key=str)
               for name, variants in responses.items()
               if not {None, "pt"} <= languages(variants)}
    assert not missing, f"replies without an English (None) or Portuguese variant: {missing}"


def test_contact_reply_offers_every_other_channel(responses) -> None:
    text = responses["utter_contact_options"][0]["text"].lower()
    for channel in ("email", "phone", "web chat"):
        assert channel in text


def test_domain_has_no_reply_text(domain) -> None:
    """Reply text lives only in data/responses.yml (one place for writers)."""
    assert "responses" not in domain
