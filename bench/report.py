"""Shared by the benchmarks: percentiles, a chart, and a section in docs/benchmarks.md."""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

from bench import REPO_ROOT as PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"
RESULTS = DOCS / "benchmarks.md"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values_ms: list[float]) -> dict[str, float]:
    return {"n": len(values_ms), "p50": percentile(values_ms, 50),
            "p95": percentile(values_ms, 95), "max": max(values_ms),
            "mean": statistics.fmean(values_ms)}


def _save(fig: Any, ax: Any, path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def histogram_png(series: dict[str, list[float]], path: Path, title: str,
                  target_ms: float | None = None, target_label: str = "target p95") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for label, values in series.items():
        ax.hist(values, bins=40, alpha=0.6, label=label)
    if target_ms is not None:
        ax.axvline(target_ms, color="red", linestyle="--",
                   label=f"{target_label} {target_ms:.0f} ms")
    ax.set_xlabel("milliseconds")
    ax.set_ylabel("count")
    return _save(fig, ax, path, title)


def write_section(name: str, body: str) -> None:
    """Replace (or add) the section `## name` in docs/benchmarks.md."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    text = RESULTS.read_text() if RESULTS.exists() else (
        "# Benchmarks\n\nEach section is written by the benchmark named in it; rerun the "
        "command to refresh it. Numbers come from the shared 2-core machines, so compare "
        "ratios measured in one run rather than absolute values across runs.\n")
    section = f"## {name}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else \
        text.rstrip() + "\n\n" + section
    RESULTS.write_text(text)


def grouped_bars_png(levels: list[str], series: dict[str, list[float]], path: Path,
                     title: str, ylabel: str, log: bool = False) -> Path:
    """One group of bars per level (e.g. concurrency), one bar per series (NaN: no bar);
    `log` for a logarithmic value axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [x + i * width for x in range(len(levels))]
        ax.bar(xs, values, width=width, label=label)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(levels))], levels)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    return _save(fig, ax, path, title)
