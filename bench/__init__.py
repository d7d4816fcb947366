"""Benchmarks; results in docs/benchmarks.md. Run from the repository root (the demo project)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
