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


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


@pytest.fixture(scope="module")
def domain() -> dict[str, Any]:
    return load(PROJECT_ROOT / "domain.yml")


@pytest.fixture(scope="module")
def responses() -> dict[str, Any]:
    return load(DATA / "responses.yml")["responses"]


@pytest.fixture(scope="module")
def examples() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in load(DATA / "nlu.yml")["nlu"]:
        if "intent" in item:
            out[item["intent"]] = [
                line[2:] for line in item["examples"].splitlines() if line.startswith("- ")
            ]
    return out


@pytest.fixture(scope="module")
def test_stories() -> list[dict[str, Any]]:
    stories: list[dict[str, Any]] = []
    for path in sorted((DATA / "tests").glob("*.yml")):
        stories += load(path).get("stories", [])
    return stories


def test_at_least_15_intents_with_20_examples_each(domain, examples) -> None:
    assert len(domain["intents"]) >= 15
    assert set(examples) == set(domain["intents"])
    thin = {intent: len(ex) for intent, ex in examples.items() if len(ex) < 20}
    assert not thin, f"intents with fewer than 20 examples: {thin}"


def test_examples_are_not_duplicated_across_intents(examples) -> None:
    seen: dict[str, str] = {}
    clashes = []
    for intent, lines in examples.items():
        for line in lines:
            key = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line).strip().lower()
            if key in seen and seen[key] != intent:
                clashes.append((key, seen[key], intent))
            seen[key] = intent
    assert not clashes


def test_test_stories_cover_every_intent(domain, test_stories) -> None:
    assert len(test_stories) >= 30
    used = {step["intent"] for story in test_stories for step in story["steps"] if "intent" in step}
    missing = set(domain["intents"]) - used
    assert not missing, f"intents without a test story: {sorted(missing)}"
    assert "nlu_fallback" in used


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
    assert 0.3 <= fallback[0]["threshold"] <= 0.9
    names = [c["name"] for c in config["pipeline"]]
    # The fallback must see the classifier's final confidences, and the AGENT
    # keyword must come after it so no confidence can out-vote it.
    assert names.index("FallbackClassifier") > names.index("DIETClassifier")
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


def test_contact_reply_offers_every_other_channel(responses) -> None:
    text = responses["utter_contact_options"][0]["text"].lower()
    for channel in ("email", "phone", "web chat"):
        assert channel in text


def test_domain_has_no_reply_text(domain) -> None:
    """Reply text lives only in data/responses.yml (one place for writers)."""
    assert "responses" not in domain
