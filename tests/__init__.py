"""Parley's tests. The repository root is the reference project (the Northwind demo)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
