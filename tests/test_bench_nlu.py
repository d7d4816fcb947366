"""`make bench-nlu` on any dataset in CLINC150's format, including one without
out-of-scope training examples."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import nlu

TRAIN = {
    "shipping": ["how long does delivery take", "when does my parcel arrive",
                 "shipping time to spain", "how many days for shipping",
                 "delivery time please", "when will it get here"],
    "returns": ["can i return this", "how do returns work", "i want to send it back",
                "return policy please", "refund for a return", "how to return an item"],
    "payment": ["do you take paypal", "which cards do you accept", "can i pay by card",
                "pay with apple pay", "payment options", "is klarna available"],
}


@pytest.fixture(autouse=True)
def own_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The benchmark sets these for its own process; put them back for later tests
    (a LOG_LEVEL left at WARNING silences every Rasa server they start)."""
    for name in ("LOG_LEVEL", "RASA_MAX_CACHE_SIZE", "PARLEY_EMBEDDING_CACHE"):
        monkeypatch.setenv(name, "")  # recorded, so restored (or removed) afterwards
        monkeypatch.delenv(name)
    loggers = [logging.getLogger(), logging.getLogger("rasa")]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def dataset(tmp_path: Path, **overrides: object) -> Path:
    data: dict[str, object] = {
        "train": [[t, i] for i, texts in TRAIN.items() for t in texts],
        "val": [["what is the delivery time", "shipping"], ["send back my shoes", "returns"],
                ["do you accept visa", "payment"]],
        "test": [["how long is shipping to france", "shipping"],
                 ["can i send this back", "returns"], ["can i use mastercard", "payment"]],
        "oos_train": [],
        "oos_val": [["what's the weather", "oos"]],
        "oos_test": [["who won the football", "oos"], ["tell me a joke", "oos"]],
    }
    data.update(overrides)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(data))
    return path


def test_a_dataset_without_oos_training_examples(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    drawn = tmp_path / "chart.png"
    assert nlu.main([str(dataset(tmp_path)), "--baseline", "0", "--demo", "0",
                     "--chart", str(drawn)]) == 0
    assert drawn.read_bytes().startswith(b"\x89PNG")
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["rasa_default"] is None
    shipped = result["shipped"]
    assert set(shipped) == {"in_scope_accuracy", "oos_recall", "oos_precision", "oos_f1",
                            "train_seconds", "parse_p95_ms"}
    assert all(0 <= shipped[k] <= 1 for k in ("in_scope_accuracy", "oos_recall",
                                               "oos_precision", "oos_f1"))
    assert shipped["in_scope_accuracy"] >= 2 / 3  # three clear paraphrases
    assert shipped["train_seconds"] > 0 and shipped["parse_p95_ms"] > 0
    assert "[shipped] training" in err and "[shipped test] parsed 5/5" in err  # progress


def test_scores_count_a_fallback_as_wrong_in_scope() -> None:
    truth = ["a", "b", "out_of_scope", "out_of_scope"]
    s = nlu.scores(["a", nlu.FALLBACK, nlu.FALLBACK, "b"], truth)
    assert s == {"in_scope_accuracy": 0.5, "oos_recall": 0.5, "oos_precision": 0.5,
                 "oos_f1": 0.5}


def test_no_out_of_scope_examples_give_no_out_of_scope_figures() -> None:
    s = nlu.scores(["a", "b"], ["a", "a"])
    assert s == {"in_scope_accuracy": 0.5, "oos_recall": None, "oos_precision": None,
                 "oos_f1": None}


def test_training_text_reaches_rasa_as_written() -> None:
    written = nlu.nlu_yaml([("até logo 👋", "goodbye"), ('say "hi"\\ now', "greet")])
    assert "até logo 👋" in written and 'say "hi"\\ now' in written


@pytest.mark.parametrize("broken, message", [
    ({"train": None}, "has no train split"),
    ({"val": [["only text"]]}, r"is not \[text, intent\]"),
])
def test_a_malformed_dataset_is_a_clear_error(tmp_path: Path, broken: dict[str, object],
                                              message: str) -> None:
    path = dataset(tmp_path)
    data = json.loads(path.read_text())
    for key, value in broken.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    with pytest.raises(SystemExit, match=message):
        nlu.main([str(path), "--baseline", "0", "--demo", "0", "--chart", ""])


def test_thresholds_keep_the_most_in_scope_accuracy_that_finds_enough_out_of_scope() -> None:
    def parsed(intent: str, confidence: float) -> nlu.Parsed:
        return nlu.Parsed(intent, confidence, 0.0, 1.0)

    # In scope at 0.3 and 0.6 (the first one wrong anyway, the second right);
    # out of scope at 0.2, 0.4 and 0.5.
    val = [parsed("b", 0.3), parsed("a", 0.6), parsed("a", 0.2), parsed("a", 0.4),
           parsed("a", 0.5)]
    truth = ["a", "a", "out_of_scope", "out_of_scope", "out_of_scope"]
    threshold, ambiguity = nlu.tune(val, truth, recall=0.6)
    # 2 of 3 out of scope need a threshold above 0.4; above 0.6 loses the right one.
    assert 0.4 < threshold <= 0.6 and ambiguity == 0.0
    assert nlu.scores(nlu.outcome(val, threshold, ambiguity), truth)["in_scope_accuracy"] == 0.5
    low, _ = nlu.tune(val, truth, recall=0.3)
    assert 0.2 < low <= 0.4  # one of three is enough: the lowest threshold that finds it


def test_rasas_default_pipeline_runs_side_by_side_and_shows_its_epochs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nlu.main([str(dataset(tmp_path)), "--baseline", "1", "--demo", "0",
                     "--chart", ""]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result) == {"shipped", "rasa_default"}
    assert set(result["rasa_default"]) == set(result["shipped"])
    assert result["rasa_default"]["train_seconds"] > 0
    # DIET's epochs are the progress of a training that takes an hour on CLINC150.
    assert "Epochs:" in err and "100/100" in err
    assert os.environ.get("LOG_LEVEL") != "INFO"  # put back after training
