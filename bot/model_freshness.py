"""Decide whether the Rasa model must be retrained, without starting Rasa.

`rasa train` has its own fingerprinting, but it imports TensorFlow and reads the
whole project to find out (tens of seconds). A content hash of the inputs answers
in milliseconds, so `make run` and `make test` only train when something changed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from parley.bot.settings import load_settings

MODEL_NAME = "parley"
FINGERPRINT_FILE = ".fingerprint.json"
# Files outside data/ that shape the model. Test stories do not.
TRAINING_INPUTS = ("config.yml", "domain.yml")


def training_files(root: Path) -> list[Path]:
    files = [root / name for name in TRAINING_INPUTS if (root / name).exists()]
    data = root / "data"
    if data.is_dir():
        files += [
            p for p in data.rglob("*")
            if p.is_file() and p.suffix in {".yml", ".yaml"}
            and "tests" not in p.relative_to(data).parts
        ]
    return sorted(files)


def fingerprint(root: Path) -> str:
    digest = hashlib.sha256()
    # Reply text never needs a retrain (the live library serves it); only the set
    # of reply names shapes the model, as actions in the domain.
    replies = load_settings(root=root).replies_file
    for path in training_files(root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(_content(path, path.resolve() == replies)).digest())
    return digest.hexdigest()


def _content(path: Path, is_replies: bool) -> bytes:
    if not is_replies:
        return path.read_bytes()
    replies = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("responses") or {}
    return json.dumps(sorted(replies)).encode()


def model_path(root: Path) -> Path:
    return root / "models" / f"{MODEL_NAME}.tar.gz"


def is_stale(root: Path) -> bool:
    """True when there is no model or its inputs changed since it was trained."""
    stamp = root / "models" / FINGERPRINT_FILE
    if not model_path(root).exists() or not stamp.exists():
        return True
    try:
        recorded = json.loads(stamp.read_text())["fingerprint"]
    except (ValueError, KeyError, TypeError):
        return True
    return recorded != fingerprint(root)


def record_training(root: Path) -> None:
    """Remember which inputs produced the current model."""
    if not model_path(root).exists():
        raise FileNotFoundError(f"no model at {model_path(root)}: did training fail?")
    stamp = root / "models" / FINGERPRINT_FILE
    stamp.write_text(json.dumps({"fingerprint": fingerprint(root)}) + "\n")
